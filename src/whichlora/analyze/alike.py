"""Are a technique's layer-wise representations alike LoRA's? Per layer, against LoRA's seed floor.

Two LoRA runs that differ only in their seed already disagree a little inside the model; a
technique is "alike" LoRA at a layer when its models sit no further from LoRA's than that floor
plus a margin, and "differs" when they sit detectably further. Linear CKA (Kornblith et al. 2019)
between the hidden states of the same parallel sentences compares two models at one layer.

The quantity, per (technique T, layer) over the seeds T shares with the baseline L, s != s':

    D(s, s') = [1 - CKA(T_s, L_s')] - [1 - CKA(L_s, L_s')]

how much further T's model of seed s sits from an independent LoRA model (seed s') than LoRA's
own model of seed s does. Seed s is the block (both saw the same data order, as in the verdicts),
L_s' the reference; T_s and L_s never share the reference's seed, so a T identical to L gives
D = 0 in expectation. The estimate is the mean over seeds of D_s = mean_s' D(s, s'). It counts
the technique's own extra seed-to-seed scatter too: a technique whose models scatter more than
LoRA's sits further from any one LoRA model, which is what "alike" is about; the payload's
floor_technique (T against itself across seeds) shows when that is the reason.

- Seed part of the variance: Var(D_s) / S, df S - 1 (the seed is the unit of replication; never
  pooled over techniques or layers, whose seed noise differs; see _seed_variance).
- Sentence part: delete-a-group jackknife over parallel sentences (a sentence and all its
  translations leave together), for how much the estimate depends on which sentences were used.
  df by Welch-Satterthwaite, with the seed part at its 90% upper bound as in the verdicts.
- Tests, one-sided because a technique cannot be "too alike" (the 90% interval's ends are the
  two tests before Holm): alike when the difference is below the margin (H0: theta >= margin),
  differs when it is above 0 (H0: theta <= 0). Holm over every (technique, layer) of a
  pooling, separately for each test; alike wins when both hold (a detectable excess inside the
  margin), else differs, else cannot tell.
- A claim needs >= 2 seeds shared with the baseline (so both have a seed floor); short of that
  the answer is "cannot tell" with what would settle it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from whichlora.analyze.measures import linear_cka
from whichlora.analyze.verdicts import holm
from whichlora.errors import WhichloraError

__all__ = [
    "ALIKE",
    "CANNOT_TELL",
    "DEFAULT_CKA_MARGIN",
    "DIFFERS",
    "JACKKNIFE_GROUPS",
    "MARGIN_KEY",
    "LayerCKA",
    "alike_rows",
    "compare_layer",
    "judge",
    "sentence_groups",
]

ALIKE, DIFFERS, CANNOT_TELL = "alike", "differs", "cannot tell"
MARGIN_KEY = "cka"  # analysis.margins: {cka: VALUE}, in units of linear CKA
# A technique may sit one CKA point (0.01) further from LoRA than LoRA's own reruns do: an order
# of magnitude below the spread between networks trained from different initialisations, layer
# by layer (Kornblith et al. 2019), and far above sentence-sampling noise. docs/alike.md.
DEFAULT_CKA_MARGIN = 0.01
JACKKNIFE_GROUPS = 10
IDENTICAL = 1e-9  # CKA of identical vectors is 1 up to float rounding
UPPER_LEVEL = 0.9  # the seed part enters the df at this upper confidence bound (as verdicts)
MAX_DF = 1e6
MAX_GRAM_ROWS = 4096
MAX_SEEDS = 20


# --------------------------------------------------------------------------- CKA on row subsets


class LayerCKA:
    """Linear CKA between models at one layer, on all rows or on a subset of them.

    Centred Grams are cheap to re-centre on a subset, so the jackknife over sentences reuses
    each model's Gram; above MAX_GRAM_ROWS rows the feature-space formula is used instead.
    """

    def __init__(self, mats: Mapping[str, np.ndarray]) -> None:
        self.mats = {k: np.asarray(v, dtype=np.float64) for k, v in mats.items()}
        n = {x.shape[0] for x in self.mats.values()}
        if len(n) != 1:
            raise WhichloraError(f"every model needs the same rows, got row counts {sorted(n)}.")
        self.n = n.pop()
        self.grams = {k: x @ x.T for k, x in self.mats.items()} if self.n <= MAX_GRAM_ROWS else None

    def pairs(
        self, pairs: Sequence[tuple[str, str]], rows: np.ndarray | None = None
    ) -> dict[tuple[str, str], float | None]:
        """CKA of every pair on `rows` (all when None); None where undefined (constant)."""
        names = sorted({name for pair in pairs for name in pair})
        if self.grams is None:
            out: dict[tuple[str, str], float | None] = {}
            for a, b in pairs:
                x = self.mats[a] if rows is None else self.mats[a][rows]
                y = self.mats[b] if rows is None else self.mats[b][rows]
                try:
                    out[(a, b)] = linear_cka(x, y)
                except WhichloraError:
                    out[(a, b)] = None
            return out
        centred, norms = {}, {}
        for name in names:
            k = self.grams[name] if rows is None else self.grams[name][np.ix_(rows, rows)]
            mean = k.mean(axis=0)
            centred[name] = k - mean[:, None] - mean[None, :] + mean.mean()
            norms[name] = float(np.linalg.norm(centred[name]))
        result: dict[tuple[str, str], float | None] = {}
        for a, b in pairs:
            denom = norms[a] * norms[b]
            result[(a, b)] = (
                None if denom <= 1e-12 else float(np.sum(centred[a] * centred[b]) / denom)
            )
        return result


def sentence_groups(n_languages: int, n_per_language: int, groups: int) -> list[np.ndarray]:
    """Rows kept when each group of parallel sentences is left out (a sentence leaves with all
    its translations: rows are grouped by language, sentence i at offset i in every block)."""
    g = min(groups, n_per_language)
    if g < 2:
        return []
    sentence = np.tile(np.arange(n_per_language), n_languages)
    return [np.flatnonzero(sentence % g != k) for k in range(g)]


# --------------------------------------------------------------------------- one layer


@dataclass
class _Pairs:
    """The model pairs one comparison needs, named by model key."""

    technique: dict[int, str]
    baseline: dict[int, str]
    seeds: list[int]

    def cross(self) -> list[tuple[str, str]]:
        """(technique of seed s, baseline of seed s') for shared seeds s != s'."""
        t, b, seeds = self.technique, self.baseline, self.seeds
        return [(t[s], b[r]) for s in seeds for r in seeds if r != s]

    def test(self) -> list[tuple[str, str]]:
        """What the estimate reads: the cross pairs and the baseline's seed pairs."""
        return self.cross() + self.floor(self.baseline, self.seeds)

    @staticmethod
    def floor(models: Mapping[int, str], seeds: Sequence[int]) -> list[tuple[str, str]]:
        return [(models[s], models[r]) for s in seeds for r in seeds if r < s]


def _differences(cka: Mapping[tuple[str, str], float | None], p: _Pairs) -> np.ndarray | None:
    """D(s, s') as a seeds x seeds matrix, NaN on the diagonal (None when a CKA is undefined)."""
    d = np.full((len(p.seeds), len(p.seeds)), np.nan)
    for i, s in enumerate(p.seeds):
        for j, r in enumerate(p.seeds):
            if r == s:
                continue
            cross = cka[(p.technique[s], p.baseline[r])]
            floor = cka[(p.baseline[max(s, r)], p.baseline[min(s, r)])]
            if cross is None or floor is None:
                return None
            d[i, j] = floor - cross  # (1 - cross) - (1 - floor)
    return d


def _seed_variance(d: np.ndarray) -> float:
    """Var(D_s) / S. Each D_s also reads the other seeds' baseline models as references, so the
    D_s are slightly correlated: in simulation this runs 0-10% below the estimate's true seed
    variance, while the jackknife over seeds (each seed leaving as block and as reference) ran
    26-71% above it at 5 to 3 seeds; the sentence part and the df bound make up the difference
    (docs/alike.md)."""
    return float(np.nanmean(d, axis=1).var(ddof=1)) / d.shape[0]


def _mean_distance(
    cka: Mapping[tuple[str, str], float | None], pairs: Sequence[tuple[str, str]]
) -> float | None:
    values = [cka.get(pair) for pair in pairs]
    if not values or any(v is None for v in values):
        return None
    # 1 - CKA >= 0; float rounding can leave -1e-16 for identical vectors
    return float(np.mean([max(1.0 - v, 0.0) for v in values if v is not None]))


def _upper(variance: float, df: float) -> float:
    return variance * df / float(stats.chi2.ppf(1 - UPPER_LEVEL, df))


def _satterthwaite(parts: Sequence[tuple[float, float]]) -> float:
    total = sum(v for v, _ in parts)
    denom = sum(v * v / df for v, df in parts if df > 0 and v > 0)
    if total <= 0 or denom <= 0:
        return MAX_DF
    return float(min(max(total * total / denom, 1.0), MAX_DF))


def compare_layer(
    cka: LayerCKA,
    technique: Mapping[int, str],
    baseline: Mapping[int, str],
    *,
    margin: float,
    alpha: float = 0.05,
    groups: Sequence[np.ndarray] = (),
    base: str | None = None,
) -> dict[str, Any]:
    """One (technique, layer) comparison with LoRA's seed floor, before Holm (see the module).

    `technique` and `baseline` map seed -> model key in `cka`; `groups` are the rows kept by
    each jackknife replicate (sentence_groups); `base` the base model's key, for how far the
    baseline moved the layer at all. Returns the payload with unadjusted one-sided p-values.
    """
    seeds = sorted(set(technique) & set(baseline))
    p = _Pairs(dict(technique), dict(baseline), seeds)
    out: dict[str, Any] = {
        "margin": margin, "n_seeds": len(seeds), "seeds": seeds, "estimate": math.nan,
        "se": math.nan, "df": math.nan, "ci_low": math.nan, "ci_high": math.nan,
        "p_alike": math.nan, "p_differs": math.nan, "seed_se": math.nan,
        "sentence_se": math.nan, "cross": None, "floor_baseline": None,
        "floor_technique": None, "baseline_drift": None, "note": "",
    }  # fmt: skip
    own = p.floor(p.technique, sorted(technique))
    drift = [(baseline[s], base) for s in sorted(baseline)] if base is not None else []
    full = cka.pairs(sorted({*p.test(), *own, *drift}))
    out["floor_technique"] = _mean_distance(full, own)
    out["baseline_drift"] = _mean_distance(full, drift)
    if len(seeds) < 2:
        return out
    out["cross"] = _mean_distance(full, p.cross())
    out["floor_baseline"] = _mean_distance(full, p.floor(p.baseline, seeds))
    matrix = _differences(full, p)
    if matrix is None:
        out["note"] = "CKA is undefined here (a model's vectors are constant at this layer)"
        return out
    S = len(seeds)  # noqa: N806 - the usual symbol
    d = np.nanmean(matrix, axis=1)  # D_s
    est = float(d.mean())
    seed_var = _seed_variance(matrix)
    replicates = []
    for rows in groups:
        r = _differences(cka.pairs(p.test(), rows), p)
        if r is not None:
            replicates.append(float(np.nanmean(r)))
    sent_var, sent_df = 0.0, 0.0
    if len(replicates) >= 2:
        rep = np.asarray(replicates)
        g = len(rep)
        sent_var = float((g - 1) / g * np.sum((rep - rep.mean()) ** 2))
        sent_df = float(g - 1)
    var = seed_var + sent_var
    se = math.sqrt(var)
    out.update(estimate=est, se=se, seed_se=math.sqrt(seed_var), sentence_se=math.sqrt(sent_var))
    if se <= IDENTICAL:
        if np.all(np.abs(d) <= IDENTICAL):
            out.update(df=MAX_DF, ci_low=0.0, ci_high=0.0, p_alike=0.0, p_differs=1.0)
            out["note"] = (
                "identical to the baseline's at every seed (the same models, or a layer "
                "neither changes)"
            )
        else:
            out["note"] = "no seed-to-seed or sentence variation: nothing estimates the noise"
        return out
    df = _satterthwaite([(_upper(seed_var, S - 1), S - 1), (sent_var, sent_df)])
    half = float(stats.t.ppf(1 - alpha, df)) * se
    out.update(
        df=df,
        ci_low=est - half,
        ci_high=est + half,
        p_alike=float(stats.t.cdf((est - margin) / se, df)),
        p_differs=float(stats.t.sf(est / se, df)),
    )
    out["_parts"] = (seed_var, S, sent_var, sent_df)
    return out


# --------------------------------------------------------------------------- verdicts


def _more_seeds(row: Mapping[str, Any], alpha: float) -> int | None:
    """Planning guess: seeds (shared with the baseline) at which the test would decide if the
    estimate and the per-seed noise stayed as they are; the sentence part does not shrink."""
    parts = row.get("_parts")
    if parts is None:
        return None
    seed_var, S, sent_var, sent_df = parts  # noqa: N806
    est, margin = row["estimate"], row["margin"]
    for n in range(S + 1, MAX_SEEDS + 1):
        v_seed = seed_var * S / n
        se = math.sqrt(v_seed + sent_var)
        df = _satterthwaite([(_upper(v_seed, n - 1), n - 1), (sent_var, sent_df)])
        t = float(stats.t.ppf(1 - alpha, df))
        if est + t * se < margin or est - t * se > 0:
            return n - S
    return None


def judge(
    results: Sequence[dict[str, Any]], alpha: float = 0.05, baseline: str = "lora"
) -> list[dict[str, Any]]:
    """Holm over all the comparisons given (one pooling: every technique x layer), separately
    for the alike and the differs test; the verdict and its note on each. Each result needs
    'technique' (label) besides compare_layer's payload."""
    p_alike = holm([r["p_alike"] for r in results])
    p_differs = holm([r["p_differs"] for r in results])
    n_tests = int(np.isfinite(p_alike).sum())
    out = []
    for r, pa, pd_ in zip(results, p_alike, p_differs, strict=True):
        row = dict(r)
        row.update(p_alike_holm=float(pa), p_differs_holm=float(pd_), baseline=baseline)
        row["verdict"], row["note"] = _verdict(row, alpha, n_tests)
        row["more_seeds"] = _more_seeds(row, alpha / max(n_tests, 1)) if (
            row["verdict"] == CANNOT_TELL) else None  # fmt: skip
        row.pop("_parts", None)
        out.append(row)
    return out


def _verdict(row: Mapping[str, Any], alpha: float, n_tests: int) -> tuple[str, str]:
    technique, baseline = row["technique"], row["baseline"]
    if row["n_seeds"] < 2:
        short = [
            name
            for name, k in (
                (technique, row.get("n_technique_seeds", 0)),
                (baseline, row.get("n_baseline_seeds", 0)),
            )
            if k < 2
        ]
        who = " and ".join(short) or f"{technique} and {baseline} on the same seeds"
        return CANNOT_TELL, (
            f"needs >= 2 seeds shared by {technique} and {baseline} (has {row['n_seeds']}): "
            f"run {who} with more seeds so each has a seed floor"
        )
    if row["note"] and not math.isfinite(row["p_alike"]):
        return CANNOT_TELL, row["note"]
    drift = row.get("baseline_drift")
    lo, hi, m = row["ci_low"], row["ci_high"], row["margin"]
    ci = f"90% CI [{lo:.3g}, {hi:.3g}]"
    if row["p_alike_holm"] < alpha:
        note = row["note"] or f"{ci} stays below the margin {m:g}"
        if row["p_differs_holm"] < alpha:
            note += "; detectably further than the seed floor, but inside the margin"
        if drift is not None and drift < m:
            note += f"; {baseline} moved this layer from the base by only {drift:.3g}"
        return ALIKE, note
    if row["p_differs_holm"] < alpha:
        return DIFFERS, f"{ci} lies above {baseline}'s seed floor"
    why = []
    if lo > 0 or hi < m:
        why.append(f"{ci} decides it alone, but not after Holm over {n_tests} tests")
    else:
        why.append(f"{ci} spans 0 and reaches past the margin {m:g}")
    return CANNOT_TELL, "; ".join(why)


# --------------------------------------------------------------------------- the analysis rows


def alike_rows(
    reps: Mapping[str, Any],
    runs: Mapping[str, tuple[str, int]],
    baseline: str,
    poolings: Sequence[str],
    *,
    alpha: float = 0.05,
    margin: float = DEFAULT_CKA_MARGIN,
    base: str | None = "base",
    groups: int = JACKKNIFE_GROUPS,
) -> list[dict[str, Any]]:
    """Rows of the `alike` table: one per (technique, pooling, layer) for every technique but
    the baseline, its verdict and the whole comparison as a JSON payload.

    `reps` maps model -> Representations (the base under `base`), `runs` run_id -> (label,
    seed) for the runs compared. Holm runs over every technique x layer of one pooling.
    """
    import json

    from whichlora.analyze.verdict_rows import json_safe

    by_label: dict[str, dict[int, str]] = {}
    for run_id, (label, seed) in runs.items():
        if run_id in reps:
            by_label.setdefault(label, {})[int(seed)] = run_id
    others = [label for label in by_label if label != baseline]
    if baseline not in by_label or not others:
        return []
    first = reps[by_label[baseline][min(by_label[baseline])]]
    kept = sentence_groups(len(first.languages), first.n_per_language, groups)
    base_key = base if base is not None and base in reps else None
    models = sorted({*(m for seeds in by_label.values() for m in seeds.values()),
                     *([base_key] if base_key else [])})  # fmt: skip
    rows: list[dict[str, Any]] = []
    for pooling in poolings:
        results = []
        for layer in range(first.n_layers):
            cka = LayerCKA({m: reps[m].stacked(pooling, layer) for m in models})
            for label in others:
                row = compare_layer(
                    cka, by_label[label], by_label[baseline], margin=margin, alpha=alpha,
                    groups=kept, base=base_key,
                )  # fmt: skip
                row.update(
                    technique=label, pooling=pooling, layer=layer,
                    n_technique_seeds=len(by_label[label]),
                    n_baseline_seeds=len(by_label[baseline]),
                    n_sentences=first.n_per_language, n_languages=len(first.languages),
                )  # fmt: skip
                results.append(row)
        for row in judge(results, alpha, baseline):
            text = json.dumps(json_safe(row), sort_keys=True, allow_nan=False, ensure_ascii=False)
            rows.append({"technique": row["technique"], "pooling": pooling, "layer": row["layer"],
                         "verdict": row["verdict"], "payload": text})  # fmt: skip
    return rows
