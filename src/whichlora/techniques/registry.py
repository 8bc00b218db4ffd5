"""The technique registry: the single list the CLI, docs and tests read.

An entry says how to build its peft config, and calls out what differs in training: an optimizer
of its own (LoRA+), a hook after each optimizer step (AdaLoRA), or a base model rewritten at init
(PiSSA, OLoRA) that needs conversion when saved. Nothing here reimplements an adapter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from whichlora.errors import WhichloraError


@dataclass(frozen=True)
class AdapterSettings:
    """What a run asks of its adapter; `options` holds technique-specific knobs."""

    rank: int = 8
    alpha: float | None = None  # None: 2 x rank, the common LoRA default
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    total_steps: int = 100  # the run's schedule, for techniques that plan by it (AdaLoRA)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank


ConfigBuilder = Callable[[AdapterSettings], Any]
OptimizerFactory = Callable[[Any, float, float, dict[str, Any]], Any]
StepHook = Callable[[Any, int], None]  # (model, optimizer steps taken so far, from 1)


@dataclass(frozen=True)
class Technique:
    name: str
    description: str
    paper: str
    build_config: ConfigBuilder
    make_optimizer: OptimizerFactory | None = None
    after_optimizer_step: StepHook | None = None
    rewrites_base: bool = False  # PiSSA/OLoRA: compare against a fresh base, convert on save
    count_rises_with_rank: bool = True  # False: solve_rank counts every rank instead of bisecting
    option_names: tuple[str, ...] = ()


def _lora(settings: AdapterSettings, **kwargs: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        **kwargs,
    )


def _vera(settings: AdapterSettings) -> Any:
    from peft import VeraConfig

    return VeraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        vera_dropout=settings.dropout,
        target_modules=settings.target_modules,
        d_initial=float(settings.options.get("d_initial", 0.1)),
        save_projection=True,  # the adapter then loads without regenerating the random bases
    )


def _adalora(settings: AdapterSettings) -> Any:
    from peft import AdaLoraConfig

    total = settings.total_steps
    # Paper schedule shape: warm up, prune ranks in the middle, then freeze the allocation.
    tinit = int(settings.options.get("tinit", max(1, total // 10)))
    tfinal = int(settings.options.get("tfinal", max(1, total // 5)))
    if tinit >= total - tfinal:
        if "tinit" in settings.options or "tfinal" in settings.options:
            raise WhichloraError(
                f"AdaLoRA options tinit={tinit} and tfinal={tfinal} leave no rank-budgeting phase "
                f"in {total} steps. Fix: make tinit + tfinal smaller than training.steps."
            )
        tinit, tfinal = 0, 0  # runs too short for the default schedule: allocate every step
    return AdaLoraConfig(
        task_type="CAUSAL_LM",
        init_r=int(
            settings.options.get("init_r", max(settings.rank + 1, (3 * settings.rank) // 2))
        ),
        target_r=settings.rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        total_step=total,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=int(settings.options.get("deltaT", 1)),
        orth_reg_weight=float(settings.options.get("orth_reg_weight", 0.5)),
    )


def _adalora_allocate(model: Any, global_step: int) -> None:
    # Must run after optimizer.step() and before zero_grad(): it reads the gradients.
    model.base_model.update_and_allocate(global_step)


def _loraplus_optimizer(model: Any, lr: float, weight_decay: float, options: dict[str, Any]) -> Any:
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        model=model,
        optimizer_cls=torch.optim.AdamW,
        lr=lr,
        loraplus_lr_ratio=float(options.get("loraplus_lr_ratio", 16.0)),
        # peft drops plain `weight_decay` for LoRA+ groups; it must be passed under this name.
        loraplus_weight_decay=weight_decay,
        weight_decay=weight_decay,
    )


def _loha(settings: AdapterSettings) -> Any:
    from peft import LoHaConfig

    return LoHaConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        alpha=settings.lora_alpha,
        rank_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


def _lokr(settings: AdapterSettings) -> Any:
    from peft import LoKrConfig

    return LoKrConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        alpha=settings.lora_alpha,
        rank_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


_ENTRIES = [
    Technique(
        "lora",
        "Low-rank update BA added to frozen weights, scaled by alpha/r (the baseline).",
        "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models, arXiv:2106.09685",
        _lora,
    ),
    Technique(
        "rslora",
        "LoRA scaled by alpha/sqrt(r), so higher ranks keep learning instead of collapsing.",
        "Kalajdzievski 2023, A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA, "
        "arXiv:2312.03732",
        lambda s: _lora(s, use_rslora=True),
    ),
    Technique(
        "dora",
        "Weight-decomposed LoRA: a trained magnitude vector times a LoRA-updated direction.",
        "Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation, arXiv:2402.09353",
        lambda s: _lora(s, use_dora=True),
    ),
    Technique(
        "vera",
        "Frozen shared random low-rank matrices; only per-layer scaling vectors are trained.",
        "Kopiczko et al. 2024, VeRA: Vector-based Random Matrix Adaptation, arXiv:2310.11454",
        _vera,
        option_names=("d_initial",),
    ),
    Technique(
        "adalora",
        "SVD-form LoRA whose rank budget is reallocated across layers during training.",
        "Zhang et al. 2023, AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient "
        "Fine-Tuning, arXiv:2303.10512",
        _adalora,
        after_optimizer_step=_adalora_allocate,
        option_names=("init_r", "tinit", "tfinal", "deltaT", "orth_reg_weight"),
    ),
    Technique(
        "pissa",
        "LoRA initialised from the principal singular vectors of W; the residual stays frozen.",
        "Meng et al. 2024, PiSSA: Principal Singular Values and Singular Vectors Adaptation, "
        "arXiv:2404.02948",
        lambda s: _lora(s, init_lora_weights=str(s.options.get("init", "pissa_niter_4"))),
        rewrites_base=True,
        option_names=("init",),
    ),
    Technique(
        "olora",
        "LoRA initialised from a QR decomposition of W (orthonormal A), base shifted to match.",
        "Büyükakyüz 2024, OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models, "
        "arXiv:2406.01775",
        lambda s: _lora(s, init_lora_weights="olora"),
        rewrites_base=True,
    ),
    Technique(
        "loraplus",
        "LoRA with a higher learning rate for B than for A (ratio 16 by default).",
        "Hayou et al. 2024, LoRA+: Efficient Low Rank Adaptation of Large Models, arXiv:2402.12354",
        _lora,
        make_optimizer=_loraplus_optimizer,
        option_names=("loraplus_lr_ratio",),
    ),
    Technique(
        "loha",
        "Low-rank Hadamard product of two LoRA pairs (LyCORIS), higher effective rank.",
        "Hyeon-Woo et al. 2022, FedPara: Low-Rank Hadamard Product for Communication-Efficient "
        "Federated Learning, arXiv:2108.06098",
        _loha,
    ),
    Technique(
        "lokr",
        "Kronecker product of a small matrix and a low-rank matrix (LyCORIS).",
        "Yeh et al. 2024, Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to "
        "Model Evaluation, arXiv:2309.14859",
        _lokr,
        # peft stores a Kronecker factor whole once the rank reaches half its width: fewer
        # parameters than the rank below, so the count is not monotonic in the rank.
        count_rises_with_rank=False,
    ),
]

REGISTRY: dict[str, Technique] = {t.name: t for t in _ENTRIES}


def get_technique(name: str) -> Technique:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WhichloraError(
            f"Unknown technique '{name}'. Fix: use one of {', '.join(REGISTRY)} "
            "(`whichlora techniques` lists them)."
        ) from None
