"""Verdicts: is a technique better, worse, equivalent or inconclusive against the baseline?

Scores are per item, nested in languages, in runs (technique x seed; one seed = one data order,
shared by every technique). The unit of replication is the seed: a two-stage analysis of a
randomized complete block design with seeds as blocks (docs/verdicts.md explains every choice).

1. Cell means per (technique, seed, language) over the items both sides have; a family mean per
   (technique, seed) weights its languages equally (they are fixed: the ones the user asked for).
2. D_s = technique - baseline per shared seed; the estimate is mean(D_s).
3. Var(mean D) = Var(D_s) / S + item part. Var(D_s) is the pair's own variance over its shared
   seeds (df S-1): techniques differ in seed sensitivity, so no comparison borrows another's.
   The item part is the technique x item interaction that stays the same in every seed
   (estimated from the items, floored at one step of the metric's resolution so agreeing 0/1
   items never give zero variance). df: Welch-Satterthwaite over the two parts, so a
   difference dominated by item noise uses the items' df and one dominated by seed noise the
   seeds' (never fewer than the smaller of them).
4. A claim needs variance the judged data estimates: >= 2 seeds shared with the baseline and
   >= 2 items in every language. Short of that the comparison is inconclusive, and the advice
   (more seeds, more items) comes from a planning guess (other techniques' seed variance, the
   spread between languages), labelled as such.
5. Two-sided t test and TOST against +-margin, Holm within each (family, metric), verdict rule:
   equivalent if TOST holds after Holm; else better/worse if the difference does; else
   inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from whichlora.analyze import power as pw
from whichlora.analyze.significance import holm
from whichlora.errors import WhichloraError
from whichlora.evaluate import metrics

__all__ = [
    "FAMILIES",
    "ROLES",
    "VERDICT_COLUMNS",
    "VerdictOptions",
    "assign_families",
    "evidence_sentence",
    "judge",
    "language_intervals",
    "parse_roles",
]

FAMILIES = ("transfer_seen", "transfer_unseen", "retention")
# Families are free labels; a family plays one of these roles when it is named after it (the
# study's own families) or is given it (judge's `roles`). The trade-off row pairs the family in
# the transfer_seen role with the one in the retention role.
ROLES = FAMILIES
_ROLE_WORDS = {"transfer_seen": "transfer (seen)", "retention": "retention"}
TRADEOFF = "tradeoff"
REQUIRED = ("technique", "seed", "language", "example_id", "metric", "value", "family")
# The df of a verdict weighs the seed part at this upper confidence bound: Satterthwaite's df
# taken from a seed variance that two or three seeds happened to underestimate would be large
# exactly when the standard error is too small (false claims at 2 seeds rose from ~0 to 7%).
UPPER_LEVEL = 0.9
VERDICT_COLUMNS = [
    "technique", "baseline", "family", "metric", "higher_is_better", "margin", "estimate",
    "ci_low", "ci_high", "se", "df", "p_difference", "p_difference_holm", "p_equivalence",
    "p_equivalence_holm", "verdict", "n_seeds", "n_languages", "n_items", "seed_variance", "note",
    "mde", "more_seeds", "more_items", "p_bayes_better", "p_bayes_equivalent", "p_bayes_worse",
    "aso_epsilon",
]  # fmt: skip


@dataclass(frozen=True)
class VerdictOptions:
    """How to judge: the baseline, alpha, margins and directions per metric, optional views."""

    baseline: str
    alpha: float = 0.05
    margins: Mapping[str, float] = field(default_factory=dict)
    higher_is_better: Mapping[str, bool] = field(default_factory=dict)
    bayes: bool = True
    aso: bool = True
    power: bool = True
    seed: int = 0
    power_target: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 0.5:
            raise WhichloraError(f"alpha must be in (0, 0.5); got {self.alpha}. Use e.g. 0.05.")
        if not 0 < self.power_target < 1:
            raise WhichloraError(f"power_target must be in (0, 1); got {self.power_target}.")
        for name, value in self.margins.items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise WhichloraError(
                    f"margin for metric {name!r} must be a positive number; got {value!r}. "
                    f"Set it as --margin {name}=0.02 (in the metric's own units)."
                )

    def margin(self, metric: str) -> float:
        """The margin given here, else the metric table's (evaluate/metrics.yaml)."""
        if metric in self.margins:
            return float(self.margins[metric])
        found = metrics.default_margin(metric)
        if found is None:
            raise WhichloraError(
                f"metric {metric!r} has no margin of practical equivalence. Set one in the "
                f"metric's own units: VerdictOptions(margins={{{metric!r}: ...}}) or "
                f"`whichlora verdict --margin {metric}=VALUE`."
            )
        return found

    def direction(self, metric: str) -> bool:
        """The direction given here, else the metric table's (lm-eval's for harness metrics)."""
        if metric in self.higher_is_better:
            return bool(self.higher_is_better[metric])
        found = metrics.higher_is_better(metric)
        if found is not None:
            return found
        raise WhichloraError(
            f"metric {metric!r} has no known direction. Say which way is better: "
            f"VerdictOptions(higher_is_better={{{metric!r}: False}}) or "
            f"`whichlora verdict --lower-is-better {metric}` (higher is better otherwise)."
        )


