"""DoRA, with its weight norm computed without materialising the updated weight: same function,
a fraction of the memory traffic.

DoRA (PEFT's `DoraLinearLayer`) scales each output row of W + s·BA by magnitude / ||W_i + s·(BA)_i||
and, at every forward, builds BA (through an identity matrix), adds it to a copy of W and takes
the row norms: several passes over a full-size matrix per layer and step (BENCHMARKS.md, section
10, times both norms). The same norm expands into small pieces:

    ||W_i + s·(BA)_i||² = ||W_i||² + 2s·(W Aᵀ)_i · B_i + s²·B_i (A Aᵀ) B_iᵀ

where ||W_i||² is fixed while W is frozen (cached, recomputed if W changes in place, e.g. a merge),
W Aᵀ is one skinny matmul that reads W once, and A Aᵀ is r x r. The norm is detached, as in PEFT
(DoRA section 4.3), so gradients are unchanged; it is computed in float32 (PEFT takes it in the
input's dtype, bf16 under autocast for some layers). Layers this does not cover -- convolutions,
embeddings, fan_in_fan_out (GPT-2's Conv1D), quantised bases -- keep PEFT's own forward.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from whichlora.techniques.methods.lora import lora_config
from whichlora.techniques.technique import Technique


def _covered(layer: Any, base_layer: Any) -> bool:
    import torch

    weight = getattr(base_layer, "weight", None)
    return (
        type(base_layer) is torch.nn.Linear
        and not layer.fan_in_fan_out
        and isinstance(weight, torch.Tensor)
        and weight.dtype.is_floating_point
        and weight.ndim == 2
    )


def _squared_row_norms(layer: Any, weight: Any) -> Any:
    """||W_i||² in float32, kept while the frozen weight is the same tensor at the same version.
    Inside a compiled block (training.compile) it is computed where it is needed: the cache's
    checks would break the block's graph."""
    import torch

    if torch.compiler.is_compiling():
        return weight.float().pow(2).sum(dim=1)
    tag = (weight.data_ptr(), weight._version, weight.shape, weight.device)
    held = getattr(layer, "_whichlora_row_norms", None)
    if held is None or held[0] != tag:
        held = (tag, weight.detach().float().pow(2).sum(dim=1))
        layer._whichlora_row_norms = held
    return held[1]


def factored_weight_norm(
    layer: Any, base_layer: Any, lora_a: Any, lora_b: Any, scaling: float
) -> Any:
    """Row norms of W + scaling·BA, float32, detached, from W Aᵀ and A Aᵀ (no full-size copy)."""
    import torch

    with torch.no_grad(), torch.autocast(base_layer.weight.device.type, enabled=False):
        weight = base_layer.weight.detach()
        a = lora_a.weight.detach().float()
        b = lora_b.weight.detach().float()
        cross = (weight.float() @ a.T * b).sum(dim=1)  # (W Aᵀ)_i · B_i
        lora = ((b @ (a @ a.T)) * b).sum(dim=1)  # B_i (A Aᵀ) B_iᵀ = ||(BA)_i||²
        squared = _squared_row_norms(layer, weight) + 2.0 * scaling * cross + scaling**2 * lora
        return squared.clamp_min(0.0).sqrt()


@lru_cache(maxsize=1)
def _dora_class() -> Any:
    """PEFT's DoRA linear layer with `factored_weight_norm`: built once, on first use (PEFT is
    imported only then)."""
    from peft.tuners.lora.dora import DoraLinearLayer

    class FactoredNormDoraLinearLayer(DoraLinearLayer):  # type: ignore[misc]
        """Given only to layers `_covered` holds for (checked once, when it is given)."""

        def forward(  # type: ignore[override]
            self,
            x: Any,
            *,
            lora_A: Any,
            lora_B: Any,
            scaling: float,
            base_layer: Any,
            base_result: Any = None,
            adapter_name: str = "default",
        ) -> Any:
            import torch.nn.functional as F

            weight_norm = factored_weight_norm(self, base_layer, lora_A, lora_B, scaling)
            mag_norm_scale = (self.weight / weight_norm).view(1, -1)
            lora_result = lora_B(lora_A(x))
            if base_result is not None:
                if base_layer.bias is not None:
                    base_result = base_result - base_layer.bias
            else:
                base_result = F.linear(x, base_layer.weight.to(x.dtype))
            return (mag_norm_scale - 1) * base_result + mag_norm_scale * lora_result * scaling

    return FactoredNormDoraLinearLayer


def use_factored_dora_norm(model: Any) -> int:
    """Give every PEFT DoRA linear layer of `model` whose base layer is covered the factored
    weight norm; returns how many. Other DoRA layers, and models without any, keep PEFT's."""
    from peft.tuners.lora.dora import DoraLinearLayer

    count = 0
    for module in model.modules():
        magnitudes = getattr(module, "lora_magnitude_vector", None)
        if not magnitudes or not hasattr(module, "get_base_layer"):
            continue
        base_layer = module.get_base_layer()
        for dora in magnitudes.values():
            if type(dora) is DoraLinearLayer and _covered(dora, base_layer):
                dora.__class__ = _dora_class()
                count += 1
    return count


DORA = Technique(
    "dora",
    "Weight-decomposed LoRA: a trained magnitude vector times a LoRA-updated direction.",
    "Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation, arXiv:2402.09353",
    lambda s, o: lora_config(s, use_dora=True),
    after_build=use_factored_dora_norm,
    cost_next_to_baseline=True,
)
