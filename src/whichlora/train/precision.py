"""Mixed precision for one run: which compute dtype the forward uses, and fp16's loss scaling.

Only the forward runs under `torch.autocast`; the adapter's weights, their gradients and the
optimizer's state stay float32 (PEFT keeps adapter weights float32 even on a bfloat16 base,
`autocast_adapter_dtype`), and the loss is computed in float32 (transformers upcasts the logits).
fp16 has a narrow exponent range, so its gradients are scaled up before backward and unscaled
before clipping (`torch.amp.GradScaler`); bf16 has float32's range and needs no scaling.

"auto" is resolved when the study is planned, so a run's key names the precision it really
trained in: fp32 on CPU (bf16 matmuls on most CPUs are slower than float32), bf16 on a CUDA GPU
that supports it, fp32 on one that does not (fp16 is never chosen for the user: it can overflow).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from whichlora.models.precision import fast_bf16

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT = "fp32"  # what every run trained in before `training.precision` existed


def on_gpu(device: str, gpus_per_run: float | None = None) -> bool:
    """Whether a run with this `model.device` trains on a CUDA GPU. A Ray cluster's GPUs may not
    be visible to the driver that plans the study: `executor.gpus_per_run > 0` says they exist."""
    if device.startswith("cuda"):
        return True
    if device != "auto":
        return False
    if gpus_per_run:  # None (not set) or 0: no GPUs asked for
        return True
    import torch

    return torch.cuda.is_available()


def resolve_precision(precision: str, device: str, gpus_per_run: float | None = None) -> str:
    """The precision "auto" stands for on this device; an explicit choice is returned as is.
    Unlike scoring (models/precision.py), training stays fp32 on CPUs even with AMX: SDPA's
    CPU backward is slower in bf16, and a step gained only 1.1x (BENCHMARKS.md)."""
    if precision != "auto":
        return precision
    if not on_gpu(device, gpus_per_run):
        return "fp32"
    import torch

    if not torch.cuda.is_available():  # planned on a driver without the cluster's GPUs
        return "bf16"
    return "bf16" if fast_bf16("cuda") else "fp32"


def compute_dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(precision: str, device_type: str) -> AbstractContextManager[Any]:
    """The forward's context: autocast to the run's compute dtype, nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    import torch

    return torch.autocast(device_type=device_type, dtype=compute_dtype(precision))


def grad_scaler(precision: str, device_type: str) -> Any:
    """A loss scaler, enabled for fp16 only (disabled, it passes every call through)."""
    import torch

    return torch.amp.GradScaler(device_type, enabled=precision == "fp16")