def assign_families(scores: pd.DataFrame, source: str, seen: Iterable[str]) -> pd.DataFrame:
    """Add ``family``: the source language is retention, seen languages transfer_seen, else
    transfer_unseen."""
    seen = {str(s) for s in seen}
    lang = scores["language"].astype(str)
    out = scores.copy()
    out["family"] = np.where(
        lang == str(source), "retention", np.where(lang.isin(seen), "transfer_seen",
                                                   "transfer_unseen")
    )  # fmt: skip
    return out


# --------------------------------------------------------------------------- the estimator


@dataclass
class _Fit:
    estimate: float = math.nan
    se: float = math.nan
    df: float = math.nan
    n_seeds: int = 0
    n_languages: int = 0
    n_items: int = 0
    mode: str = "none"
    design: pw.Design | None = None
    lang_diffs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seed_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    seed_b: np.ndarray = field(default_factory=lambda: np.zeros(0))
    note: str = ""
    # the item part of the variance and its df (a planning guess where items are too few)
    item: float = 0.0
    df_item: float = pw.MAX_DF
    few_items: bool = False  # a language with fewer than two scored items


def _wide(sub: pd.DataFrame) -> pd.DataFrame:
    """(language, example_id) x (technique, seed) table of values."""
    return sub.pivot(index=["language", "example_id"], columns=["technique", "seed"],
                     values="value")  # fmt: skip


def _family_means(wide: pd.DataFrame) -> pd.DataFrame:
    """technique x seed table of family means (languages weighted equally)."""
    per_lang = wide.groupby(level="language").mean()
    return per_lang.mean(axis=0).unstack("seed")


def _borrowed(means: pd.DataFrame) -> float | None:
    """Pooled between-seed variance of family means over techniques with >= 2 seeds: a planning
    guess for a single-seed comparison's advice, never a verdict's variance (a technique's own
    seed sensitivity is not learnt from other techniques)."""
    ss, df = 0.0, 0
    for _, row in means.iterrows():
        vals = row.dropna().to_numpy(dtype=np.float64)
        if len(vals) >= 2:
            ss += float(((vals - vals.mean()) ** 2).sum())
            df += len(vals) - 1
    return ss / df if df else None


def _satterthwaite(parts: Iterable[tuple[float, float]]) -> float:
    """Welch-Satterthwaite df of a sum of independent variance estimates (value, df)."""
    parts = [(v, d) for v, d in parts if v > 0]
    denom = sum(v * v / d for v, d in parts)
    if denom <= 0:
        return pw.MAX_DF
    return min(sum(v for v, _ in parts) ** 2 / denom, pw.MAX_DF)


