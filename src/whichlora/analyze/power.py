"""What more evidence would settle an inconclusive verdict: power from the study's own variances.

The variance of a family difference (see ``verdicts``) splits into three parts estimated from the
study itself: ``seed`` (technique x seed interaction, shrinks only with more seeds), ``resid``
(item noise that changes from seed to seed, shrinks with seeds x items) and ``item`` (technique x
item interaction, the same items in every seed, shrinks only with more items). With S' seeds and a
factor f more items per language:

    var(S', f) = (seed + resid / f) / S' + item / f

The df is Satterthwaite's over the seed part (S' - 1 df) and the item part (its own df, growing
with the items). Power uses the noncentral t for the difference test and a t approximation of
TOST for the equivalence test, at the Bonferroni alpha of the family (Holm's first step:
conservative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

__all__ = ["Design", "mde", "more_items", "more_seeds", "power"]

MAX_EXTRA_SEEDS = 20
MAX_ITEM_FACTOR = 10.0
MAX_DF = 1e6  # the normal limit, where a variance is known (scipy's noncentral t needs finite df)


@dataclass(frozen=True)
class Design:
    """Variance components of one comparison at its current size (S seeds, n items/language)."""

    seed: float
    resid: float
    item: float
    n_seeds: int
    n_items: float  # mean items per language
    df_item: float = MAX_DF  # df of the item part at today's items (inf: none estimated)

    def se(self, seeds: int, factor: float = 1.0) -> float:
        return math.sqrt(max((self.seed + self.resid / factor) / seeds + self.item / factor, 0.0))

    def df(self, seeds: int, factor: float = 1.0) -> float:
        """Satterthwaite df of the variance at `seeds` seeds and `factor` x today's items."""
        parts = [((self.seed + self.resid / factor) / seeds, seeds - 1.0),
                 (self.item / factor, self.df_item * factor)]  # fmt: skip
        parts = [(v, d) for v, d in parts if v > 0 and d > 0]
        if not parts:
            return max(seeds - 1.0, 1.0)
        denom = sum(v * v / d for v, d in parts)
        if denom <= 0:
            return MAX_DF
        return min(max(sum(v for v, _ in parts) ** 2 / denom, 1.0), MAX_DF)


def power(
    delta: float, margin: float, design: Design, alpha: float, seeds: int, factor: float = 1.0
) -> float:
    """Probability of a conclusive verdict if the true difference is ``delta``.

    Difference test when |delta| > margin (the verdict to reach is better/worse), else the
    equivalence test (TOST against +-margin).
    """
    se = design.se(seeds, factor)
    df = design.df(seeds, factor)
    if se <= 0:
        return 1.0
    if abs(delta) > margin:
        crit = stats.t.ppf(1 - alpha / 2, df)
        nc = delta / se
        return float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    crit = stats.t.ppf(1 - alpha, df)
    # TOST rejects when -margin + crit*se < estimate < margin - crit*se (se treated as known).
    hi = (margin - crit * se - delta) / se
    lo = (-margin + crit * se - delta) / se
    return float(max(stats.t.cdf(hi, df) - stats.t.cdf(lo, df), 0.0))


def mde(design: Design, alpha: float, target: float) -> float:
    """Smallest |difference| the difference test finds with probability ``target`` as designed."""
    df = design.df(design.n_seeds)
    crit = stats.t.ppf(1 - alpha / 2, df)
    return float((crit + stats.t.ppf(target, df)) * design.se(design.n_seeds))


def more_seeds(
    delta: float, margin: float, design: Design, alpha: float, target: float
) -> int | None:
    """Fewest extra seeds (1..20) reaching ``target`` power at today's items, else None."""
    for extra in range(1, MAX_EXTRA_SEEDS + 1):
        if power(delta, margin, design, alpha, design.n_seeds + extra) >= target:
            return extra
    return None


def more_items(
    delta: float, margin: float, design: Design, alpha: float, target: float
) -> int | None:
    """Fewest items per language (up to 10x today) reaching ``target`` power, else None."""
    n = max(design.n_items, 1.0)
    lo, hi = int(math.floor(n)), int(math.ceil(n * MAX_ITEM_FACTOR))

    def enough(items: int) -> bool:
        return power(delta, margin, design, alpha, design.n_seeds, items / n) >= target

    if not enough(hi):
        return None
    while hi - lo > 1:  # power grows with items: bisect for the smallest that is enough
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi
