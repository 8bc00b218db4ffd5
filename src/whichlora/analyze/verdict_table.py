"""`whichlora verdict SCORES`: read and check a long score table, judge it, print and export.

SCORES is a long table (technique, seed, language, example_id, metric, value [, family]) or, with
``lm_eval=True``, a runs table mapping lm-evaluation-harness ``--log_samples`` folders to a
technique and a seed (evaluate/harness_logs.py). Families are free labels; which one plays the
transfer (seen) and the retention part of the trade-off comes from --source/--seen (families
from languages) or --role FAMILY=ROLE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from whichlora.analyze.verdicts import (
    TRADEOFF,
    VerdictOptions,
    assign_families,
    evidence_sentence,
    judge,
    parse_roles,
)
from whichlora.errors import WhichloraError

__all__ = ["parse_margins", "read_scores", "run_verdict"]

COLUMNS = ("technique", "seed", "language", "example_id", "metric", "value")
KEY = ["technique", "seed", "language", "example_id", "metric"]


def read_scores(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet score table and check its columns, values and keys."""
    if not path.is_file():
        raise WhichloraError(f"score table {path} does not exist; pass a CSV or Parquet file.")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={c: str for c in (*KEY, "family") if c != "seed"})
    except WhichloraError:
        raise
    except Exception as err:
        raise WhichloraError(f"cannot read score table {path}: {err}. Write it as CSV (with a "
                             "header row) or Parquet.") from err  # fmt: skip
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise WhichloraError(
            f"score table {path} lacks column(s) {missing}; it needs {list(COLUMNS)} "
            f"(and optionally family); found {list(frame.columns)}."
        )
    for col in COLUMNS[:-1]:
        if frame[col].isna().any():
            row = int(np.flatnonzero(frame[col].isna().to_numpy())[0])
            raise WhichloraError(f"score table {path}: column {col!r} is empty in data row "
                                 f"{row + 1}; fill it in or drop the row.")  # fmt: skip
    value = pd.to_numeric(frame["value"], errors="coerce")
    bad = value.isna() & frame["value"].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise WhichloraError(
            f"score table {path}: column 'value' is not a number in data row {row + 1} "
            f"({frame['value'].iloc[row]!r}); every value must be numeric (empty = not scored)."
        )
    frame["value"] = value
    frame["technique"] = frame["technique"].astype(str)
    dup = frame.duplicated(KEY, keep=False)
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        key = {k: frame[k].iloc[row] for k in KEY}
        raise WhichloraError(
            f"score table {path}: duplicated rows for {key} (first in data row {row + 1}); keep "
            "one value per (technique, seed, language, example_id, metric)."
        )
    if "family" in frame.columns:
        empty = frame["family"].isna() | (frame["family"].astype(str).str.strip() == "")
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise WhichloraError(
                f"score table {path}: column 'family' is empty in data row {row + 1}; give "
                "every row a family label (any text), or drop the column and pass --source/--seen."
            )
        frame["family"] = frame["family"].astype(str)
        if TRADEOFF in set(frame["family"]):
            raise WhichloraError(
                f"score table {path}: family {TRADEOFF!r} is reserved for the trade-off row; "
                "rename that family."
            )
    return frame.dropna(subset=["value"])


def parse_pairs(items: Sequence[str], option: str, example: str) -> dict[str, str]:
    """`KEY=VALUE` pairs of a repeatable option (--language TASK=LANG)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise WhichloraError(f"{option} {item!r} is not KEY=VALUE; e.g. {option} {example}.")
        if key in out and out[key] != value:
            raise WhichloraError(f"{option} gives {key!r} twice ({out[key]}, {value}); once.")
        out[key] = value
    return out


def parse_margins(items: Sequence[str]) -> dict[str, float]:
    """`metric=value` pairs from --margin."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.rpartition("=")
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not sep or not name or not (math.isfinite(value) and value > 0):
            raise WhichloraError(f"--margin {item!r} is not metric=VALUE with a positive number; "
                                 "e.g. --margin nll=0.02.")  # fmt: skip
        out[name] = value
    return out


