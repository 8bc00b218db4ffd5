"""What `precision: auto` stands for, for training and for scoring alike: bfloat16 where it runs
fast, float32 elsewhere. This module is the one place that decides it.

bfloat16 halves the bytes every matmul reads and, on GPUs and on CPUs with AMX or AVX512-BF16,
runs the matmuls several times faster (BENCHMARKS.md, sections 9 and 10). fp16 is never chosen
for the user: it can overflow. A study pins what `auto` became when its folder opens
(study/context.py), so its keys and scores never change with the machine it resumes on.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

FP32, BF16, AUTO = "fp32", "bf16", "auto"
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


def on_gpu(device: str, gpus_per_run: float | None = None) -> bool:
    """Whether work on `device` (a study's `model.device`, or one already resolved) runs on a
    CUDA GPU. A Ray cluster's GPUs may not be visible to the driver that plans the study:
    `executor.gpus_per_run > 0` says they exist."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    if gpus_per_run:  # None (not set) or 0: no GPUs asked for
        return True
    import torch

    return torch.cuda.is_available()


def resolve_precision(
    precision: str,
    device: str,
    gpus_per_run: float | None = None,
    *,
    cpu_bf16: bool | None = None,
    model_dtype: str = "float32",
) -> str:
    """The precision "auto" stands for on `device`; an explicit choice is returned as is.

    A CUDA GPU this process cannot see (a cluster's, planned from its driver) counts as a fast
    one. `cpu_bf16` overrides the CPU's detected bf16 speed: False gives what "auto" meant for
    training before it chose bf16 on CPUs (fp32), for study folders pinned that way. float16
    weights on CPU keep their own arithmetic: bf16 autocast over them would mix two half
    formats (and hide the overflows fp16 training shows). Other devices (mps) get fp32."""
    if precision != AUTO:
        return precision
    if on_gpu(device, gpus_per_run):
        import torch

        if not torch.cuda.is_available():
            return BF16
        return BF16 if fast_bf16("cuda") else FP32
    if device not in ("auto", "cpu"):
        return FP32
    fast = fast_bf16("cpu") if cpu_bf16 is None else cpu_bf16
    return BF16 if fast and model_dtype != "float16" else FP32


def scoring_dtype(precision: str, model_dtype: str) -> str:
    """The torch dtype name a model scores in: bf16 casts to bfloat16; fp32 keeps the weights as
    loaded (`model.dtype`, float32 unless the study says otherwise)."""
    return "bfloat16" if precision == BF16 else model_dtype
