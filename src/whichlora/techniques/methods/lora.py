"""LoRA and the variants that differ only in their LoraConfig: scaling (rsLoRA) or the init of
A and B (orthogonal; PiSSA and OLoRA, which rewrite the base weights to match)."""

from __future__ import annotations

from typing import Any, Literal

from whichlora.techniques.options import Knob, Options, multiples_up_to_narrowest, option
from whichlora.techniques.technique import AdapterSettings, Technique


def lora_config(settings: AdapterSettings, options: Any = None, **kwargs: Any) -> Any:
    """peft's LoraConfig from the run's settings; `kwargs` are the variant's own fields."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        **kwargs,
    )


PissaInit = Literal["pissa", "pissa_niter_2", "pissa_niter_4", "pissa_niter_8", "pissa_niter_16"]


class PissaOptions(Options):
    init: PissaInit = option(
        "pissa_niter_4", "SVD: exact ('pissa') or fast randomised with N subspace iterations"
    )


LORA = Technique(
    "lora",
    "Low-rank update BA added to frozen weights, scaled by alpha/r (the baseline).",
    "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models, arXiv:2106.09685",
    lora_config,
)

RSLORA = Technique(
    "rslora",
    "LoRA scaled by alpha/sqrt(r), so higher ranks keep learning instead of collapsing.",
    "Kalajdzievski 2023, A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA, "
    "arXiv:2312.03732",
    lambda s, o: lora_config(s, use_rslora=True),
)

PISSA = Technique(
    "pissa",
    "LoRA initialised from the principal singular vectors of W; the residual stays frozen.",
    "Meng et al. 2024, PiSSA: Principal Singular Values and Singular Vectors Adaptation, "
    "arXiv:2404.02948",
    lambda s, o: lora_config(s, init_lora_weights=o.init),
    options=PissaOptions,
    rewrites_base=True,
)

OLORA = Technique(
    "olora",
    "LoRA initialised from a QR decomposition of W (orthonormal A), base shifted to match.",
    "Büyükakyüz 2024, OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models, "
    "arXiv:2406.01775",
    lambda s, o: lora_config(s, init_lora_weights="olora"),
    rewrites_base=True,
)

ORTHOGONAL = Technique(
    "orthogonal",
    "LoRA with A and B drawn from halves of one random orthogonal matrix (B is not zero: "
    "the adapter starts slightly off the base).",
    "Datta 2024, Rethinking LoRA initialisation (orthogonal initialisation), "
    "https://datta0.github.io/posts/rethink-lora-init/ (peft init_lora_weights='orthogonal')",
    lambda s, o: lora_config(s, init_lora_weights="orthogonal"),
    knob=Knob("rank", multiples_up_to_narrowest(2), help="rank of the update; even"),
)
