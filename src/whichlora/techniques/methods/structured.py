"""Adapters whose update has a block or shard structure: BD-LoRA (one LoRA factor
block-diagonal, for tensor-parallel serving), GraLoRA (k x k blocks, each its own small LoRA)
and MiSS (one small trained shard expanded over the weight)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from whichlora.techniques.methods.lora import lora_config
from whichlora.techniques.options import (
    Knob,
    Options,
    multiples_up_to_narrowest,
    option,
    up_to_narrowest,
)
from whichlora.techniques.technique import AdapterSettings, Technique

# Llama-style names (q/k/v/o, gate/up/down): peft's guideline for which factor is block-diagonal.
BD_A = ["o_proj", "down_proj"]
BD_B = ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"]


class BdLoraOptions(Options):
    nblocks: Annotated[int, Field(ge=1, le=64)] = option(
        2, "blocks per block-diagonal factor (the serving shard count); the rank is a multiple"
    )


def _bdlora(settings: AdapterSettings, options: Any) -> Any:
    from peft import BdLoraConfig

    return lora_config(
        settings,
        use_bdlora=BdLoraConfig(
            target_modules_bd_a=BD_A,
            target_modules_bd_b=BD_B,
            nblocks=options.nblocks,
            match_strict=False,  # layers outside the Llama names stay plain LoRA
        ),
    )


def _bdlora_ranks(shapes: Any, options: Any) -> Any:
    return multiples_up_to_narrowest(options.nblocks)(shapes, options)


class GraloraOptions(Options):
    gralora_k: Annotated[int, Field(ge=1, le=16)] = option(
        2, "blocks per side (k x k sub-blocks); the rank is a multiple of k"
    )


def _gralora(settings: AdapterSettings, options: Any) -> Any:
    from peft import GraloraConfig

    return GraloraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        alpha=settings.lora_alpha,
        gralora_k=options.gralora_k,
        gralora_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


def _gralora_ranks(shapes: Any, options: Any) -> Any:
    return multiples_up_to_narrowest(options.gralora_k)(shapes, options)


class MissOptions(Options):
    variant: Literal["default", "bat", "mini"] = option(
        "default", "MiSS ('default'), its Bat variant, or the mini variant (mini_r)"
    )
    mini_r: Annotated[int, Field(ge=1, le=4096)] = option(
        1, "mini variant: shard rows shared; must divide the out width"
    )


def _miss(settings: AdapterSettings, options: Any) -> Any:
    from peft import MissConfig

    return MissConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        miss_dropout=settings.dropout,
        mini_r=options.mini_r,
        init_weights=True if options.variant == "default" else options.variant,
        target_modules=settings.target_modules,
    )


BDLORA = Technique(
    "bdlora",
    "LoRA with one factor block-diagonal per layer (A for o/down, B for q/k/v/gate/up), "
    "so tensor-parallel serving needs no extra communication.",
    "Wang et al. 2025, Block-Diagonal LoRA for Eliminating Communication Overhead in Tensor "
    "Parallel LoRA Serving (peft BdLoraConfig)",
    _bdlora,
    options=BdLoraOptions,
    knob=Knob("rank", _bdlora_ranks, help="rank of the update; a multiple of nblocks"),
)

MISS = Technique(
    "miss",
    "Matrix shard sharing: one small trained shard is expanded over each weight (ex-Bone).",
    "Kang & Yin 2024, MiSS: Balancing LoRA Performance and Efficiency with Simple Shard "
    "Sharing, arXiv:2409.15371",
    _miss,
    options=MissOptions,
    knob=Knob("rank", up_to_narrowest, help="shard size; must divide the in width"),
)

GRALORA = Technique(
    "gralora",
    "Granular LoRA: the weight is split into k x k blocks, each with its own small LoRA.",
    "Jung et al. 2025, GraLoRA: Granular Low-Rank Adaptation for Parameter-Efficient "
    "Fine-Tuning, arXiv:2505.20355",
    _gralora,
    options=GraloraOptions,
    knob=Knob("rank", _gralora_ranks, help="total rank; a multiple of gralora_k"),
)
