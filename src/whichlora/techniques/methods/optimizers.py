"""LoRA trained by an optimizer of peft's instead of plain AdamW: LoRA+ (a higher learning rate
for B), LoRA-FA (A frozen, only B updated) and Riemannian preconditioning of A's and B's
gradients. The adapter itself is plain LoRA."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from whichlora.techniques.methods.lora import lora_config
from whichlora.techniques.options import Options, option, parse_options
from whichlora.techniques.technique import Technique


class LoraPlusOptions(Options):
    loraplus_lr_ratio: Annotated[float, Field(gt=0, le=1024)] = option(
        16.0, "learning rate of B over that of A"
    )


def _loraplus_optimizer(model: Any, lr: float, weight_decay: float, options: dict[str, Any]) -> Any:
    import torch
    from peft.optimizers import create_loraplus_optimizer

    opts = parse_options("loraplus", LoraPlusOptions, options)
    return create_loraplus_optimizer(
        model=model,
        optimizer_cls=torch.optim.AdamW,
        lr=lr,
        loraplus_lr_ratio=float(opts.loraplus_lr_ratio),
        # peft drops plain `weight_decay` for LoRA+ groups; it must be passed under this name.
        loraplus_weight_decay=weight_decay,
        weight_decay=weight_decay,
    )


def _lorafa_optimizer(model: Any, lr: float, weight_decay: float, options: dict[str, Any]) -> Any:
    from peft.optimizers import create_lorafa_optimizer

    config = model.peft_config["default"]
    # peft freezes every lora_A here: only B (and nothing else) is updated from now on.
    return create_lorafa_optimizer(
        model=model,
        r=config.r,
        lora_alpha=config.lora_alpha,
        lr=lr,
        weight_decay=weight_decay,
        use_rslora=config.use_rslora,
    )


class RiemannianOptions(Options):
    reg: Annotated[float, Field(gt=0, le=1)] = option(
        1e-2, "damping added to the r x r preconditioner before it is inverted"
    )


def _riemannian_optimizer(
    model: Any, lr: float, weight_decay: float, options: dict[str, Any]
) -> Any:
    import torch
    from peft.optimizers import create_riemannian_optimizer

    opts = parse_options("riemannian", RiemannianOptions, options)
    return create_riemannian_optimizer(
        model, torch.optim.AdamW, lr=lr, reg=opts.reg, weight_decay=weight_decay
    )


LORAPLUS = Technique(
    "loraplus",
    "LoRA with a higher learning rate for B than for A (ratio 16 by default).",
    "Hayou et al. 2024, LoRA+: Efficient Low Rank Adaptation of Large Models, arXiv:2402.12354",
    lora_config,
    options=LoraPlusOptions,
    make_optimizer=_loraplus_optimizer,
)

LORAFA = Technique(
    "lorafa",
    "LoRA with A frozen at its random init; only B is trained, by peft's LoRA-FA optimizer "
    "(the count includes the frozen A, which the optimizer never updates).",
    "Zhang et al. 2023, LoRA-FA: Memory-efficient Low-rank Adaptation for Large Language "
    "Models Fine-tuning, arXiv:2308.03303",
    lora_config,
    make_optimizer=_lorafa_optimizer,
)

RIEMANNIAN = Technique(
    "riemannian",
    "LoRA trained with an r x r Riemannian preconditioner on A's and B's gradients.",
    "Zhang & Pilanci 2024, Riemannian Preconditioned LoRA for Fine-Tuning Foundation "
    "Models, arXiv:2402.02347",
    lora_config,
    options=RiemannianOptions,
    make_optimizer=_riemannian_optimizer,
)
