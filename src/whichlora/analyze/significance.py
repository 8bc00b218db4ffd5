"""The familiar rank-test view beside the verdicts: Wilcoxon signed-rank against the baseline
over (seed x language) cells with Holm, an item bootstrap interval, Friedman/Nemenyi ranks.

Not the verdicts (analyze/verdicts.py, the stored `verdicts` table): this pipeline writes the
`significance` table, which the report shows as "the familiar view" (report/familiar.py). Its
per-comparison sentence keeps the stored column name `verdict` (study folders hold it).

Scores arrive as a long DataFrame with columns technique, seed, language, example_id, metric,
value (one row per example). Language x seed cells are the units of replication for rank tests;
examples are the units of resampling for bootstrap intervals of the mean difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from whichlora.errors import WhichloraError

__all__ = [
    "SCORE_COLUMNS",
    "BootstrapResult",
    "FriedmanResult",
    "WilcoxonResult",
    "aggregate_scores",
    "average_ranks",
    "compare_to_baseline",
    "critical_difference",
    "friedman_nemenyi",
    "holm",
    "paired_bootstrap_ci",
    "paired_wilcoxon",
    "summary_sentence",
]

SCORE_COLUMNS = ("technique", "seed", "language", "example_id", "metric", "value")
CELL = ["seed", "language"]
RESULT_COLUMNS = [
    "metric",
    "technique",
    "baseline",
    "n_pairs",
    "n_examples",
    "mean_diff",
    "ci_low",
    "ci_high",
    "wilcoxon_p",
    "p_holm",
    "rank_biserial",
    "significant",
    "verdict",
]
# Largest index block drawn at once by the bootstrap, to bound memory on big score tables.
_BOOTSTRAP_CHUNK = 4_000_000


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class WilcoxonResult:
    """Signed-rank test outcome; rank_biserial > 0 means a tends to exceed b."""

    statistic: float
    p_value: float
    n: int
    rank_biserial: float
    note: str = ""


@dataclass(frozen=True)
class BootstrapResult:
    """Mean of a - b with a percentile bootstrap interval."""

    mean_diff: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float


@dataclass(frozen=True)
class FriedmanResult:
    """Everything a critical-difference diagram needs; NaN/None where the test was skipped."""

    statistic: float
    p_value: float
    avg_ranks: pd.Series
    nemenyi: pd.DataFrame | None
    cd: float
    k: int
    n_blocks: int
    alpha: float
    note: str = ""


# --------------------------------------------------------------------------- paired inputs


def _paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    """Differences a - b, dropping pairs with a missing side (a missing score is no evidence)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise WhichloraError(f"paired values must align one-to-one, got {x.size} and {y.size}.")
    d = x - y
    return d[np.isfinite(d)]


def _min_wilcoxon_p(n: int) -> float:
    """Smallest two-sided exact p the signed-rank test can reach with n non-zero pairs."""
    return min(1.0, 2.0 / 2.0**n)


def _rank_biserial(d: np.ndarray) -> float:
    """Matched-pairs rank-biserial r = (T+ - T-) / (T+ + T-) over non-zero differences (Kerby)."""
    from scipy.stats import rankdata

    nz = d[d != 0]
    if nz.size == 0:
        return 0.0
    ranks = rankdata(np.abs(nz))
    pos = ranks[nz > 0].sum()
    neg = ranks[nz < 0].sum()
    return float((pos - neg) / (pos + neg))


def paired_wilcoxon(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    alpha: float = 0.05,
) -> WilcoxonResult:
    """Wilcoxon signed-rank test on aligned pairs (e.g. per language x seed means).

    Rank-based, so a single language with a huge swing cannot carry the result alone.
    """
    from scipy.stats import wilcoxon

    d = _paired(a, b)
    n = int(d.size)
    if n == 0:
        return WilcoxonResult(np.nan, np.nan, 0, np.nan, "no paired values to compare")
    n_nonzero = int(np.count_nonzero(d))
    if n_nonzero == 0:
        return WilcoxonResult(0.0, 1.0, n, 0.0, "no difference: all paired values are equal")
    res = wilcoxon(d)
    note = ""
    if _min_wilcoxon_p(n_nonzero) > alpha:
        note = (
            f"too few non-zero pairs (n={n_nonzero}) for the test to reach p<{alpha:g}; "
            "add languages or seeds"
        )
    return WilcoxonResult(float(res.statistic), float(res.pvalue), n, _rank_biserial(d), note)


