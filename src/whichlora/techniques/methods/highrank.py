"""High-rank updates from LoRA's parameter count: HiRA (the Hadamard product of W with a low-rank
BA) and SHiRA (a fixed random sparse mask of W's entries, as many as LoRA at rank r trains)."""

from __future__ import annotations

from typing import Any

from whichlora.techniques.options import Knob
from whichlora.techniques.technique import AdapterSettings, Technique


def _hira(settings: AdapterSettings, options: Any) -> Any:
    from peft import HiraConfig

    return HiraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        hira_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


def _shira(settings: AdapterSettings, options: Any) -> Any:
    from peft import ShiraConfig

    # The mask is drawn from the run's seeded torch RNG (seed_everything before the adapter).
    return ShiraConfig(
        task_type="CAUSAL_LM", r=settings.rank, target_modules=settings.target_modules
    )


def _leading_mask(base_layer: Any, r: int, **kwargs: Any) -> Any:
    """A CPU mask with as many entries as SHiRA's random mask (r x (in + out)): same count."""
    import torch

    out_features, in_features = base_layer.weight.shape
    with torch.device("cpu"):
        mask = torch.zeros(out_features * in_features)
        mask[: r * (in_features + out_features)] = 1.0
        return mask.view(out_features, in_features)


def _countable_on_meta(config: Any) -> None:
    config.mask_fn = _leading_mask  # peft's random mask needs torch.nonzero, absent on meta


HIRA = Technique(
    "hira",
    "Hadamard product of W with a low-rank BA: a high-rank update from LoRA's parameters.",
    "Huang et al. 2025, HiRA: Parameter-Efficient Hadamard High-Rank Adaptation for Large "
    "Language Models, ICLR 2025, https://openreview.net/forum?id=TwJrTz9cRS",
    _hira,
)

SHIRA = Technique(
    "shira",
    "Sparse high-rank adapter: a fixed random mask of W's entries is trained, as many as "
    "LoRA at rank r would train.",
    "Bhardwaj et al. 2024, Sparse High Rank Adapters, arXiv:2406.13175",
    _shira,
    knob=Knob(
        "rank",
        lambda shapes, _: range(1, min(i * o // (i + o) for i, o in shapes) + 1),
        help="sparsity given as the LoRA rank of equal count",
    ),
    meta_config=_countable_on_meta,
)
