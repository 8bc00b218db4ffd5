"""Named simulation scenarios shared by tests/test_verdicts.py and scripts/verdict_error_rates.py.

Metric nll (lower is better), default margin 0.02. An effect is the true family difference of a
technique minus lora.
"""

from __future__ import annotations

from verdict_sim import Scenario

NULL6 = {"lora": 0.0, **{f"t{i}": 0.0 for i in range(1, 6)}}

SCENARIOS = {
    # seed noise (technique x seed, SD 0.05) dominates the item noise of a family mean (~0.01)
    "null_seed_noise_3_seeds": Scenario("null_seed_noise_3_seeds", sd_seed_tech=0.05),
    "null_seed_noise_2_seeds": Scenario("null_seed_noise_2_seeds", seeds=2, sd_seed_tech=0.05),
    "null_seed_noise_5_seeds": Scenario("null_seed_noise_5_seeds", seeds=5, sd_seed_tech=0.05),
    "null_6_techniques_2_seeds": Scenario(
        "null_6_techniques_2_seeds", effects=NULL6, seeds=2, sd_seed_tech=0.05
    ),
    "null_1_seed": Scenario("null_1_seed", seeds=1, sd_seed_tech=0.05),
    # item x technique noise that is the same in every seed (only more items shrink it)
    "null_item_noise_3_seeds": Scenario(
        "null_item_noise_3_seeds", sd_seed_tech=0.005, sd_item_tech=0.3, sd_resid=0.2
    ),
    # one technique far more seed-sensitive than the rest (as AdaLoRA at a high rate is): pooling
    # its noise with the stable ones would call its seed luck an effect
    "null_heterogeneous_seed_noise": Scenario(
        "null_heterogeneous_seed_noise",
        effects={"lora": 0.0, "stable1": 0.0, "stable2": 0.0, "stable3": 0.0, "wild": 0.0},
        seeds=3,
        sd_seed_tech=0.005,
        sd_seed_tech_by={"wild": 0.08},
    ),
    "large_effect_3_seeds": Scenario(
        "large_effect_3_seeds", effects={"lora": 0.0, "new": -0.2}, sd_seed_tech=0.03
    ),
    "zero_effect_tight": Scenario(
        "zero_effect_tight", seeds=5, items=100, sd_seed_tech=0.003, sd_item_tech=0.02,
        sd_resid=0.05,
    ),
    "effect_2x_margin_tight": Scenario(
        "effect_2x_margin_tight", effects={"lora": 0.0, "new": 0.04}, seeds=5, items=100,
        sd_seed_tech=0.003, sd_item_tech=0.02, sd_resid=0.05,
    ),
    "effect_2x_margin_loose": Scenario(
        "effect_2x_margin_loose", effects={"lora": 0.0, "new": 0.04}, seeds=3,
        sd_seed_tech=0.02,
    ),
}
