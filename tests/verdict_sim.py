"""Score tables with a known truth, for testing verdicts by simulation (not part of the package).

value[t, s, l, i] = base_l + item_{l,i} + effect_t + lang_tech_{t,l} + seed_s + seed_tech_{t,s}
                    + item_tech_{t,l,i} + resid_{t,s,l,i}

(or a 0/1 draw with that logit, for accuracies). Techniques may run different numbers of seeds
(`seeds_by`) and have their own seed noise (`sd_seed_tech_by`), as real studies do.

Languages are fixed (lang_tech is centred over languages, so the true family difference of t
against the first technique is exactly effect_t - effect_0); items are sampled (item_tech is not
centred); seed_tech is the technique x seed noise that item-level methods mistake for effects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Scenario:
    name: str
    effects: Mapping[str, float] = field(default_factory=lambda: {"lora": 0.0, "new": 0.0})
    seeds: int = 3
    languages: int = 4
    items: int = 30
    sd_seed_tech: float = 0.03
    sd_seed: float = 0.05
    sd_item: float = 0.5
    sd_item_tech: float = 0.05
    sd_resid: float = 0.1
    sd_lang_tech: float = 0.01
    # per-technique technique x seed SD (techniques not named use sd_seed_tech)
    sd_seed_tech_by: Mapping[str, float] = field(default_factory=dict)
    metric: str = "nll"
    family: str = "transfer_seen"
    # seeds per technique where it differs from `seeds` (a technique runs seeds 0..k-1)
    seeds_by: Mapping[str, int] = field(default_factory=dict)
    # 0/1 scores: value is Bernoulli(sigmoid(logit 0.6 + the latent sum above, centred))
    binary: bool = False


def simulate(sc: Scenario, rng: np.random.Generator) -> pd.DataFrame:
    names = list(sc.effects)
    k, lg, n = len(names), sc.languages, sc.items
    s = max([sc.seeds, *sc.seeds_by.values()])
    eff = np.array([sc.effects[t] for t in names])[:, None, None, None]
    lang_tech = rng.normal(0, sc.sd_lang_tech, (k, 1, lg, 1))
    lang_tech -= lang_tech.mean(axis=2, keepdims=True)
    value = (
        3.0
        + rng.normal(0, 0.3, (1, 1, lg, 1))
        + rng.normal(0, sc.sd_item, (1, 1, lg, n))
        + eff
        + lang_tech
        + rng.normal(0, sc.sd_seed, (1, s, 1, 1))
        + rng.normal(0, 1.0, (k, s, 1, 1))
        * np.array([sc.sd_seed_tech_by.get(t, sc.sd_seed_tech) for t in names])[:, None, None, None]
        + rng.normal(0, sc.sd_item_tech, (k, 1, lg, n))
        + rng.normal(0, sc.sd_resid, (k, s, lg, n))
    )
    if sc.binary:
        p = 1.0 / (1.0 + np.exp(-(np.log(1.5) + value - 3.0)))
        value = (rng.uniform(size=value.shape) < p).astype(np.float64)
    t_idx, s_idx, l_idx, i_idx = np.indices(value.shape).reshape(4, -1)
    keep = s_idx < np.array([sc.seeds_by.get(t, sc.seeds) for t in names])[t_idx]
    t_idx, s_idx, l_idx, i_idx = t_idx[keep], s_idx[keep], l_idx[keep], i_idx[keep]
    return pd.DataFrame(
        {
            "technique": np.array(names)[t_idx],
            "seed": s_idx,
            "language": np.array([f"l{j}" for j in range(lg)])[l_idx],
            "example_id": i_idx,
            "metric": sc.metric,
            "value": value.ravel()[keep],
            "family": sc.family,
        }
    )


def error_rates(sc: Scenario, sims: int, seed: int = 0, **options: object) -> dict[str, float]:
    """Share of each verdict for every non-baseline technique over ``sims`` simulated studies."""
    from whichlora.analyze.verdicts import VerdictOptions, judge

    rng = np.random.default_rng(seed)
    names = list(sc.effects)
    opts = VerdictOptions(baseline=names[0], bayes=False, aso=False, power=False, **options)  # type: ignore[arg-type]
    counts: dict[str, dict[str, int]] = {t: {} for t in names[1:]}
    for _ in range(sims):
        out = judge(simulate(sc, rng), opts)
        out = out[out["family"] == sc.family]
        for t, v in zip(out["technique"], out["verdict"], strict=True):
            counts[t][v] = counts[t].get(v, 0) + 1
    return {
        f"{t}:{v}": counts[t].get(v, 0) / sims
        for t in names[1:]
        for v in ("better", "worse", "equivalent", "inconclusive")
    }