def _fit(wide: pd.DataFrame, tech: str, base: str, resolution: float = 0.0) -> _Fit:
    """The estimate, its standard error and df for one comparison (see the module docstring).

    Claims need variance the judged data estimates: at least two seeds shared with the baseline
    and two items in every language. Short of that the fit has an estimate but no standard error
    (the verdict is inconclusive), and `design` is a planning guess for the advice only.

    `resolution` is the smallest step the metric takes (1 for a 0/1 accuracy): every language's
    item variance is at least resolution^2 / (S (n + 1)), as if one more item had differed by
    one step. Without it, ten items that all agree would give a zero variance and a claim of
    exact equivalence that ten items cannot support."""
    fit = _Fit()
    t_seeds = {s for t, s in wide.columns if t == tech}
    b_seeds = {s for t, s in wide.columns if t == base}
    seeds = sorted(t_seeds & b_seeds, key=str)
    fit.n_seeds = len(seeds)
    if not seeds:
        fit.note = "no seed in common with the baseline: run both with the same seeds (seeds pair)"
        return fit
    values = wide.to_numpy(dtype=np.float64)
    t = values[:, wide.columns.get_indexer([(tech, s) for s in seeds])]
    b = values[:, wide.columns.get_indexer([(base, s) for s in seeds])]
    d = t - b
    ok = np.isfinite(d).all(axis=1)
    langs = wide.index.get_level_values("language").to_numpy()
    lang_names = [lg for lg in pd.unique(langs[ok])]
    if not lang_names:
        fit.note = "no item scored for both sides in the same seeds"
        return fit
    S, L = len(seeds), len(lang_names)
    d_seed, t_seed, b_seed = np.zeros((L, S)), np.zeros((L, S)), np.zeros((L, S))
    # Per language: item variance of the seed-averaged differences (technique x item, plus the
    # seed-varying item noise / S) and the item x seed residual (seed-varying item noise).
    v_item = df_item = resid = df_resid = 0.0
    n_items = []
    for j, lg in enumerate(lang_names):
        in_lang = ok & (langs == lg)
        dl = d[in_lang]
        n = dl.shape[0]
        n_items.append(n)
        d_seed[j] = dl.mean(axis=0)
        t_seed[j], b_seed[j] = t[in_lang].mean(axis=0), b[in_lang].mean(axis=0)
        if n >= 2:
            floor = resolution**2 / (S * (n + 1))
            v_item += max(float(dl.mean(axis=1).var(ddof=1)), floor) / n
            df_item += n - 1
            if S >= 2:
                r = dl - dl.mean(axis=0, keepdims=True) - dl.mean(axis=1, keepdims=True) + dl.mean()
                resid += float((r**2).sum()) / ((S - 1) * (n - 1)) / n
                df_resid += (S - 1) * (n - 1)
    v_item /= L**2  # variance of the family mean from the items (seed-averaged differences)
    resid /= L**2  # the part of Var(D_s) that is item noise changing from seed to seed
    fit.n_languages, fit.n_items = L, int(sum(n_items))
    fit.lang_diffs = d_seed.mean(axis=1)
    big_d = d_seed.mean(axis=0)
    fit.estimate = float(big_d.mean())
    fit.seed_t, fit.seed_b = t_seed.mean(axis=0), b_seed.mean(axis=0)
    n_mean = float(np.mean(n_items))
    few_items = fit.few_items = min(n_items) < 2
    item = max(v_item - resid / S, 0.0) if S >= 2 else v_item
    fit.item, fit.df_item = item, _df_item(item, v_item, df_item, resid / S, df_resid)
    if few_items and L >= 2:
        # planning guess: languages as items (a language's single item is one draw of it)
        fit.item = max(item, float(np.var(fit.lang_diffs, ddof=1)) / (L * n_mean))
        fit.df_item = pw.MAX_DF
    if S >= 2:
        var_d = float(big_d.var(ddof=1))
        fit.mode = "paired"
        fit.design = pw.Design(max(var_d - resid, 0.0), resid, fit.item, S, n_mean, fit.df_item)
        if not few_items:
            fit.se = math.sqrt(var_d / S + item)
            fit.df = _satterthwaite(
                [(_upper(var_d, S - 1) / S, S - 1), (_upper(item, fit.df_item), fit.df_item)]
            )
    else:
        fit.mode = "none"
        fit.note = ("one seed shared with the baseline: a technique's own seed sensitivity cannot "
                    "be learnt from one run of it")  # fmt: skip
    if few_items:
        short = [lg for lg, n in zip(lang_names, n_items, strict=True) if n < 2]
        fit.se = fit.df = math.nan
        fit.note = "; ".join(x for x in (fit.note, (
            f"{len(short)} language(s) with one scored item ({', '.join(map(str, short[:4]))}"
            f"{', ...' if len(short) > 4 else ''}): one item gives no estimate of item noise"
        )) if x)  # fmt: skip
    return fit


