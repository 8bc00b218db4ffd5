"""Trainable-parameter budgets against the real peft model on the tiny Llama (not a formula)."""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import pytest

from whichlora.errors import WhichloraError
from whichlora.techniques import REGISTRY, AdapterSettings
from whichlora.techniques.budget import (
    base_param_count,
    count_params,
    max_rank,
    resolve_settings,
    solve_rank,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TECHNIQUES = sorted(REGISTRY)
# The tiny Llama: hidden 64, intermediate 128, 2 kv heads of 16 -> k/v project 64 -> 32.
ALL_LINEAR_WIDTH = 32
# Rank solving is checked against a brute-force table over every rank; two module kinds (one per
# block) keep that table cheap yet still show LoKr's count falling back as the rank rises.
SOLVE_TARGETS = ["k_proj", "down_proj"]
SOLVE_WIDTH = 32


def real_trainable(loaded: Any, technique: str, settings: AdapterSettings) -> int:
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = get_peft_model(loaded.model, REGISTRY[technique].build_config(settings))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def count_table(tiny_config: Any) -> Any:
    """counts(technique) -> {rank: count} for every rank on SOLVE_TARGETS, computed once."""
    tables: dict[str, dict[int, int]] = {}

    def counts(technique: str) -> dict[int, int]:
        if technique not in tables:
            settings = AdapterSettings(target_modules=SOLVE_TARGETS)
            tables[technique] = {
                rank: count_params(tiny_config, REGISTRY[technique], replace(settings, rank=rank))
                for rank in range(1, SOLVE_WIDTH + 1)
            }
        return tables[technique]

    return counts


def nearest(table: dict[int, int], target: int) -> tuple[int, int]:
    """Brute force over every rank: nearest count, ties to the smaller rank."""
    rank = min(table, key=lambda r: (abs(table[r] - target), r))
    return rank, table[rank]


@pytest.mark.parametrize("target_modules", ["all-linear", ["q_proj", "v_proj"]])
@pytest.mark.parametrize("rank", [1, 5])
@pytest.mark.parametrize("technique", TECHNIQUES)
def test_count_params_equals_real_peft_model(
    technique: str, rank: int, target_modules: Any, tiny_config: Any, fresh_model: Any
) -> None:
    settings = AdapterSettings(rank=rank, target_modules=target_modules, total_steps=20)
    counted = count_params(tiny_config, REGISTRY[technique], settings)
    assert counted > 0
    assert counted == real_trainable(fresh_model(), technique, settings)


def test_count_params_follows_options(tiny_config: Any, fresh_model: Any) -> None:
    # AdaLoRA trains init_r ranks before pruning: the option must reach the count.
    settings = AdapterSettings(rank=2, options={"init_r": 6})
    counted = count_params(tiny_config, REGISTRY["adalora"], settings)
    assert counted == real_trainable(fresh_model(), "adalora", settings)
    assert counted > count_params(tiny_config, REGISTRY["adalora"], replace(settings, options={}))


def test_base_param_count_is_the_real_models(tiny_config: Any, fresh_model: Any) -> None:
    model = fresh_model().model
    assert base_param_count(tiny_config) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("targets", "width"),
    [
        ("all-linear", ALL_LINEAR_WIDTH),
        (["q_proj"], 64),
        (["q_proj", "k_proj"], 32),
        (["down_proj", "up_proj"], 64),
        (["self_attn.o_proj"], 64),  # a dotted suffix
        (r".*\.(gate|up)_proj", 64),  # a string is a regex over full module names
        (r"model\.layers\.1\.self_attn\.v_proj", 32),
    ],
)
def test_max_rank_is_narrowest_layer_peft_adapts(
    tiny_config: Any, fresh_model: Any, targets: Any, width: int
) -> None:
    from peft import get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert max_rank(tiny_config, targets) == width
    settings = AdapterSettings(rank=1, target_modules=targets)
    model = get_peft_model(fresh_model().model, REGISTRY["lora"].build_config(settings))
    adapted = [m.get_base_layer() for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert adapted and min(min(m.in_features, m.out_features) for m in adapted) == width


@pytest.mark.parametrize("targets", [["no_such_proj"], "q_proj"])
def test_max_rank_rejects_targets_that_match_nothing(tiny_config: Any, targets: Any) -> None:
    # A plain string is a regex that must match a full module name, as in peft.
    with pytest.raises(WhichloraError, match="matches no linear layer"):
        max_rank(tiny_config, targets)


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_counts_rise_with_rank_unless_declared(technique: str, count_table: Any) -> None:
    """solve_rank bisects only for techniques whose counts rise with rank; the rest are scanned."""
    counts = [count_table(technique)[r] for r in range(1, SOLVE_WIDTH + 1)]
    rising = all(a < b for a, b in zip(counts, counts[1:], strict=False))
    if REGISTRY[technique].count_rises_with_rank:
        assert rising, f"{technique} counts do not rise with rank: {counts}"


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_solve_rank_returns_the_nearest_count(
    technique: str, tiny_config: Any, count_table: Any
) -> None:
    table = count_table(technique)
    values = sorted(set(table.values()))
    targets = {
        1,  # below every count -> rank 1
        values[-1] + 10_000,  # above every count -> the (smallest) rank with the largest count
        table[17],  # exact hit
        table[6] + (table[7] - table[6]) // 3,  # between two ranks, nearer the lower
        table[20] + 2 * (table[21] - table[20]) // 3,  # nearer the upper (or on a plateau)
    }
    settings = AdapterSettings(target_modules=SOLVE_TARGETS)
    for target in sorted(targets):
        solved = solve_rank(tiny_config, REGISTRY[technique], settings, target)
        assert solved == nearest(table, target), f"target {target}"


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_rank_above_layer_width_is_rejected(technique: str, tiny_config: Any) -> None:
    kwargs: dict[str, Any] = {
        "trainable_params": None,
        "fraction": None,
        "alpha": None,
        "dropout": 0.0,
        "target_modules": "all-linear",
        "total_steps": 20,
        "options": {},
    }
    settings, record = resolve_settings(
        tiny_config, REGISTRY[technique], rank=ALL_LINEAR_WIDTH, **kwargs
    )
    assert settings.rank == record["rank"] == ALL_LINEAR_WIDTH
    with pytest.raises(WhichloraError, match=f"rank {ALL_LINEAR_WIDTH + 1} .*width \\(32\\)"):
        resolve_settings(tiny_config, REGISTRY[technique], rank=ALL_LINEAR_WIDTH + 1, **kwargs)


def _resolve(tiny_config: Any, technique: str, **budget: Any) -> tuple[AdapterSettings, dict]:
    values: dict[str, Any] = {"rank": None, "trainable_params": None, "fraction": None}
    values.update(budget)
    return resolve_settings(
        tiny_config,
        REGISTRY[technique],
        alpha=None,
        dropout=0.05,
        target_modules=SOLVE_TARGETS,
        total_steps=20,
        options={},
        **values,
    )


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_trainable_params_budget_resolves_to_nearest_rank(
    technique: str, tiny_config: Any, count_table: Any
) -> None:
    table = count_table(technique)
    target = (table[4] + table[5]) // 2 + 1  # just past the midpoint: rank 5 is nearer
    settings, record = _resolve(tiny_config, technique, trainable_params=target)
    rank, count = nearest(table, target)
    assert settings.rank == record["rank"] == rank
    assert record["trainable_params"] == count
    assert record["requested"] == {"rank": None, "trainable_params": target, "fraction": None}
    assert record["alpha"] == settings.lora_alpha == 2.0 * rank


@pytest.mark.parametrize("technique", TECHNIQUES)
def test_fraction_budget_resolves_against_base_count(
    technique: str, tiny_config: Any, count_table: Any
) -> None:
    table = count_table(technique)
    base = base_param_count(tiny_config)
    fraction = table[6] / base
    settings, record = _resolve(tiny_config, technique, fraction=fraction)
    rank, count = nearest(table, round(fraction * base))
    assert settings.rank == record["rank"] == rank
    assert record["trainable_params"] == count
    assert record["base_params"] == base
    assert record["trainable_fraction"] == pytest.approx(count / base)


def test_explicit_rank_and_alpha_are_recorded(tiny_config: Any) -> None:
    settings, record = _resolve(tiny_config, "lora", rank=3)
    assert (settings.rank, record["rank"]) == (3, 3)
    assert record["trainable_params"] == count_params(tiny_config, REGISTRY["lora"], settings)
    settings, record = resolve_settings(
        tiny_config,
        REGISTRY["lora"],
        rank=None,
        trainable_params=None,
        fraction=None,
        alpha=5.0,
        dropout=0.0,
        target_modules=["q_proj"],
        total_steps=20,
        options={},
    )
    assert settings.rank == 8  # the default rank when no budget is given
    assert record["alpha"] == settings.lora_alpha == 5.0
