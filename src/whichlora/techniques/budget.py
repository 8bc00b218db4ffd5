"""Trainable-parameter budgets: count exactly through peft, and solve a technique's capacity knob
(rank, bank size, frequencies, block size ...) for a target count.

Counting builds the peft model on the meta device, so it costs no memory or weights and always
agrees with what training will hold, whatever the technique's parameter formula is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import cache
from typing import Any

from whichlora.errors import WhichloraError
from whichlora.techniques.technique import AdapterSettings, Technique


def meta_model(config: Any) -> Any:
    """The model of `config` on the meta device: every parameter's shape, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def meta_peft_model(model_config: Any, technique: Technique, settings: AdapterSettings) -> Any:
    """`technique` at `settings` on the meta-device model of `model_config`: the parameters
    training would hold, with no weights, data or memory behind them."""
    import warnings

    import torch
    from peft import get_peft_model

    # The adapter is built on meta too: built on CPU and then moved to the meta base, peft re-wraps
    # frozen parameters (AdaLoRA's `ranknum`) as new, trainable ones and the count comes out high.
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        config = technique.build_config(settings)
        if technique.rewrites_base or isinstance(getattr(config, "init_lora_weights", None), str):
            # Same parameter shapes; decompositions (PiSSA), data-driven (EVA) and orthogonal
            # inits need real weights, data or ops the meta device lacks.
            config.init_lora_weights = True
        if technique.meta_config is not None:
            technique.meta_config(config)
        return get_peft_model(meta_model(model_config), config)


def count_params(model_config: Any, technique: Technique, settings: AdapterSettings) -> int:
    """Trainable parameters of `technique` at `settings` on a model with `model_config`."""
    model = meta_peft_model(model_config, technique, settings)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def base_param_count(model_config: Any) -> int:
    return sum(p.numel() for p in meta_model(model_config).parameters())


def targeted_shapes(model_config: Any, target_modules: str | list[str]) -> list[tuple[int, int]]:
    """(in_features, out_features) of every linear layer training adapts.

    Layers are matched by peft's own rule: a list holds module names (or dotted suffixes), a
    string other than 'all-linear' is a regex that must match the full module name.
    """
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    model = meta_model(model_config)
    matcher = None if target_modules == "all-linear" else LoraConfig(target_modules=target_modules)
    shapes = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if (matcher is None and not name.endswith("lm_head")) or (
            matcher is not None and check_target_module_exists(matcher, name)
        ):
            shapes.append((module.in_features, module.out_features))
    if not shapes:
        raise WhichloraError(
            f"target_modules {target_modules!r} matches no linear layer of the model. Fix: use "
            "'all-linear', a list of names such as [q_proj, v_proj], or a regex that matches "
            "full module names such as '.*\\.(q|v)_proj'."
        )
    return shapes


def max_rank(model_config: Any, target_modules: str | list[str]) -> int:
    """The narrowest targeted layer's width: a rank above it adds nothing but parameters."""
    return min(min(shape) for shape in targeted_shapes(model_config, target_modules))


def with_knob(technique: Technique, settings: AdapterSettings, value: int) -> AdapterSettings:
    """`settings` with the technique's capacity knob set to `value`."""
    if technique.knob.name == "rank":
        return replace(settings, rank=value)
    return replace(settings, options={**settings.options, technique.knob.name: value})


def knob_values(
    model_config: Any, technique: Technique, settings: AdapterSettings
) -> Sequence[int]:
    """The knob's valid values on the targeted layers, ascending."""
    shapes = targeted_shapes(model_config, settings.target_modules)
    return technique.knob.values(shapes, technique.parse_options(settings.options))