def _directions(
    metrics: Sequence[str], lower: Sequence[str], known: Mapping[str, bool] | None = None
) -> dict[str, bool]:
    """--lower-is-better, then the directions lm-eval's logs gave, then the metric table's."""
    from whichlora.evaluate.metrics import higher_is_better

    known = known or {}
    out = {}
    for m in metrics:
        found = False if m in lower else known.get(m, higher_is_better(m))
        if found is None:
            raise WhichloraError(
                f"metric {m!r} has no known direction; pass --lower-is-better {m} if lower "
                f"values are better, or --higher-is-better {m} otherwise."
            )
        out[m] = found
    return out


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def format_verdicts(table: pd.DataFrame) -> str:
    """Plain-text table: one line per comparison, then the evidence sentence."""
    cols = ["technique", "family", "metric", "verdict", "estimate", "ci_low", "ci_high",
            "p_difference_holm", "p_equivalence_holm", "n_seeds", "seed_variance",
            "note"]  # fmt: skip
    heads = ["technique", "family", "metric", "verdict", "diff", "ci_low", "ci_high", "p_diff",
             "p_equiv", "seeds", "seed var", "note"]  # fmt: skip
    rows = [[_fmt(r[c]) for c in cols] for r in table.to_dict("records")]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(heads[:-1])]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads[:-1], widths, strict=True)) + "  note"]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  "
                     + r[-1])  # fmt: skip
    return "\n".join(lines) + "\n\n" + evidence_sentence(table)


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for rec in table.to_dict("records"):
        clean = {}
        for k, v in rec.items():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not math.isfinite(v):
                v = None
            clean[k] = v
        out.append(clean)
    return out


def run_verdict(
    path: Path,
    baseline: str,
    *,
    source: str | None = None,
    seen: Sequence[str] = (),
    margins: Sequence[str] = (),
    alpha: float = 0.05,
    lower_is_better: Sequence[str] = (),
    higher_is_better: Sequence[str] = (),
    json_out: Path | None = None,
    seed: int = 0,
    roles: Sequence[str] = (),
    lm_eval: bool = False,
    languages: Sequence[str] = (),
) -> str:
    """Judge a score file (or, with ``lm_eval``, a runs table of lm-eval output folders); write
    ``json_out`` (atomically) and return the printable text."""
    role_map = parse_roles(roles)
    known: dict[str, bool] = {}
    notes: list[str] = []
    if lm_eval:
        scores, known, notes = _lm_eval_scores(path, source, seen, languages)
    else:
        if languages:
            raise WhichloraError("--language maps lm-eval task names to languages; it applies "
                                 "only with --lm-eval. Drop it, or pass --lm-eval.")  # fmt: skip
        scores = read_scores(path)
        if "family" not in scores.columns:
            if not source:
                raise WhichloraError(
                    f"score table {path} has no 'family' column: pass --source LANG and --seen "
                    "LANG,LANG (other languages count as unseen), or add a family column."
                )
            scores = assign_families(scores, source, seen)
    metrics = sorted(set(scores["metric"].astype(str)))
    dirs = _directions([m for m in metrics if m not in higher_is_better], lower_is_better, known)
    dirs.update({m: True for m in higher_is_better})
    options = VerdictOptions(baseline=baseline, alpha=alpha, margins=parse_margins(margins),
                             higher_is_better=dirs, seed=seed)  # fmt: skip
    for m in metrics:
        options.margin(m)  # fail before any work on a metric without a margin
    table = judge(scores, options, roles=role_map or None)
    if json_out is not None:
        from whichlora.paths import write_json_atomic

        write_json_atomic(json_out, _records(table))
    return "".join(f"note: {n}\n" for n in notes) + format_verdicts(table)


def _lm_eval_scores(
    runs: Path, source: str | None, seen: Sequence[str], languages: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, bool], list[str]]:
    """(scores with families, directions from lm-eval, notes) of an lm-eval runs table.

    Families: from languages with --source/--seen (every task needs a language then), else one
    family per task (tasks differing only in their language code are one task)."""
    from whichlora.data.languages import require_language
    from whichlora.evaluate.harness_logs import read_lm_eval

    fix = "use an ISO 639 code such as en, de or sw"
    task_languages = {
        task: require_language(lang, f"--language {task}={lang}", fix)
        for task, lang in parse_pairs(languages, "--language", "xnli_de=de").items()
    }
    read = read_lm_eval(runs, task_languages)
    scores = read.scores
    notes = [f"no per-item verdict for {m}" for m in read.left_out]
    if source:
        unknown = sorted(set(scores.loc[scores["language"] == "", "task"]))
        if unknown:
            raise WhichloraError(
                f"--source assigns families by language, but task(s) {unknown} name no language. "
                "Fix: pass --language TASK=LANG for each, or drop --source/--seen to judge one "
                "family per task."
            )
        src = require_language(source, "--source", fix)
        seen_codes = [require_language(s, "--seen", fix) for s in seen]
        scores = assign_families(scores, src, seen_codes)
    else:
        if seen:
            raise WhichloraError("--seen needs --source (the retention language); pass both, "
                                 "or neither to judge one family per task.")  # fmt: skip
        scores = scores.assign(family=scores["task"])
    return scores.drop(columns="task"), read.higher_is_better, notes
