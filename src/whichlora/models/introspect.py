"""Questions every stage asks of a loaded model or tokenizer, answered in one place each."""

from __future__ import annotations

import inspect
from typing import Any


def unwrap_peft(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (or the model itself when not wrapped)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the model's forward takes `logits_to_keep` (skip logits not needed)."""
    try:
        params = inspect.signature(unwrap_peft(model).forward).parameters
    except (TypeError, ValueError):
        return False
    return "logits_to_keep" in params


def head_takes_position_mask(model: Any) -> bool:
    """Whether the model applies its LM head to chosen positions only: transformers' causal LMs
    take `logits_to_keep` as a boolean (batch, seq) mask through `slice_logits_to_keep` and
    return logits for the True positions, flattened; models whose module does not use that
    helper (older or remote code) do not."""
    import sys

    base = unwrap_peft(model)
    module = sys.modules.get(type(base).__module__)
    return accepts_logits_to_keep(model) and hasattr(module, "slice_logits_to_keep")


def pad_id(tokenizer: Any) -> int:
    """The id to pad with: the pad token, else end-of-sequence, else 0 (always masked out)."""
    pad = tokenizer.pad_token_id
    pad = tokenizer.eos_token_id if pad is None else pad
    return 0 if pad is None else int(pad)
