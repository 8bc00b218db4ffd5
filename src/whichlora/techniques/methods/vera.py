"""Adapters built on frozen random (or shared) bases, where only small vectors are trained: VeRA
and PVeRA (scaling vectors on shared random matrices), RandLoRA (diagonal scalings of many random
bases), TinyLoRA (a tiny vector through fixed random tensors) and VB-LoRA (a shared trained bank
of vectors mixed top-k). The random bases are saved with the adapter (`save_projection`), so it
loads without regenerating them."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from whichlora.techniques.options import Knob, Options, option, up_to, up_to_narrowest
from whichlora.techniques.technique import AdapterSettings, Technique


class VeraOptions(Options):
    d_initial: Annotated[float, Field(gt=0, le=10)] = option(
        0.1, "initial value of the trained scaling vector d"
    )


def _vera(settings: AdapterSettings, options: Any) -> Any:
    from peft import VeraConfig

    return VeraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        vera_dropout=settings.dropout,
        target_modules=settings.target_modules,
        d_initial=options.d_initial,
        save_projection=True,
    )


def _pvera(settings: AdapterSettings, options: Any) -> Any:
    from peft import PveraConfig

    return PveraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        pvera_dropout=settings.dropout,
        target_modules=settings.target_modules,
        d_initial=options.d_initial,
        save_projection=True,
    )


class VbLoraOptions(Options):
    num_vectors: Annotated[int, Field(ge=2, le=65536)] = option(
        256, "vectors in the shared bank (the capacity knob a budget solves)"
    )
    vector_length: Annotated[int, Field(ge=1, le=4096)] = option(
        32, "length of each bank vector; must divide every targeted layer's width"
    )
    topk: Annotated[int, Field(ge=1, le=16)] = option(2, "bank vectors mixed per sub-vector")


def _vblora(settings: AdapterSettings, options: Any) -> Any:
    from peft import VBLoRAConfig

    return VBLoRAConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        num_vectors=options.num_vectors,
        vector_length=options.vector_length,
        topk=options.topk,
        vblora_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


def _randlora(settings: AdapterSettings, options: Any) -> Any:
    from peft import RandLoraConfig

    return RandLoraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        randlora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        save_projection=True,
    )


class TinyLoraOptions(Options):
    u: Annotated[int, Field(ge=1, le=65536)] = option(
        64, "trained vector length per layer (the capacity knob a budget solves)"
    )


def _tinylora(settings: AdapterSettings, options: Any) -> Any:
    from peft import TinyLoraConfig

    return TinyLoraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        u=options.u,
        tinylora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        save_projection=True,
    )


VERA = Technique(
    "vera",
    "Frozen shared random low-rank matrices; only per-layer scaling vectors are trained.",
    "Kopiczko et al. 2024, VeRA: Vector-based Random Matrix Adaptation, arXiv:2310.11454",
    _vera,
    options=VeraOptions,
    cost_next_to_baseline=True,
)

PVERA = Technique(
    "pvera",
    "VeRA with a probabilistic (sampled) scaling of the shared random bases.",
    "Fein-Ashley et al. 2025, PVeRA: Probabilistic Vector-Based Random Matrix Adaptation, "
    "arXiv:2512.07703",
    _pvera,
    options=VeraOptions,
)

VBLORA = Technique(
    "vblora",
    "Every low-rank factor is a top-k mix of vectors from one shared, trained vector bank.",
    "Li et al. 2024, VB-LoRA: Extreme Parameter Efficient Fine-Tuning with Vector Banks, "
    "arXiv:2405.15179",
    _vblora,
    options=VbLoraOptions,
    knob=Knob(
        "num_vectors",
        lambda shapes, o: range(max(2, o.topk), 65537),
        help="vectors in the shared bank",
    ),
)

RANDLORA = Technique(
    "randlora",
    "Full-rank update from many frozen random low-rank bases; only their diagonal "
    "scalings are trained (a larger r means fewer bases, so fewer parameters).",
    "Albert et al. 2025, RandLoRA: Full-rank parameter-efficient fine-tuning of large "
    "models, arXiv:2502.00987",
    _randlora,
    # Fewer, larger bases as r rises, but peft rounds the basis count up per layer, so the
    # count falls only roughly: every rank is counted.
    knob=Knob("rank", up_to_narrowest, trend="any", help="rank of each random basis"),
)

TINYLORA = Technique(
    "tinylora",
    "A tiny trained vector per layer projected through fixed random tensors onto a "
    "truncated SVD of W.",
    "Morris et al. 2026, Learning to Reason in 13 Parameters, arXiv:2602.04118",
    _tinylora,
    options=TinyLoraOptions,
    knob=Knob("u", up_to(65536), help="trained vector length per layer"),
)
