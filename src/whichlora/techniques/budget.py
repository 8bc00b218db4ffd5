"""Trainable-parameter budgets: count exactly through peft, and solve a rank for a target count.

Counting builds the peft model on the meta device, so it costs no memory or weights and always
agrees with what training will hold, whatever the technique's parameter formula is.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

from whichlora.errors import WhichloraError
from whichlora.techniques.registry import AdapterSettings, Technique


def _meta_model(config: Any) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _count_config(technique: Technique, settings: AdapterSettings) -> Any:
    config = technique.build_config(settings)
    if technique.rewrites_base:
        config.init_lora_weights = True  # same parameter shapes; decompositions need real weights
    return config


def count_params(model_config: Any, technique: Technique, settings: AdapterSettings) -> int:
    """Trainable parameters of `technique` at `settings` on a model with `model_config`."""
    import warnings

    import torch
    from peft import get_peft_model

    # The adapter is built on meta too: built on CPU and then moved to the meta base, peft re-wraps
    # frozen parameters (AdaLoRA's `ranknum`) as new, trainable ones and the count comes out high.
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = get_peft_model(_meta_model(model_config), _count_config(technique, settings))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def base_param_count(model_config: Any) -> int:
    return sum(p.numel() for p in _meta_model(model_config).parameters())


def max_rank(model_config: Any, target_modules: str | list[str]) -> int:
    """The narrowest targeted layer's width: a rank above it adds nothing but parameters.

    Layers are matched by peft's own rule, so this sees the layers training adapts: a list holds
    module names (or dotted suffixes), a string other than 'all-linear' is a regex that must match
    the full module name.
    """
    import torch
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    model = _meta_model(model_config)
    matcher = None if target_modules == "all-linear" else LoraConfig(target_modules=target_modules)
    widths = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if (matcher is None and not name.endswith("lm_head")) or (
            matcher is not None and check_target_module_exists(matcher, name)
        ):
            widths.append(min(module.in_features, module.out_features))
    if not widths:
        raise WhichloraError(
            f"target_modules {target_modules!r} matches no linear layer of the model. Fix: use "
            "'all-linear', a list of names such as [q_proj, v_proj], or a regex that matches "
            "full module names such as '.*\\.(q|v)_proj'."
        )
    return min(widths)


def solve_rank(
    model_config: Any, technique: Technique, settings: AdapterSettings, target: int
) -> tuple[int, int]:
    """Rank whose trainable count is nearest `target` (ties to the smaller); returns (rank, count).

    Where counts rise with rank a bisection finds the crossing. Where they do not (LoKr: peft
    stores a factor whole once the rank reaches half its width, so the count can fall back as the
    rank rises), every rank is counted.
    """
    top = max_rank(model_config, settings.target_modules)

    @cache
    def count(rank: int) -> int:
        return count_params(model_config, technique, replace(settings, rank=rank))

    if not technique.count_rises_with_rank:
        best = min(range(1, top + 1), key=lambda r: (abs(count(r) - target), r))
        return best, count(best)
    low, high = 1, top
    if count(high) <= target:
        return high, count(high)
    while high - low > 1:
        mid = (low + high) // 2
        if count(mid) <= target:
            low = mid
        else:
            high = mid
    best = min((low, high), key=lambda r: (abs(count(r) - target), r))
    return best, count(best)


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
    """Settings for one run plus the budget record (asked for, solved rank, actual count)."""
    settings = AdapterSettings(
        rank=rank or 8,
        alpha=alpha,
        dropout=dropout,
        target_modules=target_modules,
        total_steps=total_steps,
        options=dict(options),
    )
    widest = max_rank(model_config, target_modules)
    base = base_param_count(model_config)
    target = (
        trainable_params
        if trainable_params is not None
        else (round(fraction * base) if fraction is not None else None)
    )
    if target is not None:
        solved, _ = solve_rank(model_config, technique, settings, target)
        settings = replace(settings, rank=solved)
    elif settings.rank > widest:
        raise WhichloraError(
            f"rank {settings.rank} for {technique.name} is above the narrowest targeted layer's "
            f"width ({widest}). Fix: use a rank of at most {widest}."
        )
    actual = count_params(model_config, technique, settings)
    record = {
        "requested": {"rank": rank, "trainable_params": trainable_params, "fraction": fraction},
        "rank": settings.rank,
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
