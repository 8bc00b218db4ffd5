"""AdaLoRA: LoRA in SVD form whose rank budget is reallocated across layers while it trains.

peft's `update_and_allocate` runs after every optimizer step (it reads the gradients, so before
they are zeroed) and keeps importance averages between steps in the model's `rankallocator`; a
checkpoint saves those and the rank pattern so a resumed run allocates as an uninterrupted one.
Its orthogonality penalty is added by peft inside the model's forward.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from whichlora.errors import WhichloraError
from whichlora.techniques.options import Options, option
from whichlora.techniques.technique import AdapterSettings, StepState, Technique


class AdaLoraOptions(Options):
    init_r: Annotated[int, Field(ge=1, le=4096)] | None = option(
        None, "rank every layer starts with before pruning (default: 1.5 x the target rank)"
    )
    tinit: Annotated[int, Field(ge=0)] | None = option(
        None, "warm-up steps before pruning (default: a tenth of the run)"
    )
    tfinal: Annotated[int, Field(ge=0)] | None = option(
        None, "final steps with the allocation frozen (default: a fifth of the run)"
    )
    deltaT: Annotated[int, Field(ge=1)] = option(1, "steps between two reallocations")
    orth_reg_weight: Annotated[float, Field(ge=0)] = option(
        0.5, "weight of the orthogonality penalty on P and Q"
    )


def _adalora(settings: AdapterSettings, options: Any) -> Any:
    from peft import AdaLoraConfig

    total = settings.total_steps
    # Paper schedule shape: warm up, prune ranks in the middle, then freeze the allocation.
    tinit = options.tinit if options.tinit is not None else max(1, total // 10)
    tfinal = options.tfinal if options.tfinal is not None else max(1, total // 5)
    if tinit >= total - tfinal:
        if options.tinit is not None or options.tfinal is not None:
            raise WhichloraError(
                f"AdaLoRA options tinit={tinit} and tfinal={tfinal} leave no rank-budgeting phase "
                f"in {total} steps. Fix: make tinit + tfinal smaller than training.steps."
            )
        tinit, tfinal = 0, 0  # runs too short for the default schedule: allocate every step
    init_r = options.init_r or max(settings.rank + 1, (3 * settings.rank) // 2)
    return AdaLoraConfig(
        task_type="CAUSAL_LM",
        init_r=init_r,
        target_r=settings.rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        total_step=total,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=options.deltaT,
        orth_reg_weight=options.orth_reg_weight,
    )


def _allocate(model: Any, global_step: int) -> None:
    # Must run after optimizer.step() and before zero_grad(): it reads the gradients.
    model.base_model.update_and_allocate(global_step)


def _allocator(model: Any) -> Any:
    return getattr(getattr(model, "base_model", None), "rankallocator", None)


def _allocation_state(model: Any) -> dict[str, Any] | None:
    """`update_and_allocate` keeps importance averages between steps (in `rankallocator`) and
    writes the rank pattern into the adapter config."""
    allocator = _allocator(model)
    if allocator is None:
        return None
    config = model.peft_config["default"]
    return {
        "ipt": {k: v.detach().cpu() for k, v in allocator.ipt.items()},
        "exp_avg_ipt": {k: v.detach().cpu() for k, v in allocator.exp_avg_ipt.items()},
        "exp_avg_unc": {k: v.detach().cpu() for k, v in allocator.exp_avg_unc.items()},
        "rank_pattern": config.rank_pattern,
    }


def _restore_allocation(model: Any, state: dict[str, Any] | None) -> None:
    allocator = _allocator(model)
    if state is None:
        return
    # the allocator names parameters as the model inside the tuner does
    devices = {name: p.device for name, p in model.base_model.model.named_parameters()}
    for key in ("ipt", "exp_avg_ipt", "exp_avg_unc"):
        setattr(allocator, key, {n: t.to(devices[n]) for n, t in state[key].items()})
    model.peft_config["default"].rank_pattern = state["rank_pattern"]


ADALORA = Technique(
    "adalora",
    "SVD-form LoRA whose rank budget is reallocated across layers during training.",
    "Zhang et al. 2023, AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient "
    "Fine-Tuning, arXiv:2303.10512",
    _adalora,
    options=AdaLoraOptions,
    after_optimizer_step=_allocate,
    step_state=StepState(save=_allocation_state, restore=_restore_allocation),
)