def paired_bootstrap_ci(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapResult:
    """Percentile bootstrap CI of mean(a - b), resampling pairs so their correlation is kept."""
    if not 0 < confidence < 1:
        raise WhichloraError(f"confidence must be between 0 and 1, got {confidence}.")
    if n_resamples < 1:
        raise WhichloraError(f"n_resamples must be at least 1, got {n_resamples}.")
    d = _paired(a, b)
    n = int(d.size)
    if n == 0:
        return BootstrapResult(np.nan, np.nan, np.nan, 0, confidence)
    means = _bootstrap_means(d, n_resamples, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return BootstrapResult(float(d.mean()), float(low), float(high), n, confidence)


def _bootstrap_means(d: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Resample means in row blocks so memory stays bounded for large per-example tables."""
    n = d.size
    rows_per_chunk = max(1, _BOOTSTRAP_CHUNK // n)
    out = np.empty(n_resamples)
    for start in range(0, n_resamples, rows_per_chunk):
        stop = min(n_resamples, start + rows_per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = d[idx].mean(axis=1)
    return out


# --------------------------------------------------------------------------- multiple tests


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; NaNs (tests not run) stay NaN and are not counted."""
    import gc

    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        # statsmodels' Holm ends with gc.collect(), a full collection of the process at every
        # call: in a process holding models or many simulations it took far longer than the
        # correction. Frozen, the objects that exist already are left out of that collection.
        gc.freeze()
        try:
            out[ok] = multipletests(p[ok], method="holm")[1]
        finally:
            gc.unfreeze()
    return out


# --------------------------------------------------------------------------- many techniques


def critical_difference(k: int, n_blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi critical difference in average rank (Demsar 2006), for CD diagrams."""
    from scipy.stats import studentized_range

    if k < 2 or n_blocks < 1:
        raise WhichloraError(f"critical difference needs k >= 2, N >= 1; got k={k}, N={n_blocks}.")
    q_alpha = studentized_range.ppf(1.0 - alpha, k, np.inf) / np.sqrt(2.0)
    return float(q_alpha * np.sqrt(k * (k + 1) / (6.0 * n_blocks)))


def average_ranks(table: pd.DataFrame, higher_is_better: bool = True) -> pd.Series:
    """Mean rank per technique over blocks, rank 1 = best, ties share the average rank."""
    ranks = table.rank(axis=1, ascending=not higher_is_better, method="average")
    return ranks.mean(axis=0)


def friedman_nemenyi(
    table: pd.DataFrame,
    higher_is_better: bool = True,
    alpha: float = 0.05,
) -> FriedmanResult:
    """Friedman test over blocks (language x seed) and techniques, with Nemenyi post-hoc.

    Blocks with a missing technique are dropped, since Friedman needs complete blocks.
    """
    from scikit_posthocs import posthoc_nemenyi_friedman
    from scipy.stats import friedmanchisquare

    complete = table.dropna(axis=0, how="any").astype(np.float64)
    k, n_blocks = complete.shape[1], complete.shape[0]
    dropped = table.shape[0] - n_blocks
    note = f"dropped {dropped} incomplete block(s); " if dropped else ""
    if k < 2 or n_blocks < 2:
        raise WhichloraError(
            f"ranking needs at least 2 techniques and 2 complete blocks, got {k} and {n_blocks}."
        )
    ranks = average_ranks(complete, higher_is_better)
    cd = critical_difference(k, n_blocks, alpha)
    if k < 3:
        note += "Friedman needs at least 3 techniques; with 2, use paired_wilcoxon instead"
        return FriedmanResult(np.nan, np.nan, ranks, None, cd, k, n_blocks, alpha, note)
    stat, p = friedmanchisquare(*(complete[c].to_numpy() for c in complete.columns))
    nemenyi = posthoc_nemenyi_friedman(complete.reset_index(drop=True))
    nemenyi = nemenyi.loc[list(complete.columns), list(complete.columns)]
    return FriedmanResult(
        float(stat), float(p), ranks, nemenyi, cd, k, n_blocks, alpha, note.rstrip("; ")
    )


# --------------------------------------------------------------------------- baseline comparison


def _check_scores(scores: pd.DataFrame, baseline: str) -> None:
    """Fail early with the missing column or technique named, not a KeyError deep inside."""
    missing = [c for c in SCORE_COLUMNS if c not in scores.columns]
    if missing:
        raise WhichloraError(f"scores are missing column(s) {missing}; expected {SCORE_COLUMNS}.")
    techniques = set(scores["technique"].unique())
    if baseline not in techniques:
        raise WhichloraError(
            f"baseline technique {baseline!r} has no scores; available: {sorted(techniques)}."
        )


def aggregate_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Mean value per (metric, technique, seed, language): one number per replication cell."""
    keys = ["metric", "technique", *CELL]
    return scores.groupby(keys, as_index=False, observed=True, sort=True)["value"].mean()


def _pair(frame: pd.DataFrame, technique: str, baseline: str, on: list[str]) -> pd.DataFrame:
    """Inner-join a technique with the baseline on the pairing keys (columns value_t, value_b)."""
    t = frame[frame["technique"] == technique].groupby(on, observed=True)["value"].mean()
    b = frame[frame["technique"] == baseline].groupby(on, observed=True)["value"].mean()
    return pd.concat({"value_t": t, "value_b": b}, axis=1, join="inner").dropna()


def _fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _sentence(row: Mapping[str, object], higher_is_better: bool, confidence: float) -> str:
    """One plain sentence per comparison, direction judged by the tested (rank) statistic."""
    t, base, metric = row["technique"], row["baseline"], row["metric"]
    p_holm = float(row["p_holm"])  # type: ignore[arg-type]
    if not np.isfinite(p_holm):
        return f"could not compare {t} with {base} on {metric}: no paired (seed, language) values"
    if not row["significant"]:
        why = f"; {row['note']}" if row.get("note") else ""
        return (
            f"no significant difference between {t} and {base} on {metric} "
            f"(Holm {_fmt_p(p_holm)}{why})"
        )
    higher = float(row["rank_biserial"]) > 0  # type: ignore[arg-type]
    word = "better" if higher == higher_is_better else "worse"
    ci = f"{confidence:.0%} CI [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    return (
        f"{t} is significantly {word} than {base} on {metric} "
        f"({row['mean_diff']:+.3f}, {ci}, Holm {_fmt_p(p_holm)})"
    )


def _compare_one(
    scores: pd.DataFrame,
    cells: pd.DataFrame,
    technique: str,
    baseline: str,
    bootstrap: Callable[[pd.Series, pd.Series], BootstrapResult],
) -> dict[str, object]:
    """Wilcoxon on cell means plus bootstrap on examples, for one metric and technique."""
    cell_pairs = _pair(cells, technique, baseline, CELL)
    ex_pairs = _pair(scores, technique, baseline, [*CELL, "example_id"])
    w = paired_wilcoxon(cell_pairs["value_t"], cell_pairs["value_b"])
    ci = bootstrap(ex_pairs["value_t"], ex_pairs["value_b"])
    return {
        "technique": technique,
        "baseline": baseline,
        "n_pairs": w.n,
        "n_examples": ci.n,
        "mean_diff": ci.mean_diff,
        "ci_low": ci.ci_low,
        "ci_high": ci.ci_high,
        "wilcoxon_p": w.p_value,
        "rank_biserial": w.rank_biserial,
        "note": w.note,
    }


def compare_to_baseline(
    scores_df: pd.DataFrame,
    baseline: str = "lora",
    higher_is_better: Mapping[str, bool] | None = None,
    alpha: float = 0.05,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Every technique vs the baseline on every metric, Holm-corrected as one family.

    mean_diff, the CI and rank_biserial are technique minus baseline in the metric's own units;
    ``higher_is_better`` (default True per metric) only decides whether a shift reads as better.
    """
    _check_scores(scores_df, baseline)
    hib = dict(higher_is_better or {})
    cells = aggregate_scores(scores_df)
    boot = partial(paired_bootstrap_ci, n_resamples=n_resamples, confidence=confidence, seed=seed)
    rows: list[dict[str, object]] = []
    for metric in sorted(scores_df["metric"].unique(), key=str):
        m_scores = scores_df[scores_df["metric"] == metric]
        m_cells = cells[cells["metric"] == metric]
        others = sorted((t for t in m_scores["technique"].unique() if t != baseline), key=str)
        for technique in others:
            row = _compare_one(m_scores, m_cells, technique, baseline, boot)
            rows.append({"metric": metric, **row})
    if not rows:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    out = pd.DataFrame(rows)
    out["p_holm"] = holm(out["wilcoxon_p"].to_numpy())
    out["significant"] = (out["p_holm"] < alpha).fillna(False).astype(bool)
    out["verdict"] = [
        _sentence(r, hib.get(str(r["metric"]), True), confidence) for r in out.to_dict("records")
    ]
    return out[RESULT_COLUMNS]


def summary_sentence(df: pd.DataFrame) -> str:
    """A headline for reports that never hides a null result."""
    if df.empty:
        return "No comparisons were made: only the baseline has scores."
    baseline = ", ".join(sorted({str(b) for b in df["baseline"]}))
    sig = df[df["significant"].astype(bool)]
    n = len(df)
    not_run = int(df["p_holm"].isna().sum())
    skipped = f", {not_run} without paired data" if not_run else ""
    if sig.empty:
        return (
            f"No significant difference from {baseline} on any metric "
            f"({n} comparison{'s' if n != 1 else ''}{skipped}, Holm-corrected)."
        )
    verdicts = "; ".join(sig["verdict"])
    return f"{len(sig)} of {n} comparisons are significant after Holm correction: {verdicts}."
