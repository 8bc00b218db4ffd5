"""The report's first screen: per technique, the verdict against the baseline on transfer (seen,
unseen), retention and the trade-off, what it costs, and one sentence of advice that follows from
those verdicts and from nothing else.

A verdict word always travels with its estimate and interval, so a reader can check the word
against the numbers; the reason a word is not "better" despite an interval that excludes zero
(multiple comparisons, seed noise that cannot be estimated) is in the note beside it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from whichlora.evaluate.metrics import by_rank, display_name
from whichlora.report.document import Table, fmt_int
from whichlora.report.inputs import ReportInputs
from whichlora.report.tables import better_up, delta_cell, metric_format

FAMILY_ORDER = ("transfer_seen", "transfer_unseen", "retention", "tradeoff")
FAMILY_TITLES = {
    "transfer_seen": "transfer (seen)",
    "transfer_unseen": "transfer (unseen)",
    "retention": "retention",
    "tradeoff": "trade-off",
}
# Which metric speaks for a family in the decision table when the study names none: the metric
# table's `primary` ranks, the most sensitive first (response NLL is continuous; accuracy on a
# few items moves in big steps).
PRIMARY_ORDER = tuple(by_rank("primary"))
VERDICT_CLASS = {"better": "good", "worse": "bad", "equivalent": "same"}
NUMBER_COLUMNS = (
    "estimate",
    "ci_low",
    "ci_high",
    "se",
    "df",
    "margin",
    "p_difference",
    "p_difference_holm",
    "p_equivalence",
    "p_equivalence_holm",
    "mde",
    "p_bayes_better",
    "p_bayes_equivalent",
    "p_bayes_worse",
    "aso_epsilon",
)


def margin_text(metric: str, margin: float) -> str:
    """A margin in the units the tables use (accuracy in points, NLL in nats/token)."""
    if not math.isfinite(margin):
        return "–"
    scale, digits, unit, _ = metric_format(metric)
    value = f"{margin * scale:.{max(digits, 1)}g}"
    if unit == "points" and value == "1":
        unit = "point"
    return f"{value} {unit}".strip()


def verdict_frame(inputs: ReportInputs) -> pd.DataFrame:
    """The stored verdicts as one row per (family, metric, technique), labels as shown."""
    rows = []
    for rec in inputs.verdicts.itertuples():
        try:
            payload: dict[str, Any] = json.loads(rec.payload)
        except (TypeError, ValueError):
            continue
        payload["technique"] = inputs.label_of(str(payload.get("technique", rec.technique)))
        payload["baseline"] = inputs.label_of(str(payload.get("baseline", inputs.baseline)))
        payload["family"], payload["metric"] = str(rec.family), str(rec.metric)
        payload["verdict"] = str(payload.get("verdict") or rec.verdict)
        for column in NUMBER_COLUMNS:
            value = payload.get(column)
            payload[column] = float(value) if isinstance(value, int | float) else math.nan
        rows.append(payload)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    family_rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    label_rank = {t: i for i, t in enumerate(inputs.labels)}
    frame["_f"] = frame["family"].map(lambda f: family_rank.get(f, len(family_rank)))
    frame["_t"] = frame["technique"].map(lambda t: label_rank.get(t, len(label_rank)))
    frame = frame.sort_values(["_t", "_f", "metric"], kind="stable").drop(columns=["_f", "_t"])
    return frame.reset_index(drop=True)


def primary_metric(inputs: ReportInputs, frame: pd.DataFrame) -> str | None:
    """The metric the decision table shows: the study's choice if it was scored, else the first
    of PRIMARY_ORDER that was, else any."""
    if frame.empty:
        return None
    present = [m for m in dict.fromkeys(frame["metric"]) if isinstance(m, str)]
    chosen = inputs.study.analysis.primary_metric
    if chosen in present:
        return chosen
    return next((m for m in PRIMARY_ORDER if m in present), present[0] if present else None)


def _dagger(row: pd.Series) -> bool:
    """An inconclusive word beside an interval that excludes zero: the reader is owed why."""
    low, high = row["ci_low"], row["ci_high"]
    return (
        row["verdict"] == "inconclusive"
        and math.isfinite(low)
        and math.isfinite(high)
        and (low > 0 or high < 0)
    )


def _cell(row: pd.Series) -> str:
    word = str(row["verdict"]) + ("†" if _dagger(row) else "")
    if row["family"] == "tradeoff" or not math.isfinite(row["estimate"]):
        return word
    cell = delta_cell(str(row["metric"]), row["estimate"], row["ci_low"], row["ci_high"])
    return f"{word} {cell}"


def _cost(inputs: ReportInputs, label: str, base_step: float) -> str:
    costs = inputs.costs.merge(inputs.runs[["run_id", "label"]], on="run_id")
    mine = costs[costs["label"] == label]
    if mine.empty:
        return "–"
    params = fmt_int(mine["trainable_params"].mean())
    step = mine["seconds_per_step"].mean()
    if math.isfinite(base_step) and base_step > 0 and math.isfinite(step):
        return f"{params} params · {step / base_step:.2f}× time/step"
    return f"{params} params"


def _other_metrics(rows: pd.DataFrame, primary: str) -> str:
    """Conclusive verdicts on the other metrics, so the table hides nothing that was decided."""
    others = rows[(rows["metric"] != primary) & (rows["verdict"] != "inconclusive")]
    others = others[others["family"] != "tradeoff"]
    parts = [
        f"{FAMILY_TITLES.get(r.family, r.family)} {display_name(r.metric)}: {r.verdict}"
        for r in others.itertuples()
    ]
    return "; ".join(parts) or "–"


def decision_table(inputs: ReportInputs, frame: pd.DataFrame, primary: str) -> Table:
    """One row per technique: the verdict per family on the primary metric, other conclusive
    verdicts, and the cost against the baseline."""
    costs = inputs.costs.merge(inputs.runs[["run_id", "label"]], on="run_id")
    base_step = costs.loc[costs["label"] == inputs.baseline, "seconds_per_step"].mean()
    families = [f for f in FAMILY_ORDER if f in set(frame["family"])]
    display, tones, data = [], [], []
    labels = [t for t in inputs.labels if t in set(frame["technique"])]
    for label in labels:
        rows = frame[frame["technique"] == label]
        cells: dict[str, str] = {"technique": label}
        tone: dict[str, str] = {"technique": ""}
        for family in families:
            hit = rows[(rows["family"] == family) & (rows["metric"] == primary)]
            title = FAMILY_TITLES.get(family, family)
            if hit.empty:
                cells[title], tone[title] = "–", ""
                continue
            row = hit.iloc[0]
            cells[title] = _cell(row)
            tone[title] = VERDICT_CLASS.get(str(row["verdict"]), "")
            data.append(row.to_dict())
        cells["other metrics"] = _other_metrics(rows, primary)
        cells["cost"] = _cost(inputs, label, base_step)
        tone.update({"other metrics": "", "cost": ""})
        display.append(cells)
        tones.append(tone)
    shown = pd.DataFrame(display)
    daggers = any(_dagger(pd.Series(row)) for row in data)
    margin = frame.loc[frame["metric"] == primary, "margin"].dropna()
    margin_note = (
        f" Equivalent = shown to lie within ±{margin_text(primary, margin.iloc[0])} (the margin of"
        " practical equivalence) by two one-sided tests, Holm-corrected."
        if len(margin)
        else ""
    )
    caption = (
        f"Each technique against {inputs.baseline} on {display_name(primary)} ({_units(primary)}): "
        "the verdict, then the estimated difference (technique minus baseline) with its 95% "
        "interval, which counts seeds, languages and items. Better / worse = the difference is "
        "significant after Holm correction over the techniques compared in that family and "
        "metric."
        + margin_note
        + " Trade-off: better on transfer (seen) or retention and shown not worse on the other. "
        "Cost: trainable parameters and training time per step relative to the baseline."
        + (
            " † The 95% interval excludes 0, yet the difference is not significant after Holm "
            "correction over the techniques compared (each comparison's note, in the table of "
            "every comparison below, says so)."
            if daggers
            else ""
        )
    )
    return Table(
        "decision",
        caption,
        shown,
        pd.DataFrame(data),
        pd.DataFrame(tones, columns=list(shown.columns)) if len(shown) else None,
    )


def _units(metric: str) -> str:
    _, _, unit, _ = metric_format(metric)
    better = "higher" if better_up(metric) else "lower"
    return f"{unit}, {better} is better" if unit else "metric units"


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def recommendation(inputs: ReportInputs, frame: pd.DataFrame, primary: str) -> str:
    """One sentence (or two) of advice on the primary metric that follows from the verdicts."""
    base = inputs.baseline
    rows = frame[frame["metric"] == primary]
    name = display_name(primary)

    def who(family: str, verdict: str) -> list[str]:
        hit = rows[(rows["family"] == family) & (rows["verdict"] == verdict)]
        return list(dict.fromkeys(hit["technique"]))

    dominant = who("tradeoff", "better")
    parts = []
    if dominant:
        parts.append(
            f"On {name}, {_join(dominant)} {'beats' if len(dominant) == 1 else 'beat'} {base}: "
            "better on transfer or retention and shown not worse on the other"
        )
    else:
        parts.append(f"On {name}, no technique beats {base} on the transfer/retention trade-off")
    families = ("transfer_seen", "transfer_unseen", "retention")
    for verdict in ("better", "worse", "equivalent"):
        by_technique: dict[str, list[str]] = {}
        for family in families:
            for name in who(family, verdict):
                if verdict == "better" and name in dominant:
                    continue
                by_technique.setdefault(name, []).append(FAMILY_TITLES[family])
        for name, titles in by_technique.items():
            claim = f"{name} is {verdict}"
            if verdict == "equivalent":
                margin = rows.loc[rows["technique"] == name, "margin"].dropna()
                within = f" within {margin_text(primary, margin.iloc[0])}" if len(margin) else ""
                claim += f" to {base} on {_join(titles)}{within}"
            else:
                claim += f" on {_join(titles)}"
            parts.append(claim)
    open_rows = rows[(rows["verdict"] == "inconclusive") & (rows["family"] != "tradeoff")]
    text = "; ".join(parts) + "."
    if len(open_rows):
        text += f" The other {len(open_rows)} comparison{'s are' if len(open_rows) != 1 else ' is'}"
        text += " inconclusive."
    return text