def _planning_design(fit: _Fit, means: pd.DataFrame) -> pw.Design | None:
    """For a single-seed comparison's advice only: the seed variance of a difference guessed as
    2x the between-seed variance of the techniques that have several seeds."""
    found = _borrowed(means)
    if found is None:
        return None
    return pw.Design(2.0 * found, 0.0, fit.item, 1, fit.n_items / max(fit.n_languages, 1),
                     fit.df_item)  # fmt: skip


def _upper(variance: float, df: float, level: float = UPPER_LEVEL) -> float:
    """One-sided upper confidence bound of a variance estimated with `df` df."""
    if df >= pw.MAX_DF:
        return variance
    return variance * df / float(stats.chi2.ppf(1 - level, df))


def _df_item(item: float, v_item: float, df_item: float, r: float, df_r: float) -> float:
    """Satterthwaite df of item = v_item - r (a difference of mean squares); inf when no items."""
    if item <= 0 or df_item <= 0:
        return pw.MAX_DF
    denom = v_item**2 / df_item + (r**2 / df_r if df_r > 0 else 0.0)
    return min(max(item**2 / denom, 1.0), pw.MAX_DF) if denom > 0 else pw.MAX_DF


def _tests(est: float, se: float, df: float, margin: float) -> tuple[float, float]:
    """Two-sided p of no difference, TOST p of |difference| >= margin."""
    if not math.isfinite(se):
        return math.nan, math.nan
    if se == 0:  # not one score varied: no information on the uncertainty, so no claim
        return math.nan, math.nan
    p_diff = float(2 * stats.t.sf(abs(est) / se, df))
    p_eq = float(max(stats.t.sf((est + margin) / se, df), stats.t.cdf((est - margin) / se, df)))
    return p_diff, p_eq


def _validate(scores: pd.DataFrame, options: VerdictOptions) -> pd.DataFrame:
    missing = [c for c in REQUIRED if c not in scores.columns]
    if missing:
        raise WhichloraError(
            f"score table lacks column(s) {missing}; it needs {list(REQUIRED)} "
            "(add family with assign_families(scores, source, seen))."
        )
    if scores["family"].isna().any() or (scores["family"].astype(str).str.strip() == "").any():
        raise WhichloraError("column 'family' is empty in some rows; give every row a family "
                             "label (any text), or assign them with assign_families.")  # fmt: skip
    if TRADEOFF in set(scores["family"].astype(str)):
        raise WhichloraError(f"family {TRADEOFF!r} is reserved for the trade-off row; rename "
                             "that family.")  # fmt: skip
    if options.baseline not in set(scores["technique"].astype(str)):
        raise WhichloraError(
            f"baseline {options.baseline!r} is not among the techniques "
            f"{sorted(set(scores['technique'].astype(str)))}; pick one of them."
        )
    out = scores.copy()
    if out["technique"].dtype != object:
        out["technique"] = out["technique"].astype(str)
    if not pd.api.types.is_float_dtype(out["value"]):
        try:
            out["value"] = pd.to_numeric(out["value"]).astype(np.float64)
        except (TypeError, ValueError) as err:
            raise WhichloraError(f"column 'value' must be numeric: {err}.") from err
    key = ["technique", "seed", "language", "example_id", "metric"]
    dup = out.duplicated(key, keep=False)
    if dup.any():
        row = out.loc[dup, key].iloc[0].to_dict()
        raise WhichloraError(f"duplicated score rows for {row}; keep one value per "
                             "(technique, seed, language, example_id, metric).")  # fmt: skip
    return out[np.isfinite(out["value"])]


