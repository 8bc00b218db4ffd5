"""Mixed precision for one run: which compute dtype the forward uses, and fp16's loss scaling.

Only the forward runs under `torch.autocast`; the adapter's weights, their gradients and the
optimizer's state stay float32 (PEFT keeps adapter weights float32 even on a bfloat16 base,
`autocast_adapter_dtype`), and the loss is computed in float32 (transformers upcasts the logits).
fp16 has a narrow exponent range, so its gradients are scaled up before backward and unscaled
before clipping (`torch.amp.GradScaler`); bf16 has float32's range and needs no scaling.

"auto" is resolved by `models.precision.resolve_precision`, for training as for scoring: bf16
where its matmuls are fast, fp32 elsewhere, pinned per study folder so a run's key names the
precision it really trained in.

On CPU, bf16 runs with attention kept in float32 (`float32_attention`): the linear layers'
matmuls are where bf16 pays, while SDPA's CPU backward is slower in bf16 (BENCHMARKS.md,
section 10, measures both).
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

DEFAULT = "fp32"  # what every run trained in before `training.precision` existed


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
    under autocast. Elsewhere -- fp32, GPUs (whose bf16 attention kernels are fast), other
    attention implementations -- nothing changes."""
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


HALF_WEIGHT = "_whichlora_half_weight"
DDP_IGNORE = "_ddp_params_and_buffers_to_ignore"  # what torch's DDP leaves out of its syncs


def _half_linear(self: Any, x: Any) -> Any:
    import torch

    return torch.nn.functional.linear(x, getattr(self, HALF_WEIGHT), self.bias)


@contextmanager
def half_frozen_linears(model: Any, precision: str) -> Iterator[int]:
    """While training under bf16 or fp16 autocast, every frozen `nn.Linear` (the base's
    projections, the LM head) multiplies by a copy of its weight in the compute dtype made once,
    instead of autocast casting each weight at every forward; yields how many. Autocast casts to
    exactly that copy, so the products and results are the same to the bit (tested). The float32
    weights stay what everything else reads (DoRA's weight norm, saving, merging); undone after."""
    if precision not in ("bf16", "fp16"):
        yield 0
        return
    import torch

    dtype = compute_dtype(precision)
    patched = {
        name: m
        for name, m in model.named_modules()
        if type(m) is torch.nn.Linear
        and not m.weight.requires_grad
        and m.weight.is_floating_point()
        and m.weight.dtype != dtype
    }
    for module in patched.values():
        # a buffer, so a compiled block takes it as an input like the weight it stands for
        module.register_buffer(HALF_WEIGHT, module.weight.detach().to(dtype), persistent=False)
        module.forward = types.MethodType(_half_linear, module)
    # DDP (several processes) would broadcast every buffer at every forward: not these copies
    ignored = getattr(model, DDP_IGNORE, None)
    copies = [f"{name}.{HALF_WEIGHT}" if name else HALF_WEIGHT for name in patched]
    setattr(model, DDP_IGNORE, [*(ignored or ()), *copies])
    try:
        yield len(patched)
    finally:
        for module in patched.values():
            del module.forward
            del module._buffers[HALF_WEIGHT]
        if ignored is None:
            delattr(model, DDP_IGNORE)
        else:
            setattr(model, DDP_IGNORE, ignored)
