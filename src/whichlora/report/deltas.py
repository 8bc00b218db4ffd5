"""Per-language change against the base model, with bootstrap intervals over examples.

Every tuned run and the base score the same examples, so each example's difference is paired;
resampling examples (all seeds of an example together) keeps that pairing and the seed spread.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pandas as pd

from whichlora.evaluate.metrics import tradeoff_metrics
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
TRADEOFF_METRICS = tuple(tradeoff_metrics())  # the metric table's trade-off axes


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


def _resampled_means(matrix: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean over all finite entries of each resample. Rows reduce to (sum, count) and a resample
    is a vector of draw counts per row, so every resample costs one matrix-vector product."""
    ok = np.isfinite(matrix)
    sums = np.where(ok, matrix, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weights @ sums) / (weights @ ok.sum(axis=1))


def resample_weights(n: int, resamples: int, seed: int) -> np.ndarray | None:
    """How often each of n examples is drawn in each bootstrap resample (resamples x n);
    None when n < 2, where no interval can be given."""
    if n < 2:
        return None
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    flat = (idx + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def bootstrap_cell(
    runs: np.ndarray, base: np.ndarray, weights: np.ndarray | None
) -> dict[str, float]:
    """Mean of `runs` (examples x seeds) and of runs - base, each with a percentile interval."""
    diff = runs - base[:, None]
    out = {"value": float(_nanmean(runs)), "delta": float(_nanmean(diff)), "n_examples": len(runs)}
    nan = float("nan")
    out["value_ci_low"], out["value_ci_high"] = (
        _interval(_resampled_means(runs, weights)) if weights is not None else (nan, nan)
    )
    out["ci_low"], out["ci_high"] = (
        _interval(_resampled_means(diff, weights)) if weights is not None else (nan, nan)
    )
    return out


def _cell_seed(*parts: str) -> int:
    """Stable seed per (language, metric): an interval does not move when other cells come or
    go, and every technique is resampled on the same draws of examples."""
    return zlib.crc32("|".join(parts).encode("utf-8"))


def _group(inputs: ReportInputs, language: str) -> str:
    if language == inputs.source:
        return "source"
    return "seen" if language in inputs.seen else "unseen"


def _example_blocks(examples: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """(language, metric) -> examples x run_id values, keeping only examples the base scored."""
    indexed = examples.set_index(["language", "metric", "example_id", "run_id"])["value"]
    out = {}
    for key, frame in indexed.groupby(level=[0, 1]):
        block = frame.droplevel([0, 1]).unstack("run_id")
        if BASE in block.columns:
            out[key] = block.dropna(subset=[BASE])
    return out


def delta_table(inputs: ReportInputs) -> pd.DataFrame:
    """One row per (language, technique, metric): base, run mean and change, with intervals."""
    if inputs.metrics.empty or inputs.runs.empty:
        return pd.DataFrame(columns=DELTA_COLUMNS)
    means = inputs.metrics.pivot_table(
        index=["language", "metric"], columns="run_id", values="value", aggfunc="mean"
    )
    if BASE not in means.columns:
        return pd.DataFrame(columns=DELTA_COLUMNS)
    blocks = _example_blocks(inputs.examples)
    by_label = {label: list(inputs.runs_of(label)["run_id"]) for label in inputs.labels}
    rows = []
    for (language, metric), row in means.iterrows():
        if not np.isfinite(row[BASE]):
            continue
        block = blocks.get((language, metric))
        weights = None
        if block is not None:
            weights = resample_weights(len(block), inputs.resamples, _cell_seed(language, metric))
        for label, run_ids in by_label.items():
            run_ids = [r for r in run_ids if r in row.index and np.isfinite(row[r])]
            if not run_ids:
                continue
            if block is not None and len(block) and set(run_ids) <= set(block.columns):
                cell = bootstrap_cell(
                    block[run_ids].to_numpy(dtype=float), block[BASE].to_numpy(dtype=float), weights
                )
            else:  # no per-example scores: the point estimate still stands, without interval
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


def base_table(inputs: ReportInputs) -> pd.DataFrame:
    """The base model's own scores per language, so changes can be read against a level."""
    base = inputs.examples[inputs.examples["run_id"] == BASE]
    rows = []
    for (language, metric), frame in base.groupby(["language", "metric"]):
        values = frame["value"].to_numpy(dtype=float)
        weights = resample_weights(len(values), inputs.resamples, _cell_seed(language, metric))
        cell = bootstrap_cell(values[:, None], np.zeros(len(values)), weights)
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
        for run in inputs.runs.itertuples():
            if run.run_id not in per_lang.columns:
                continue
            gain = per_lang[run.run_id].reindex(inputs.targets).dropna()
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