def _resolution(values: np.ndarray) -> float:
    """Smallest gap between distinct values: 1 for 0/1 scores, ~0 for continuous ones."""
    distinct = np.unique(values[np.isfinite(values)])
    return float(np.diff(distinct).min()) if len(distinct) >= 2 else 0.0


def _compare_family(sub: pd.DataFrame, family: str, metric: str, options: VerdictOptions,
                    margin: float, hib: bool) -> list[dict[str, Any]]:  # fmt: skip
    wide = _wide(sub)
    means = _family_means(wide)
    resolution = _resolution(sub["value"].to_numpy(dtype=np.float64))
    rows = []
    for tech in sorted(set(sub["technique"]) - {options.baseline}):
        fit = _fit(wide, tech, options.baseline, resolution)
        if fit.design is None and fit.n_seeds == 1:
            fit.design = _planning_design(fit, means)
        p_diff, p_eq = _tests(fit.estimate, fit.se, fit.df, margin)
        crit = stats.t.ppf(1 - options.alpha / 2, fit.df) if fit.df > 0 else math.nan
        rows.append({
            "technique": tech, "baseline": options.baseline, "family": family, "metric": metric,
            "higher_is_better": hib, "margin": margin, "estimate": fit.estimate,
            "ci_low": fit.estimate - crit * fit.se, "ci_high": fit.estimate + crit * fit.se,
            "se": fit.se, "df": fit.df, "p_difference": p_diff, "p_equivalence": p_eq,
            "n_seeds": fit.n_seeds, "n_languages": fit.n_languages, "n_items": fit.n_items,
            "seed_variance": fit.mode, "note": fit.note, "_fit": fit,
        })  # fmt: skip
    return rows


def _decide(row: dict[str, Any], alpha: float, n_tests: int) -> tuple[str, str]:
    est, lo, hi, m = row["estimate"], row["ci_low"], row["ci_high"], row["margin"]
    if not math.isfinite(row["p_difference"]):
        return "inconclusive", row["note"] or (
            "no score varied between the compared runs: nothing to estimate uncertainty from"
        )
    good = est > 0 if row["higher_is_better"] else est < 0
    ci = f"95% CI [{lo:.4g}, {hi:.4g}]"
    notes = [row["note"]] if row["note"] else []
    holm_txt = f"after Holm correction over {n_tests} comparisons"
    if row["p_equivalence_holm"] < alpha:
        if row["p_difference"] < alpha:
            notes.append(f"the difference {est:.3g} is detectable but smaller than the margin "
                         f"+-{m:g}: practically equivalent")  # fmt: skip
        if lo < -m or hi > m:
            notes.append(f"{ci} reaches past +-{m:g}; equivalence uses the 90% interval (TOST)")
        return "equivalent", "; ".join(notes)
    if row["p_difference_holm"] < alpha:
        return ("better" if good else "worse"), "; ".join(notes)
    if row["p_difference"] < alpha:
        notes.append(f"{ci} excludes 0 but not {holm_txt}")
    elif row["p_equivalence"] < alpha:
        notes.append(f"within +-{m:g} on its own but not {holm_txt}")
    else:
        notes.append(f"{ci} spans 0 and reaches past the margin +-{m:g}: the data cannot tell")
    return "inconclusive", "; ".join(notes)


def _views(row: dict[str, Any], options: VerdictOptions) -> None:
    fit: _Fit = row["_fit"]
    sign = 1.0 if row["higher_is_better"] else -1.0
    row.update(p_bayes_better=math.nan, p_bayes_equivalent=math.nan, p_bayes_worse=math.nan,
               aso_epsilon=math.nan)  # fmt: skip
    if options.bayes and len(fit.lang_diffs) >= 2:
        from baycomp import SignedRankTest

        x = sign * fit.lang_diffs  # good direction: x > 0 means the technique is better
        # baycomp's p_left is P(x - y > rope): with y = 0 that is "technique better".
        pl, pe, pr = SignedRankTest.probs(x, np.zeros_like(x), rope=row["margin"],
                                          nsamples=4000, random_state=options.seed)  # fmt: skip
        row.update(p_bayes_better=pl, p_bayes_equivalent=pe, p_bayes_worse=pr)
    if options.aso and fit.n_seeds >= 3:
        import warnings

        from deepsig import aso

        with warnings.catch_warnings():  # "division by zero" when the two sets never overlap
            warnings.simplefilter("ignore")
            row["aso_epsilon"] = float(aso(sign * fit.seed_t, sign * fit.seed_b, num_jobs=1,
                                           show_progress=False, num_bootstrap_iterations=100,
                                           dt=0.01, seed=options.seed))  # fmt: skip


