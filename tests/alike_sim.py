"""Representations with a known truth, for the alike statistic (analyze/alike.py).

Every model of a scenario is the base's hidden states plus a perturbation of them, at one layer:
    X(t, s) = X0 + X0 (a P_t + b Q_s + c_t E_ts)
P_t is the technique's own direction (shared by its seeds), Q_s the seed's data order (shared by
the techniques at that seed), E_ts the run's own noise. A technique that is LoRA has P_t = P_lora
and c_t = c_lora (the null); a different one adds `shift` R to P_t or has its own seed noise c_t.
X0 = content of parallel sentence i (shared by its translations) + language offset + noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from whichlora.analyze.alike import LayerCKA, compare_layer, judge, sentence_groups


@dataclass(frozen=True)
class Scenario:
    name: str
    seeds: int = 3  # seeds per technique, shared
    shift: float = 0.0  # technique-specific perturbation beyond LoRA's (0 = the null)
    noise_t: float | None = None  # the technique's own seed noise (None: LoRA's)
    techniques: int = 1
    layers: int = 1
    sentences: int = 30
    languages: int = 5
    dim: int = 48
    a: float = 1.0  # how far tuning moves the base (LoRA's direction)
    b: float = 0.05  # the seed's data order
    c: float = 0.1  # the run's own noise
    technique_seeds: int | None = None  # fewer seeds for the technique than LoRA
    # The model's language offsets, LoRA's direction and each technique's own direction are
    # drawn from this seed in every study (None: anew per study). theta depends on them, so a
    # scenario judged against its theta (near the margin) fixes them; a null holds in any.
    world: int | None = None


def _direction(rng: np.random.Generator, dim: int) -> np.ndarray:
    return rng.normal(size=(dim, dim)) / np.sqrt(dim)


def simulate(sc: Scenario, rng: np.random.Generator, margin: float = 0.01,
             alpha: float = 0.05, jackknife: bool = True) -> list[dict]:  # fmt: skip
    """One study: every technique x layer compared with LoRA, judged with Holm."""
    results = []
    n_t = sc.technique_seeds or sc.seeds
    world = rng if sc.world is None else np.random.default_rng(sc.world)
    for layer in range(sc.layers):
        d, n, langs = sc.dim, sc.sentences, sc.languages
        offset = world.normal(size=(langs, d)) * 1.5
        p_lora = _direction(world, d)
        own = [_direction(world, d) for _ in range(sc.techniques)]
        content = rng.normal(size=(n, d))
        x0 = np.concatenate([content + offset[j] + 0.5 * rng.normal(size=(n, d))
                             for j in range(langs)])  # fmt: skip
        seed_dir = [_direction(rng, d) for _ in range(sc.seeds)]

        def run(p: np.ndarray, c: float, s: int, x0: np.ndarray = x0,
                seed_dir: Sequence[np.ndarray] = seed_dir) -> np.ndarray:  # fmt: skip
            m = sc.a * p + sc.b * seed_dir[s] + c * _direction(rng, x0.shape[1])
            return x0 + x0 @ m

        mats = {f"lora{s}": run(p_lora, sc.c, s) for s in range(sc.seeds)}
        mats["base"] = x0
        techs = {}
        for k in range(sc.techniques):
            p_t = p_lora + sc.shift * own[k]
            c_t = sc.c if sc.noise_t is None else sc.noise_t
            techs[f"t{k}"] = {s: f"t{k}_{s}" for s in range(n_t)}
            mats.update({f"t{k}_{s}": run(p_t, c_t, s) for s in range(n_t)})
        cka = LayerCKA(mats)
        groups = sentence_groups(langs, n, 10) if jackknife else []
        lora = {s: f"lora{s}" for s in range(sc.seeds)}
        for name, seeds in techs.items():
            row = compare_layer(cka, seeds, lora, margin=margin, alpha=alpha, groups=groups,
                                base="base")  # fmt: skip
            row.update(technique=name, layer=layer, n_technique_seeds=n_t,
                       n_baseline_seeds=sc.seeds)  # fmt: skip
            results.append(row)
    return judge(results, alpha)


def rates(sc: Scenario, sims: int, seed: int = 0, margin: float = 0.01) -> dict[str, float]:
    """Share of (technique, layer) answers that were alike / differs / cannot tell, and the
    share of studies with at least one 'differs' (the family-wise rate)."""
    rng = np.random.default_rng(seed)
    with threadpool_limits(1):  # small products: threads only fight each other
        return _rates(sc, sims, rng, margin)


def _rates(sc: Scenario, sims: int, rng: np.random.Generator, margin: float) -> dict[str, float]:
    counts = {"alike": 0, "differs": 0, "cannot tell": 0}
    any_differs = 0
    total = 0
    for _ in range(sims):
        rows = simulate(sc, rng, margin)
        for r in rows:
            counts[r["verdict"]] += 1
            total += 1
        any_differs += any(r["verdict"] == "differs" for r in rows)
    out = {k: v / total for k, v in counts.items()}
    out["any_differs"] = any_differs / sims
    return out


def truth(sc: Scenario, seed: int = 0, reps: int = 40, sentences: int = 200) -> float:
    """The population value of the compared quantity: mean over many seeds and sentences."""
    big = Scenario(**{**sc.__dict__, "sentences": sentences, "layers": 1, "techniques": 1,
                      "seeds": 4, "technique_seeds": None})  # fmt: skip
    rng = np.random.default_rng(seed)
    with threadpool_limits(1):
        values = [simulate(big, rng, jackknife=False)[0]["estimate"] for _ in range(reps)]
    return float(np.mean(values))


# The scenarios of scripts/alike_error_rates.py (margin 0.01). Where theta is not 0 the world is
# fixed (world=1) and theta, measured with truth() (200 sentences x 4 seeds x 20 studies), is:
# inside 0.0054, at the margin 0.0106, outside 0.0193, far 0.0548, wild technique seeds 0.0317.
SCENARIOS = {
    "null_2_seeds": Scenario("null_2_seeds", seeds=2, layers=4, techniques=2),
    "null_3_seeds": Scenario("null_3_seeds", seeds=3, layers=4, techniques=2),
    "null_5_seeds": Scenario("null_5_seeds", seeds=5, layers=4, techniques=2),
    "null_noisy_seeds_3": Scenario("null_noisy_seeds_3", seeds=3, c=0.4, b=0.2),
    "null_very_noisy_seeds_5": Scenario("null_very_noisy_seeds_5", seeds=5, c=0.8, b=0.3),
    "inside_margin_2_seeds": Scenario("inside_margin_2_seeds", seeds=2, shift=0.23, world=1),
    "inside_margin_3_seeds": Scenario("inside_margin_3_seeds", seeds=3, shift=0.23, world=1),
    "at_margin_3_seeds": Scenario("at_margin_3_seeds", seeds=3, shift=0.33, world=1),
    "at_margin_5_seeds": Scenario("at_margin_5_seeds", seeds=5, shift=0.33, world=1),
    "outside_margin_3_seeds": Scenario("outside_margin_3_seeds", seeds=3, shift=0.46, world=1),
    "far_2_seeds": Scenario("far_2_seeds", seeds=2, shift=0.9, world=1),
    "far_3_seeds": Scenario("far_3_seeds", seeds=3, shift=0.9, world=1),
    "wild_technique_seeds_3": Scenario("wild_technique_seeds_3", seeds=3, noise_t=0.6, world=1),
    "one_technique_seed": Scenario("one_technique_seed", seeds=3, technique_seeds=1, shift=0.9,
                                   world=1),  # fmt: skip
}
