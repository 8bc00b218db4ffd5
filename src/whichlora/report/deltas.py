"""Per-language change against the base model, with bootstrap intervals over examples.

Every tuned run and the base score the same examples, so each example's difference is paired;
resampling examples (all seeds of an example together) keeps that pairing and the seed spread.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pandas as pd

from whichlora.report.inputs import BASE, ReportInputs

CONFIDENCE = 0.95
DELTA_COLUMNS = [
    "group",
    "language",
    "technique",
    "metric",
    "n_seeds",
    "n_examples",
    "base",
    "value",
    "value_ci_low",
    "value_ci_high",
    "delta",
    "ci_low",
    "ci_high",
]
TRADEOFF_METRICS = ("mc_acc", "nll")


def _nanmean(values: np.ndarray, axis: int | tuple[int, ...] | None = None) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing resample is just NaN
        return np.nanmean(values, axis=axis)


def _interval(means: np.ndarray) -> tuple[float, float]:
    if not np.isfinite(means).any():
        return float("nan"), float("nan")
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.nanpercentile(means, [tail, 100 - tail])
    return float(low), float(high)


def _resampled_means(matrix: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean over all finite entries of each resample of rows; rows reduce to (sum, count) first
    so a resample is a 1-D gather, not a copy of the whole matrix."""
    ok = np.isfinite(matrix)
    sums = np.where(ok, matrix, 0.0).sum(axis=1)
    counts = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums[idx].sum(axis=1) / counts[idx].sum(axis=1)


def bootstrap_cell(
    runs: np.ndarray, base: np.ndarray, resamples: int, seed: int
) -> dict[str, float]:
    """Mean of `runs` (examples x seeds) and of runs - base, each with a percentile interval."""
    n = runs.shape[0]
    diff = runs - base[:, None]
    out = {"value": float(_nanmean(runs)), "delta": float(_nanmean(diff)), "n_examples": n}
    if n < 2:
        nan = float("nan")
        return {**out, "value_ci_low": nan, "value_ci_high": nan, "ci_low": nan, "ci_high": nan}
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    out["value_ci_low"], out["value_ci_high"] = _interval(_resampled_means(runs, idx))
    out["ci_low"], out["ci_high"] = _interval(_resampled_means(diff, idx))
    return out


def _cell_seed(*parts: str) -> int:
    """Stable per-cell seed: a cell's interval does not move when other cells come or go."""
    return zlib.crc32("|".join(parts).encode("utf-8"))


def _group(inputs: ReportInputs, language: str) -> str:
    if language == inputs.source:
        return "source"
    return "seen" if language in inputs.seen else "unseen"


def delta_table(inputs: ReportInputs) -> pd.DataFrame:
    """One row per (language, technique, metric): base, run mean and change, with intervals."""
    if inputs.metrics.empty or inputs.runs.empty:
        return pd.DataFrame(columns=DELTA_COLUMNS)
    means = inputs.metrics.pivot_table(
        index=["language", "metric"], columns="run_id", values="value", aggfunc="mean"
    )
    blocks = {
        key: frame.droplevel([0, 1]).unstack("run_id")
        for key, frame in inputs.examples.set_index(
            ["language", "metric", "example_id", "run_id"]
        )["value"].groupby(level=[0, 1])
    }
    rows = []
    for (language, metric), row in means.iterrows():
        if BASE not in row.index or not np.isfinite(row[BASE]):
            continue
        for label in inputs.labels:
            run_ids = [r for r in inputs.runs_of(label)["run_id"] if r in row.index]
            run_ids = [r for r in run_ids if np.isfinite(row[r])]
            if not run_ids:
                continue
            cell = _cell(blocks.get((language, metric)), run_ids, inputs, language, metric, label)
            if cell is None:  # no per-example scores: the point estimate still stands
                value = float(row[run_ids].mean())
                cell = {"value": value, "delta": value - float(row[BASE]), "n_examples": 0}
            rows.append(
                {
                    "group": _group(inputs, language),
                    "language": language,
                    "technique": label,
                    "metric": metric,
                    "n_seeds": len(run_ids),
                    "base": float(row[BASE]),
                    **cell,
                }
            )
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def _cell(
    block: pd.DataFrame | None,
    run_ids: list[str],
    inputs: ReportInputs,
    language: str,
    metric: str,
    label: str,
) -> dict[str, float] | None:
    if block is None or BASE not in block.columns or not set(run_ids) <= set(block.columns):
        return None
    paired = block[[*run_ids, BASE]].dropna(subset=[BASE])
    if paired.empty:
        return None
    return bootstrap_cell(
        paired[run_ids].to_numpy(dtype=float),
        paired[BASE].to_numpy(dtype=float),
        inputs.resamples,
        _cell_seed(label, language, metric),
    )


def base_table(inputs: ReportInputs) -> pd.DataFrame:
    """The base model's own scores per language, so changes can be read against a level."""
    base = inputs.examples[inputs.examples["run_id"] == BASE]
    rows = []
    for (language, metric), frame in base.groupby(["language", "metric"]):
        values = frame["value"].to_numpy(dtype=float)
        cell = bootstrap_cell(
            values[:, None], np.zeros(len(values)), inputs.resamples, _cell_seed(language, metric)
        )
        rows.append(
            {
                "group": _group(inputs, str(language)),
                "language": language,
                "metric": metric,
                "n_examples": cell["n_examples"],
                "value": cell["value"],
                "ci_low": cell["value_ci_low"],
                "ci_high": cell["value_ci_high"],
            }
        )
    columns = ["group", "language", "metric", "n_examples", "value", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def tradeoff_points(inputs: ReportInputs) -> pd.DataFrame:
    """Per run: mean change over target languages (transfer) and change on the source language."""
    columns = ["run_id", "technique", "seed", "metric", "transfer", "retention", "n_languages"]
    m = inputs.metrics
    if m.empty or inputs.runs.empty:
        return pd.DataFrame(columns=columns)
    table = m.pivot_table(index=["metric", "language"], columns="run_id", values="value")
    if BASE not in table.columns:
        return pd.DataFrame(columns=columns)
    delta = table.drop(columns=BASE).sub(table[BASE], axis=0)
    rows = []
    for metric in TRADEOFF_METRICS:
        if metric not in delta.index.get_level_values(0):
            continue
        per_lang = delta.loc[metric]
        targets = [lang for lang in inputs.targets if lang in per_lang.index]
        for run in inputs.runs.itertuples():
            if run.run_id not in per_lang.columns:
                continue
            gain = per_lang.loc[targets, run.run_id].dropna() if targets else pd.Series([])
            source = per_lang[run.run_id].get(inputs.source, np.nan)
            if gain.empty or not np.isfinite(source):
                continue
            rows.append(
                {
                    "run_id": run.run_id,
                    "technique": run.label,
                    "seed": run.seed,
                    "metric": metric,
                    "transfer": float(gain.mean()),
                    "retention": float(source),
                    "n_languages": len(gain),
                }
            )
    return pd.DataFrame(rows, columns=columns)