def _evidence(row: dict[str, Any], options: VerdictOptions, alpha_family: float) -> None:
    """MDE and the seeds or items that would settle an inconclusive comparison (80% power).

    Where the data cannot yet carry a claim (one shared seed, a language with one item) the
    minimum is what makes a verdict possible at all, and the power calculation on top of it
    uses a planning guess of the missing variance; the note says which."""
    fit: _Fit = row["_fit"]
    row.update(mde=math.nan, more_seeds=None, more_items=None)
    one_seed = fit.n_seeds == 1
    advice = []
    if one_seed:
        advice.append(f"run {row['technique']} with at least 1 more seed")
    if fit.few_items:
        advice.append("score >= 2 items per language")
    if not options.power or fit.design is None:
        if advice:
            row["note"] = "; ".join([row["note"], "to settle: " + " and ".join(advice)])
            row["more_seeds"] = 1 if one_seed else None
            row["more_items"] = 2 if fit.few_items else None
        return
    row["mde"] = pw.mde(fit.design, alpha_family, options.power_target)
    if row["verdict"] != "inconclusive":
        return
    args = (row["estimate"], row["margin"], fit.design, alpha_family, options.power_target)
    if advice:
        guess = []
        if one_seed:
            k = pw.more_seeds(*args)
            row["more_seeds"] = k
            guess.append(f"{k} more seed(s) for 80% power" if k else
                         "more than 20 more seeds for 80% power")  # fmt: skip
        if fit.few_items:
            n = pw.more_items(*args)
            row["more_items"] = max(n, 2) if n else None
            guess.append(f"{max(n, 2)} items per language for 80% power" if n else
                         "over 10x today's items for 80% power")  # fmt: skip
        row["note"] = "; ".join([row["note"], "to settle: " + " and ".join(advice)
                                 + " (planning guess: " + ", ".join(guess) + ")"])  # fmt: skip
        return
    row["more_seeds"] = pw.more_seeds(*args)
    row["more_items"] = pw.more_items(*args)


def _bound(r: pd.Series, sfx: str, worst: bool, alpha: float) -> bool:
    """Non-inferior (worst=True) or non-superior, one-sided at alpha, in the good direction."""
    g = r[f"estimate{sfx}"] * (1 if r["higher_is_better_s"] else -1)
    se, df, m = r[f"se{sfx}"], r[f"df{sfx}"], r[f"margin{sfx}"]
    if not (math.isfinite(se) and se > 0):  # no variance estimated: no claim
        return False
    z = (g + m) / se if worst else (m - g) / se
    return bool(stats.t.sf(z, df) < alpha)


