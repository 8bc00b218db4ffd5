"""Named simulation scenarios shared by tests/test_verdicts.py and scripts/verdict_error_rates.py.

Metric nll (lower is better, margin 0.02) unless a scenario says mc_acc (0/1, higher is better,
margin 0.01). An effect is the true family difference of a technique minus lora. The designs are
the ones users run: the baseline with three seeds and others with one or two, seed noise that
differs 10-30x between techniques, 1, 2 or 5 items per language, 0/1 scores on few items.
"""

from __future__ import annotations

from verdict_sim import Scenario

NULL6 = {"lora": 0.0, **{f"t{i}": 0.0 for i in range(1, 6)}}
FIVE = ("lora", "dora", "vera", "adalora", "pissa")  # the paper's five: lora and four rivals
NULL5 = {t: 0.0 for t in FIVE}
# stable baseline and rival, three seed-sensitive techniques (10-30x the SD of the stable ones);
# the seed's effect shared by all techniques is small, as for greedy answers that barely move
MIXED_NOISE = {"lora": 0.003, "dora": 0.003, "vera": 0.03, "adalora": 0.06, "pissa": 0.09}
MIXED = {"effects": NULL5, "sd_seed": 0.003, "sd_resid": 0.02, "sd_seed_tech_by": MIXED_NOISE}

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
    # one technique far more seed-sensitive than the rest (as AdaLoRA at a high rate is)
    "null_heterogeneous_seed_noise": Scenario(
        "null_heterogeneous_seed_noise",
        effects={"lora": 0.0, "stable1": 0.0, "stable2": 0.0, "stable3": 0.0, "wild": 0.0},
        seeds=3,
        sd_seed_tech=0.005,
        sd_seed_tech_by={"wild": 0.08},
    ),
    # the quickstart's shape: lora and dora with 3 seeds, three techniques with one seed each and
    # seed noise of their own, two items per language (chrF of its generations)
    "null_mixed_1_seed_2_items": Scenario(
        "null_mixed_1_seed_2_items", items=2, seeds_by={"vera": 1, "adalora": 1, "pissa": 1},
        **MIXED,
    ),
    "null_mixed_2_seeds_1_item": Scenario(
        "null_mixed_2_seeds_1_item", items=1, seeds_by={"vera": 2, "adalora": 2, "pissa": 2},
        **MIXED,
    ),
    "null_mixed_2_seeds_2_items": Scenario(
        "null_mixed_2_seeds_2_items", items=2, seeds_by={"vera": 2, "adalora": 2, "pissa": 2},
        **MIXED,
    ),
    "null_mixed_2_seeds_5_items": Scenario(
        "null_mixed_2_seeds_5_items", items=5, seeds_by={"vera": 2, "adalora": 2, "pissa": 2},
        **MIXED,
    ),
    # seed sensitivity that differs 3x between techniques: too little to see with three seeds
    "null_seed_noise_differs_3x": Scenario(
        "null_seed_noise_differs_3x", effects=NULL5, sd_seed=0.003, sd_seed_tech=0.01,
        sd_seed_tech_by={"pissa": 0.03}, sd_resid=0.05,
    ),
    # seed and item noise of the same size: neither df is the right one alone
    "null_seed_and_item_noise_alike": Scenario(
        "null_seed_and_item_noise_alike", effects=NULL5, sd_seed_tech=0.01, sd_item_tech=0.08,
        sd_resid=0.05,
    ),
    # 0/1 scores (knowledge accuracy) on few items
    "null_binary_5_items": Scenario(
        "null_binary_5_items", effects=NULL5, items=5, binary=True, metric="mc_acc",
        sd_seed_tech=0.1, sd_item_tech=0.3, sd_resid=0.3,
    ),
    "null_binary_20_items": Scenario(
        "null_binary_20_items", effects=NULL5, items=20, binary=True, metric="mc_acc",
        sd_seed_tech=0.1, sd_item_tech=0.3, sd_resid=0.3,
    ),
    "large_effect_3_seeds": Scenario(
        "large_effect_3_seeds", effects={"lora": 0.0, "new": -0.2}, sd_seed_tech=0.03
    ),
    "zero_effect_tight": Scenario(
        "zero_effect_tight", seeds=5, items=100, sd_seed_tech=0.003, sd_item_tech=0.02,
        sd_resid=0.05,
    ),
    # power in the designs the evidence study runs: three seeds, five techniques
    # (a) no difference; small seed noise; item noise drawn anew in every seed; the estimate's
    #     spread is a fifth of the margin
    "zero_effect_seed_varying_items_3_seeds": Scenario(
        "zero_effect_seed_varying_items_3_seeds", effects=NULL5, sd_seed_tech=0.002,
        sd_item_tech=0.0, sd_resid=0.05,
    ),
    # (b) the same with the item noise the same in every seed (a technique's items)
    "zero_effect_fixed_items_3_seeds": Scenario(
        "zero_effect_fixed_items_3_seeds", effects=NULL5, sd_seed_tech=0.002,
        sd_item_tech=0.035, sd_resid=0.01,
    ),
    # (c) an effect of three margins under noisy items
    "effect_3x_margin_noisy_items": Scenario(
        "effect_3x_margin_noisy_items", effects={"lora": 0.0, **{t: -0.06 for t in FIVE[1:]}},
        sd_seed_tech=0.005, sd_item_tech=0.1, sd_resid=0.05,
    ),
    "effect_3x_margin_seed_varying_items": Scenario(
        "effect_3x_margin_seed_varying_items",
        effects={"lora": 0.0, **{t: -0.06 for t in FIVE[1:]}}, sd_seed_tech=0.005,
        sd_item_tech=0.0, sd_resid=0.1,
    ),
    # what settles (a): five seeds
    "zero_effect_seed_varying_items_5_seeds": Scenario(
        "zero_effect_seed_varying_items_5_seeds", effects=NULL5, seeds=5, sd_seed_tech=0.002,
        sd_item_tech=0.0, sd_resid=0.05,
    ),
    # false equivalence: a true difference of twice the margin
    "effect_2x_margin_tight": Scenario(
        "effect_2x_margin_tight", effects={"lora": 0.0, "new": 0.04}, seeds=5, items=100,
        sd_seed_tech=0.003, sd_item_tech=0.02, sd_resid=0.05,
    ),
    "effect_2x_margin_loose": Scenario(
        "effect_2x_margin_loose", effects={"lora": 0.0, "new": 0.04}, seeds=3,
        sd_seed_tech=0.02,
    ),
    "effect_2x_margin_fixed_items": Scenario(
        "effect_2x_margin_fixed_items", effects={"lora": 0.0, "new": 0.04}, sd_seed_tech=0.002,
        sd_item_tech=0.035, sd_resid=0.01,
    ),
}
