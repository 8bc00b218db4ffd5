"""The arithmetic a stage needed, and the machine's matmul speed: a floor for every stage's time.

A transformer's forward costs 2 multiply-adds' worth of FLOPs per weight per token through the
matmul weights (the body: every 2-D weight but the embedding lookup) plus 2 per LM-head weight
per position whose logits are read. Training a frozen base adds the input gradients (one more
forward's worth through the body, none for the frozen weights' own gradients) and the adapter's
full backward (6 per trainable weight per token). Attention scores (~3% at ~100-token sequences)
and elementwise work are not counted: the floor is a lower bound.

Floor time = FLOPs / the machine's matmul throughput (large GEMMs, measured at the study's start
in the precision the stage runs in); efficiency = floor time / measured time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

GEMM_SIZE = 2048
GEMM_REPEATS = 5


@dataclass
class Work:
    """Tokens through the body and the FLOPs they needed, accumulated over a stage."""

    tokens: int = 0
    flops: float = 0.0


_ACTIVE: list[Work] = []
_PARAMS: dict[int, tuple[int, int]] = {}


@contextmanager
def counting() -> Iterator[Work]:
    """Collect what every forward (`add_forward`) in the block needed."""
    work = Work()
    _ACTIVE.append(work)
    try:
        yield work
    finally:
        _ACTIVE.remove(work)


def matmul_params(model: Any) -> tuple[int, int]:
    """(body, head): weights the body's matmuls read per token, and the LM head's per position.

    Counted once per model object: every 2-D parameter except the input embedding and the
    output head (tied or not), which is counted as the head."""
    cached = _PARAMS.get(id(model))
    if cached is not None:
        return cached
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    skip = {id(p) for m in (embed, head) if m is not None for p in m.parameters()}
    body = sum(p.numel() for p in model.parameters() if p.ndim >= 2 and id(p) not in skip)
    head_n = int(head.weight.numel()) if head is not None else 0
    _PARAMS.clear()  # one scoring model at a time: ids of freed models may be reused
    _PARAMS[id(model)] = (int(body), head_n)
    return _PARAMS[id(model)]


def add_forward(model: Any, tokens: int, head_positions: int) -> None:
    """Record a forward of `tokens` real (non-padding) tokens reading `head_positions` logits."""
    if not _ACTIVE:
        return
    body, head = matmul_params(model)
    flops = 2.0 * body * tokens + 2.0 * head * head_positions
    for work in _ACTIVE:
        work.tokens += int(tokens)
        work.flops += flops


def training_flops(tokens: int, body: int, head: int, trainable: int, labelled: int) -> float:
    """A frozen base's forward and input gradients (4 per body weight per token), the LM head's
    the same at labelled positions, and the adapter's forward and backward (6 per weight)."""
    return 4.0 * body * tokens + 4.0 * head * labelled + 6.0 * trainable * tokens


def config_matmul_params(config: Any) -> tuple[int, int]:
    """`matmul_params` of the model a config describes, counted on the meta device (no
    weights): what training's floor is computed from without loading the model."""
    import warnings

    import torch
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config)
    try:
        return matmul_params(model)
    finally:
        _PARAMS.pop(id(model), None)


def matmul_gflops(
    dtype: str = "float32",
    device: str = "cpu",
    size: int = GEMM_SIZE,
    repeats: int = GEMM_REPEATS,
    rows: int | None = None,
) -> float:
    """The best of `repeats` size^3 GEMMs on `device` (torch's current threads on a CPU), in
    GFLOP/s: the speed a stage's matmuls could reach here at best. `rows` < size times the
    size x size matrix instead (rows=1: the matrix-vector speed of decoding one token)."""
    import torch

    kind = getattr(torch, dtype)
    rows = size if rows is None else rows
    a = torch.randn(rows, size, device=device).to(kind)
    b = torch.randn(size, size, device=device).to(kind)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    torch.mm(a, b)  # warm-up: packs, thread pool
    sync()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        sync()
        best = min(best, time.perf_counter() - started)
    return 2.0 * rows * size**2 / best / 1e9


def machine_throughput(
    device: str = "cpu", size: int = GEMM_SIZE, repeats: int = GEMM_REPEATS
) -> dict[str, Any]:
    """float32 and bfloat16 GEMM GFLOP/s on `device` now, with the thread count they ran on."""
    import torch

    return {
        "fp32_gflops": matmul_gflops("float32", device, size, repeats),
        "bf16_gflops": matmul_gflops("bfloat16", device, size, repeats),
        "threads": torch.get_num_threads(),
        "device": device,
        "gemm": f"{size}^3, best of {repeats}",
    }