def _tradeoff(rows: pd.DataFrame, alpha: float, seen_family: str = "transfer_seen",
              retention_family: str = "retention") -> list[dict[str, Any]]:  # fmt: skip
    out = []
    seen, ret = rows[rows["family"] == seen_family], rows[rows["family"] == retention_family]
    both = seen.merge(ret, on=["technique", "metric"], suffixes=("_s", "_r"))
    s_word = _ROLE_WORDS["transfer_seen"] if seen_family == "transfer_seen" else seen_family
    r_word = _ROLE_WORDS["retention"] if retention_family == "retention" else retention_family
    s_short = "transfer" if seen_family == "transfer_seen" else seen_family
    for _, r in both.iterrows():
        v = (r["verdict_s"], r["verdict_r"])

        if v == ("equivalent", "equivalent"):
            verdict, note = "equivalent", f"equivalent on {s_word} and {r_word}"
        elif (v[0] == "better" and _bound(r, "_r", True, alpha)) or (
            v[1] == "better" and _bound(r, "_s", True, alpha)
        ):
            verdict, note = "better", "better on one, not worse than the margin on the other"
        elif (v[0] == "worse" and _bound(r, "_r", False, alpha)) or (
            v[1] == "worse" and _bound(r, "_s", False, alpha)
        ):
            verdict, note = "worse", "worse on one, not better than the margin on the other"
        elif v == ("better", "worse"):
            verdict, note = "inconclusive", f"trades {r_word} for {s_short}"
        elif v == ("worse", "better"):
            verdict, note = "inconclusive", f"trades {s_short} for {r_word}"
        else:
            verdict, note = "inconclusive", f"{s_word} {v[0]}, {r_word} {v[1]}"
        out.append({
            "technique": r["technique"], "baseline": r["baseline_s"], "family": TRADEOFF,
            "metric": r["metric"], "higher_is_better": r["higher_is_better_s"],
            "margin": r["margin_s"], "verdict": verdict, "note": note,
            "n_seeds": min(r["n_seeds_s"], r["n_seeds_r"]),
            "n_languages": r["n_languages_s"] + r["n_languages_r"],
            "n_items": r["n_items_s"] + r["n_items_r"],
            "seed_variance": r["seed_variance_s"],
        })  # fmt: skip
    return out


def parse_roles(items: Iterable[str]) -> dict[str, str]:
    """`FAMILY=ROLE` pairs (the CLI's --role) as {family: role}."""
    out: dict[str, str] = {}
    for item in items:
        family, sep, role = str(item).rpartition("=")
        family, role = family.strip(), role.strip()
        if not sep or not family or role not in ROLES:
            raise WhichloraError(
                f"--role {item!r} is not FAMILY=ROLE with ROLE one of {', '.join(ROLES)}; e.g. "
                "--role xnli=transfer_seen --role arc_easy=retention."
            )
        if family in out and out[family] != role:
            raise WhichloraError(f"--role gives family {family!r} two roles ({out[family]}, "
                                 f"{role}); give it one.")  # fmt: skip
        out[family] = role
    return out


def _role_families(data: pd.DataFrame, roles: Mapping[str, str] | None) -> dict[str, str]:
    """role -> family: families named after a role (no `roles`), else exactly those given."""
    families = sorted(set(data["family"].astype(str)))
    if roles is None:
        return {f: f for f in FAMILIES if f in families}
    unknown = sorted(set(roles) - set(families))
    if unknown:
        raise WhichloraError(f"role(s) given to family {unknown}, which the score table does not "
                             f"have; its families are {families}. Fix the family names in "
                             "--role.")  # fmt: skip
    by_role: dict[str, str] = {}
    for family, role in sorted(roles.items()):
        if role not in ROLES:
            raise WhichloraError(f"role {role!r} of family {family!r} is not one of {list(ROLES)}.")
        if role in by_role:
            raise WhichloraError(
                f"role {role} is given to families {by_role[role]!r} and {family!r}; give each "
                "role to one family (label both families alike to judge them as one)."
            )
        by_role[role] = family
    return by_role


