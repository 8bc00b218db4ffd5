"""Mixed precision for one run: which compute dtype the forward uses, and fp16's loss scaling.

Only the forward runs under `torch.autocast`; the adapter's weights, their gradients and the
optimizer's state stay float32 (PEFT keeps adapter weights float32 even on a bfloat16 base,
`autocast_adapter_dtype`), and the loss is computed in float32 (transformers upcasts the logits).
fp16 has a narrow exponent range, so its gradients are scaled up before backward and unscaled
before clipping (`torch.amp.GradScaler`); bf16 has float32's range and needs no scaling.

"auto" means bf16 where its matmuls are fast -- a CUDA GPU that has it, or a CPU with AMX or
AVX512-BF16 -- and fp32 elsewhere (fp16 is never chosen for the user: it can overflow). A study
pins what "auto" became when its folder opens (study/context.py), so a run's key names the
precision it really trained in and never follows the machine a study resumes on.

On CPU, bf16 runs with attention kept in float32 (`float32_attention`): the linear layers'
matmuls are where bf16 pays (AMX: 6x float32's GEMM speed), while SDPA's CPU backward is
slower in bf16. On the quickstart a LoRA run took 1.35x less time than in fp32 (BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
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


def resolve_precision(
    precision: str,
    device: str,
    gpus_per_run: float | None = None,
    *,
    cpu_bf16: bool | None = None,
    model_dtype: str = "float32",
) -> str:
    """The precision "auto" stands for on this device; an explicit choice is returned as is.

    `cpu_bf16` overrides the CPU's detected bf16 speed: False gives what "auto" meant before it
    chose bf16 on CPUs (fp32), for study folders that were pinned that way. float16 weights on
    CPU keep their own arithmetic: bf16 autocast over them would mix two half formats (and hide
    the overflows fp16 training shows)."""
    if precision != "auto":
        return precision
    if not on_gpu(device, gpus_per_run):
        fast = fast_bf16("cpu") if cpu_bf16 is None else cpu_bf16
        return "bf16" if fast and model_dtype != "float16" else "fp32"
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


FLOAT32_SDPA = "sdpa_float32"  # transformers' SDPA attention, run in float32 under autocast


def _float32_sdpa(module: Any, query: Any, key: Any, value: Any, mask: Any, **kwargs: Any) -> Any:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    with torch.autocast(query.device.type, enabled=False):
        return sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), mask, **kwargs
        )


def _register_float32_sdpa() -> None:
    """transformers' own extension points: the attention function and, so the padding mask is
    built as for "sdpa", its mask function (an unregistered name gets no mask at all)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(FLOAT32_SDPA, _float32_sdpa)
    AttentionMaskInterface.register(FLOAT32_SDPA, sdpa_mask)


@contextmanager
def float32_attention(model: Any, precision: str, device_type: str) -> Iterator[bool]:
    """While training in bf16 on CPU, run a transformers model's SDPA attention in float32
    (yields whether it does). CPU autocast would cast SDPA's inputs to bf16; here it is off for
    the attention kernel alone, q, k and v upcast, and the output goes on to its projection
    under autocast as before. Elsewhere -- fp32,
    GPUs (whose bf16 attention kernels are fast), other attention implementations -- nothing
    changes."""
    config = getattr(model, "config", None)
    if (
        precision != "bf16"
        or device_type != "cpu"
        or getattr(config, "_attn_implementation", None) != "sdpa"
    ):
        yield False
        return
    _register_float32_sdpa()
    config._attn_implementation = FLOAT32_SDPA
    try:
        yield True
    finally:
        config._attn_implementation = "sdpa"
