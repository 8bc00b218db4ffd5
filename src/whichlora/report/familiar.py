"""The familiar view beside the verdicts: which techniques a Wilcoxon signed-rank test (Holm)
finds different from the baseline, and which not, with the Friedman/Nemenyi ranking.

Read from the significance table the analysis stage wrote (analyze/significance.py), not from
the verdicts (analyze/verdicts.py, report/decision.py); a null result is said plainly, with
how much data the test had, because "no difference" from two seeds is not evidence of sameness.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from whichlora.analyze.significance import RESULT_COLUMNS
from whichlora.evaluate.metrics import display_name
from whichlora.report.inputs import ReportInputs
from whichlora.report.tables import better_up

FAMILIES = ("transfer", "retention")
FRIEDMAN, SUMMARY = "__friedman__", "__summary__"
# The analysis stage's result columns, with the family first and a direction instead of the verdict.
COMPARISON_COLUMNS = ["family"] + [c for c in RESULT_COLUMNS if c != "verdict"] + ["direction"]


def _payload(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)  # Python's json reads the NaN that json.dumps writes
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _direction(metric: str, rank_biserial: float, mean_diff: float) -> str:
    """'better' or 'worse' judged by the tested (rank) statistic, as the analysis does."""
    shift = rank_biserial if math.isfinite(rank_biserial) else mean_diff
    if not math.isfinite(shift) or shift == 0:
        return "no change"
    return "better" if (shift > 0) == better_up(metric) else "worse"


def comparisons(inputs: ReportInputs) -> pd.DataFrame:
    """One row per (family, metric, technique) test against the baseline."""
    rows = []
    for rec in inputs.significance.itertuples():
        if rec.technique in (FRIEDMAN, SUMMARY):
            continue
        p = _payload(rec.payload)
        row: dict[str, Any] = {
            "family": rec.family,
            "metric": rec.metric,
            "technique": inputs.label_of(str(p.get("technique", rec.technique))),
            "baseline": inputs.label_of(str(p.get("baseline", inputs.baseline))),
        }
        for key in COMPARISON_COLUMNS[4:-2]:
            row[key] = _number(p.get(key))
        row["significant"] = bool(p.get("significant", False))
        row["direction"] = _direction(str(rec.metric), row["rank_biserial"], row["mean_diff"])
        rows.append(row)
    family_rank = {f: i for i, f in enumerate(FAMILIES)}
    label_rank = {t: i for i, t in enumerate(inputs.labels)}
    rows.sort(  # families in reading order, techniques in study order
        key=lambda r: (
            family_rank.get(r["family"], len(family_rank)),
            str(r["family"]),
            str(r["metric"]),
            label_rank.get(r["technique"], len(label_rank)),
            r["technique"],
        )
    )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def friedman_rows(inputs: ReportInputs) -> list[dict[str, Any]]:
    """Friedman/Nemenyi payloads with family and metric, average ranks keyed by label."""
    out = []
    for rec in inputs.significance.itertuples():
        if rec.technique != FRIEDMAN:
            continue
        p = _payload(rec.payload)
        ranks = p.get("avg_ranks") or {}
        if isinstance(ranks, list):  # tolerate [[name, rank], ...]
            ranks = {str(k): v for k, v in ranks}
        ranks = {inputs.label_of(str(k)): _number(v) for k, v in dict(ranks).items()}
        out.append(
            {
                "family": rec.family,
                "metric": rec.metric,
                "avg_ranks": {k: v for k, v in ranks.items() if math.isfinite(v)},
                "cd": _number(p.get("cd")),
                "statistic": _number(p.get("statistic")),
                "p_value": _number(p.get("p_value", p.get("p"))),
                "note": str(p.get("note") or ""),
            }
        )
    return out


def _min_p(n_pairs: float) -> float:
    """Smallest two-sided p a signed-rank test can reach with n pairs."""
    return min(1.0, 2.0 / 2.0**n_pairs) if n_pairs > 0 else 1.0


def _fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _family_sentence(family: str, rows: pd.DataFrame, labels: list[str]) -> str:
    tested = [t for t in labels if t in set(rows["technique"])]
    tested += sorted(set(rows["technique"]) - set(tested))
    sig = rows[rows["significant"]]
    parts = []
    for technique in tested:
        hits = sig[sig["technique"] == technique]
        if hits.empty:
            continue
        claims = [
            f"{h.direction} on {display_name(h.metric)} "
            f"({h.mean_diff:+.3g}, 95% CI [{h.ci_low:.3g}, {h.ci_high:.3g}], "
            f"Holm {_fmt_p(h.p_holm)})"
            for h in hits.itertuples()
        ]
        parts.append(f"{technique} is significantly " + "; ".join(claims))
    same = [t for t in tested if t not in set(sig["technique"])]
    if not parts:
        return f"On {family}, no technique differs significantly from the baseline on any metric."
    text = f"On {family}, " + "; ".join(parts)
    if same:
        text += f"; {', '.join(same)} {'does' if len(same) == 1 else 'do'} not differ significantly"
    return text + "."


def summary_notes(inputs: ReportInputs) -> dict[str, str]:
    """Per family, why the analysis made no comparisons (e.g. the baseline was not evaluated)."""
    notes = {}
    for rec in inputs.significance.itertuples():
        if rec.technique == SUMMARY:
            note = str(_payload(rec.payload).get("note") or "")
            if note:
                notes[str(rec.family)] = note
    return notes


def familiar_text(inputs: ReportInputs, table: pd.DataFrame, seeds: int) -> str:
    """One paragraph: per family who differs from the baseline, and how big the test was."""
    notes = summary_notes(inputs)
    if table.empty:
        if notes:
            reasons = "; ".join(f"{family}: {note}" for family, note in notes.items())
            return f"No technique could be compared with the baseline ({reasons})."
        if len(inputs.labels) < 2:
            return (
                "Nothing to compare yet: significance needs at least two techniques with "
                f"evaluated runs ({len(inputs.labels)} so far)."
            )
        return (
            "Significance tests have not been run yet, so no technique can be called better or "
            "worse than the baseline. Run `whichlora analyze` (or `whichlora run`) to add them."
        )
    baseline = ", ".join(sorted(set(table["baseline"])))
    families = [*FAMILIES, *sorted(set(table["family"]) - set(FAMILIES))]
    present = [f for f in families if f in set(table["family"])]
    counts = ", ".join(f"{f}: {int((table['family'] == f).sum())}" for f in present)
    langs = len(inputs.targets)
    head = (
        f"Each technique was compared with {baseline} by a Wilcoxon signed-rank test over paired "
        f"(seed × language) cells — {seeds} seed{'s' if seeds != 1 else ''} × {langs} target "
        f"language{'s' if langs != 1 else ''} for transfer, {seeds} × 1 source language "
        f"({inputs.source}) for retention — Holm-corrected within each family of comparisons "
        f"({counts}) at α={inputs.alpha:g}. "
    )
    sentences = [
        f"No {f} comparisons were made ({notes[f]})."
        if f in notes
        else f"No {f} tests were recorded."
        for f in families
        if f not in present
    ]
    if table["significant"].any():
        for family in present:
            sentences.append(
                _family_sentence(family, table[table["family"] == family], inputs.labels)
            )
        return head + " ".join(sentences)
    tested = [t for t in inputs.labels if t in set(table["technique"])] or sorted(
        set(table["technique"])
    )
    sentences.insert(
        0,
        f"No technique ({', '.join(tested)}) differs significantly from {baseline} on "
        f"{' or '.join(present)}, on any metric.",
    )
    sentences.append(_power_note(table, present, inputs.alpha))
    return head + " ".join(sentences)


def _power_note(table: pd.DataFrame, families: list[str], alpha: float) -> str:
    """Whether the design could have found a difference at all: with n cells the signed-rank
    test's smallest p is 2/2^n, and Holm multiplies the smallest p by the family's test count."""
    blind = []
    for family in families:
        rows = table[table["family"] == family]
        n_pairs, tests = rows["n_pairs"].max(), int(rows["p_holm"].notna().sum())
        if not math.isfinite(n_pairs) or tests == 0:
            return f"No {family} test had paired data to compare."
        best = min(1.0, _min_p(n_pairs) * tests)
        if best > alpha:
            blind.append(
                f"{family}: at most {int(n_pairs)} cell{'' if int(n_pairs) == 1 else 's'} per test "
                f"and {tests} tests, "
                f"best possible Holm p={best:.2g}"
            )
    if len(blind) == len(families):
        return (
            f"This design cannot detect a difference at α={alpha:g} ({'; '.join(blind)}). Add "
            "seeds or languages before reading the null result as 'no difference'."
        )
    if blind:
        return (
            "Part of this design cannot detect a difference at all ("
            + "; ".join(blind)
            + "); elsewhere the observed differences are within what seeds and example "
            "sampling produce."
        )
    return (
        "The observed differences are within what seeds and example sampling produce; see the "
        "intervals below for how large a difference the data still allow."
    )
