"""The precision evaluation and embedding score in: float32, or bfloat16 where it runs fast.

bfloat16 halves the bytes every matmul reads and, on GPUs and on CPUs with AMX or AVX512-BF16,
runs the matmuls several times faster (a 16 x 96-token forward of SmolLM2-135M: 1.8x here).
`auto` means bfloat16 exactly there and float32 elsewhere; the study pins what `auto` became when
it opens, so a study's keys and scores never change with the machine it resumes on.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

FP32, BF16, AUTO = "fp32", "bf16", "auto"
PRECISIONS = (FP32, BF16, AUTO)
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
CPU_BF16_ENV = "WHICHLORA_CPU_BF16"  # 1 / 0: treat this CPU as with / without fast bf16


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); an empty set where /proc/cpuinfo is missing."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@lru_cache(maxsize=8)
def fast_bf16(device: str) -> bool:
    """Whether bfloat16 matmuls beat float32 on `device` ('cuda...' or 'cpu'): CUDA, or a CPU
    with AMX or AVX512-BF16 (from /proc/cpuinfo, else torch's reported CPU capability), unless
    WHICHLORA_CPU_BF16 says 1 or 0."""
    import torch

    if device.startswith("cuda"):
        # emulated bf16 (older GPUs) is slower than fp32: only native support counts
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device != "cpu":
        return False
    told = os.environ.get(CPU_BF16_ENV, "").strip()
    if told in ("0", "1"):  # the user's word over the detection (and the tests' fixed CPU)
        return told == "1"
    flags = cpu_flags()
    if flags:
        return any(flag in flags for flag in BF16_CPU_FLAGS)
    return torch.backends.cpu.get_cpu_capability() in ("AVX512_BF16", "AMX")


def resolve_precision(precision: str, device: str) -> str:
    """fp32 or bf16: `auto` becomes bf16 where `fast_bf16(device)`, else fp32."""
    if precision != AUTO:
        return precision
    return BF16 if fast_bf16(device) else FP32


def scoring_dtype(precision: str, model_dtype: str) -> str:
    """The torch dtype name a model scores in: bf16 casts to bfloat16; fp32 keeps the weights as
    loaded (`model.dtype`, float32 unless the study says otherwise)."""
    return "bfloat16" if precision == BF16 else model_dtype