def solve_knob(
    model_config: Any, technique: Technique, settings: AdapterSettings, target: int
) -> tuple[int, int]:
    """Knob value whose trainable count is nearest `target` (ties to the smaller value); returns
    (value, count).

    Where counts move one way with the knob (rise with a rank, fall with C3A's block size or
    RandLoRA's basis rank) a bisection finds the crossing. Where they do not (LoKr: peft stores
    a factor whole once the rank reaches half its width, so the count can fall back as the rank
    rises), every value is counted.
    """
    values = knob_values(model_config, technique, settings)
    if not values:
        raise WhichloraError(
            f"{technique.name}'s {technique.knob.name} has no valid value on the targeted "
            "layers. Fix: target other modules or change the technique's options."
        )

    @cache
    def count(value: int) -> int:
        return count_params(model_config, technique, with_knob(technique, settings, value))

    def pick(candidates: Iterable[int]) -> tuple[int, int]:
        best = min(candidates, key=lambda v: (abs(count(v) - target), v))
        return best, count(best)

    trend = technique.knob.trend
    if trend == "any":
        return pick(values)
    # Index into `values` so that the count rises with the index.
    order = list(range(len(values))) if trend == "rises" else list(range(len(values)))[::-1]

    def at(i: int) -> int:
        return count(values[order[i]])

    low, high = 0, len(values) - 1
    if at(high) <= target:
        return pick([values[order[high]]])
    if at(low) >= target:
        return pick([values[order[low]]])
    while high - low > 1:
        mid = (low + high) // 2
        if at(mid) <= target:
            low = mid
        else:
            high = mid
    return pick([values[order[low]], values[order[high]]])


solve_rank = solve_knob  # the knob of most techniques is the rank


def _describe_values(values: Sequence[int]) -> str:
    if isinstance(values, range) and len(values) > 1:
        step = f" in steps of {values.step}" if values.step != 1 else ""
        return f"{values[0]}..{values[-1]}{step}"
    shown = list(values)
    return ", ".join(str(v) for v in shown[:12]) + (" ..." if len(shown) > 12 else "")


WITHIN = 0.10  # a budget's count may miss its target by at most this fraction


def resolve_settings(
    model_config: Any,
    technique: Technique,
    *,
    rank: int | None,
    trainable_params: int | None,
    fraction: float | None,
    alpha: float | None,
    dropout: float,
    target_modules: str | list[str],
    total_steps: int,
    options: dict[str, Any],
) -> tuple[AdapterSettings, dict[str, Any]]:
    """Settings for one run plus the budget record (asked for, solved knob, actual count)."""
    settings = AdapterSettings(
        rank=rank or 8,
        alpha=alpha,
        dropout=dropout,
        target_modules=target_modules,
        total_steps=total_steps,
        options=dict(options),
    )
    technique.parse_options(settings.options)  # a bad option fails here, naming the option
    widest = max_rank(model_config, target_modules)
    base = base_param_count(model_config)
    knob = technique.knob.name
    target = (
        trainable_params
        if trainable_params is not None
        else (round(fraction * base) if fraction is not None else None)
    )
    if target is not None:
        solved, reached = solve_knob(model_config, technique, settings, target)
        if abs(reached - target) > WITHIN * target:
            raise WhichloraError(
                f"{technique.name} cannot come within {WITHIN:.0%} of {target:,} trainable "
                f"parameters: its nearest count is {reached:,} ({knob} {solved}). Fix: change "
                "the budget, or give this technique its own rank/trainable_params/fraction."
            )
        settings = with_knob(technique, settings, solved)
    else:
        if technique.uses_rank and settings.rank > widest:
            raise WhichloraError(
                f"rank {settings.rank} for {technique.name} is above the narrowest targeted "
                f"layer's width ({widest}). Fix: use a rank of at most {widest}."
            )
        values = knob_values(model_config, technique, settings)
        value = technique.knob_value(settings)
        if value not in values:
            where = "the budget's rank" if knob == "rank" else f"option {knob}"
            raise WhichloraError(
                f"{knob} {value} ({where}) is not valid for {technique.name} on the targeted "
                f"layers; valid values: {_describe_values(values)}. Fix: choose one of them."
            )
    actual = count_params(model_config, technique, settings)
    record = {
        "requested": {"rank": rank, "trainable_params": trainable_params, "fraction": fraction},
        "rank": settings.rank if technique.uses_rank else None,
        "knob": knob,
        "knob_value": technique.knob_value(settings),
        "alpha": settings.lora_alpha,
        "trainable_params": actual,
        "base_params": base,
        "trainable_fraction": actual / base,
    }
    return settings, record


def settings_for_request(
    model_config: Any, technique: Technique, request: Any
) -> tuple[AdapterSettings, dict[str, Any]]:
    """`resolve_settings` for a run's TrainRequest (its budget fields and step count)."""
    return resolve_settings(
        model_config,
        technique,
        rank=request.rank,
        trainable_params=request.trainable_params,
        fraction=request.fraction,
        alpha=request.alpha,
        dropout=request.dropout,
        target_modules=request.target_modules,
        total_steps=request.steps,
        options=request.options,
    )