def judge(
    scores: pd.DataFrame, options: VerdictOptions, roles: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """One verdict row per (technique != baseline, family, metric), plus trade-off rows.

    Families are free labels. `roles` ({family: role}, roles in ROLES) says which family plays
    which part; without it, families named transfer_seen / transfer_unseen / retention play
    those (the study's). The trade-off row pairs, per metric, the transfer_seen family with the
    retention family; a table without both gets per-family verdicts only."""
    data = _validate(scores, options)
    role_family = _role_families(data, roles)
    order = [*FAMILIES, *sorted(set(data["family"].astype(str)) - set(FAMILIES))]
    by_family: dict[str, list[dict[str, Any]]] = {f: [] for f in order}
    for (family, metric), sub in data.groupby(["family", "metric"], sort=True):
        metric = str(metric)
        if options.baseline not in set(sub["technique"]):
            continue
        margin, hib = options.margin(metric), options.direction(metric)
        by_family[str(family)] += _compare_family(sub, str(family), metric, options, margin, hib)
    rows: list[dict[str, Any]] = []
    # Holm within each (family, metric): the techniques compared on one question in one metric.
    # Metrics are separate endpoints (the report leads with one); correcting across them would
    # let the number of metrics recorded change the verdict on the one that matters.
    groups: list[list[dict[str, Any]]] = []
    for family in order:
        by_metric: dict[str, list[dict[str, Any]]] = {}
        for r in by_family[family]:
            by_metric.setdefault(r["metric"], []).append(r)
        groups += list(by_metric.values())
    for fam_rows in groups:
        p_diff = holm([r["p_difference"] for r in fam_rows])
        p_eq = holm([r["p_equivalence"] for r in fam_rows])
        n_tests = int(np.isfinite([r["p_difference"] for r in fam_rows]).sum())
        alpha_family = options.alpha / max(n_tests, 1)
        for row, pd_h, pe_h in zip(fam_rows, p_diff, p_eq, strict=True):
            row["p_difference_holm"], row["p_equivalence_holm"] = float(pd_h), float(pe_h)
            row["verdict"], row["note"] = _decide(row, options.alpha, n_tests)
            _evidence(row, options, alpha_family)
            _views(row, options)
            del row["_fit"]
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=VERDICT_COLUMNS)
    out = pd.DataFrame(rows)
    seen_family, retention_family = role_family.get("transfer_seen"), role_family.get("retention")
    if seen_family and retention_family and by_family[seen_family] and by_family[retention_family]:
        pair = _tradeoff(out, options.alpha, seen_family, retention_family)
        if roles is not None and not pair:
            raise WhichloraError(
                f"families {seen_family!r} (transfer_seen) and {retention_family!r} (retention) "
                "share no metric, so they make no trade-off row (it compares one metric on "
                "both). Fix: score both with the same metric name, or drop --role."
            )
        out = pd.concat([out, pd.DataFrame(pair)], ignore_index=True)
    for col in ("more_seeds", "more_items"):
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out[VERDICT_COLUMNS + [c for c in out.columns if c not in VERDICT_COLUMNS]]


def language_intervals(scores: pd.DataFrame, options: VerdictOptions) -> pd.DataFrame:
    """Per-language intervals from the same estimator, each language its own family."""
    data = _validate(scores, options)
    data["family"] = "retention"  # placeholder: each language is judged alone below
    quick = replace(options, bayes=False, aso=False, power=False)
    rows = []
    for (language, metric), sub in data.groupby(["language", "metric"], sort=True):
        if options.baseline not in set(sub["technique"]):
            continue
        margin, hib = quick.margin(str(metric)), quick.direction(str(metric))
        for r in _compare_family(sub, "retention", str(metric), quick, margin, hib):
            rows.append({"technique": r["technique"], "language": language, "metric": metric,
                         "estimate": r["estimate"], "ci_low": r["ci_low"],
                         "ci_high": r["ci_high"], "n_seeds": r["n_seeds"],
                         "seed_variance": r["seed_variance"]})  # fmt: skip
    cols = ["technique", "language", "metric", "estimate", "ci_low", "ci_high", "n_seeds",
            "seed_variance"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def evidence_sentence(verdicts: pd.DataFrame) -> str:
    """One sentence: how much more evidence would settle the inconclusive comparisons."""
    rows = verdicts[(verdicts["verdict"] == "inconclusive") & (verdicts["family"] != TRADEOFF)]
    if rows.empty:
        return "Nothing is inconclusive: every comparison is settled."
    total = len(rows)
    seeds = pd.to_numeric(rows["more_seeds"], errors="coerce")
    items = pd.to_numeric(rows["more_items"], errors="coerce")
    if seeds.notna().any():
        k = int(np.nanmedian(seeds))
        settled = seeds <= k
        text = (f"{k} more seed{'s' if k != 1 else ''} would likely settle {int(settled.sum())} "
                f"of the {total} inconclusive comparisons (80% power)")  # fmt: skip
        extra = items.notna() & ~settled
    else:
        text = (
            f"More seeds (up to 20) would likely not settle any of the {total} inconclusive "
            "comparisons"
        )
        extra = items.notna()
    if extra.any():
        n = int(items[extra].median())
        text += f"; {n} items per language would settle {int((items[extra] <= n).sum())} more"
    return text + "."
