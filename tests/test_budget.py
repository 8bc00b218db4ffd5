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
    knob_values,
    max_rank,
    resolve_settings,
    solve_knob,
    with_knob,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TECHNIQUES = sorted(REGISTRY)
# Data-driven inits whose adapter is LoRA's at every rank (only the init differs): the knob-solving
# tests below would repeat LoRA's; the count test checks their count is LoRA's.
SAME_COUNT_AS_LORA = {"corda", "loraga"}
SOLVED = [t for t in TECHNIQUES if t not in SAME_COUNT_AS_LORA]
# The tiny Llama: hidden 64, intermediate 128, 2 kv heads of 16 -> k/v project 64 -> 32.
ALL_LINEAR_WIDTH = 32
# Knob solving is checked against a brute-force table over the knob's values; two module kinds
# (one per block) keep that table cheap yet still show LoKr's count falling back as the rank rises.
SOLVE_TARGETS = ["k_proj", "down_proj"]
TABLE_SIZE = 40  # knobs with more values (frequencies, bank sizes) are tabled over the first 32


def real_trainable(
    loaded: Any, technique: str, settings: AdapterSettings, batch: dict[str, Any] | None = None
) -> int:
    """Trainable parameters of the real adapter, built as training builds it (CorDA and LoRA-GA
    read a batch of data first)."""
    import itertools

    from peft import get_peft_model

    entry = REGISTRY[technique]
    config = entry.build_config(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if entry.preprocess is not None:
            options = entry.parse_options({"batches": 1})
            entry.preprocess(loaded.model, config, itertools.repeat(batch), options)
        model = get_peft_model(loaded.model, config)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def count_table(tiny_config: Any) -> Any:
    """counts(technique) -> ({knob value: count}, complete) on SOLVE_TARGETS, computed once.

    `complete` is False where the knob has more values than TABLE_SIZE and only the first 32
    are tabled."""
    tables: dict[str, tuple[dict[int, int], bool]] = {}

    def counts(technique: str) -> tuple[dict[int, int], bool]:
        if technique not in tables:
            entry = REGISTRY[technique]
            settings = AdapterSettings(target_modules=SOLVE_TARGETS)
            values = list(knob_values(tiny_config, entry, settings)[: TABLE_SIZE + 1])
            complete = len(values) <= TABLE_SIZE
            values = values if complete else values[:32]
            tables[technique] = (
                {
                    v: count_params(tiny_config, entry, with_knob(entry, settings, v))
                    for v in values
                },
                complete,
            )
        return tables[technique]

    return counts


def nearest(table: dict[int, int], target: int) -> tuple[int, int]:
    """Brute force over every knob value: nearest count, ties to the smaller value."""
    rank = min(table, key=lambda r: (abs(table[r] - target), r))
    return rank, table[rank]


@pytest.mark.parametrize(("rank", "target_modules"), [(1, "all-linear"), (5, ["q_proj", "v_proj"])])
@pytest.mark.parametrize("technique", TECHNIQUES)
def test_count_params_equals_real_peft_model(
    technique: str,
    rank: int,
    target_modules: Any,
    tiny_config: Any,
    fresh_model: Any,
    probe_batch: dict[str, Any],
) -> None:
    entry = REGISTRY[technique]
    settings = AdapterSettings(target_modules=target_modules, total_steps=20)
    # The rank-th valid value of the technique's knob (even ranks, block sizes ...).
    value = knob_values(tiny_config, entry, settings)[rank - 1]
    settings = with_knob(entry, settings, value)
    counted = count_params(tiny_config, entry, settings)
    assert counted > 0
    assert counted == real_trainable(fresh_model(), technique, settings, probe_batch)
    if technique in SAME_COUNT_AS_LORA:
        assert counted == count_params(tiny_config, REGISTRY["lora"], settings)


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


@pytest.mark.parametrize("technique", SOLVED)
def test_counts_follow_the_knobs_declared_trend(technique: str, count_table: Any) -> None:
    """solve_knob bisects only where counts move one way with the knob; the rest are scanned."""
    table, _ = count_table(technique)
    counts = list(table.values())
    pairs = list(zip(counts, counts[1:], strict=False))
    trend = REGISTRY[technique].knob.trend
    if trend == "rises":
        assert all(a < b for a, b in pairs), f"{technique} counts do not rise: {counts}"
    elif trend == "falls":
        assert all(a > b for a, b in pairs), f"{technique} counts do not fall: {counts}"


@pytest.mark.parametrize("technique", SOLVED)
def test_solve_knob_returns_the_nearest_count(
    technique: str, tiny_config: Any, count_table: Any
) -> None:
    table, complete = count_table(technique)
    keys = list(table)
    n = len(keys)
    at = [
        table[keys[min(i, n - 1)]] for i in (n // 2, n // 5, n // 5 + 1, 2 * n // 3, 2 * n // 3 + 1)
    ]
    targets = {
        1,  # below every count -> the value with the smallest count
        at[0],  # exact hit
        min(at[1], at[2]) + abs(at[2] - at[1]) // 3,  # between two values
        min(at[3], at[4]) + 2 * abs(at[4] - at[3]) // 3,
    }
    if complete:
        targets.add(max(table.values()) + 10_000)  # above every count
    settings = AdapterSettings(target_modules=SOLVE_TARGETS)
    for target in sorted(targets):
        solved = solve_knob(tiny_config, REGISTRY[technique], settings, target)
        assert solved == nearest(table, target), f"target {target}"


@pytest.mark.parametrize(
    "technique",
    [t for t in TECHNIQUES if REGISTRY[t].knob.name == "rank" and t not in ("shira", "kasa")],
)
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


def test_kasa_rank_keeps_one_singular_component(tiny_config: Any) -> None:
    # KaSA drops the r smallest singular components of the base: r must stay below the width.
    kwargs: dict[str, Any] = {
        "trainable_params": None,
        "fraction": None,
        "alpha": None,
        "dropout": 0.0,
        "target_modules": "all-linear",
        "total_steps": 20,
        "options": {},
    }
    top = ALL_LINEAR_WIDTH - 1
    settings, _ = resolve_settings(tiny_config, REGISTRY["kasa"], rank=top, **kwargs)
    assert settings.rank == top
    with pytest.raises(WhichloraError, match=f"rank {ALL_LINEAR_WIDTH} .*valid values: 1..{top}"):
        resolve_settings(tiny_config, REGISTRY["kasa"], rank=ALL_LINEAR_WIDTH, **kwargs)


def test_invalid_knob_value_is_rejected_with_the_valid_ones(tiny_config: Any) -> None:
    with pytest.raises(WhichloraError, match="rank 5 .* orthogonal .*valid values: 2..32 in steps"):
        _resolve(tiny_config, "orthogonal", rank=5)
    with pytest.raises(WhichloraError, match="block_size 3 .*option block_size.* c3a"):
        resolve_settings(
            tiny_config,
            REGISTRY["c3a"],
            rank=None,
            trainable_params=None,
            fraction=None,
            alpha=None,
            dropout=0.0,
            target_modules="all-linear",
            total_steps=20,
            options={"block_size": 3},
        )


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


@pytest.mark.parametrize("technique", SOLVED)
def test_trainable_params_budget_resolves_the_knob(
    technique: str, tiny_config: Any, count_table: Any
) -> None:
    entry = REGISTRY[technique]
    table, _ = count_table(technique)
    keys = list(table)
    low, high = table[keys[4]], table[keys[5]]
    target = high - (high - low) // 4  # nearer the sixth value
    value, count = nearest(table, target)
    if abs(count - target) > 0.1 * target:
        with pytest.raises(WhichloraError, match=f"{technique} cannot come within 10%"):
            _resolve(tiny_config, technique, trainable_params=target)
        return
    settings, record = _resolve(tiny_config, technique, trainable_params=target)
    assert entry.knob_value(settings) == record["knob_value"] == value
    assert record["knob"] == entry.knob.name
    assert record["trainable_params"] == count
    assert record["requested"] == {"rank": None, "trainable_params": target, "fraction": None}
    if entry.knob.name == "rank":
        assert settings.rank == record["rank"] == value
        assert record["alpha"] == settings.lora_alpha == 2.0 * value


@pytest.mark.parametrize("technique", SOLVED)
def test_fraction_budget_resolves_against_base_count(
    technique: str, tiny_config: Any, count_table: Any
) -> None:
    table, _ = count_table(technique)
    base = base_param_count(tiny_config)
    fraction = table[list(table)[min(6, len(table) - 1)]] / base
    settings, record = _resolve(tiny_config, technique, fraction=fraction)
    value, count = nearest(table, round(fraction * base))
    assert REGISTRY[technique].knob_value(settings) == record["knob_value"] == value
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
