"""The loss of one batch: the objective a run minimises and the cross-entropy its curve reports."""

from __future__ import annotations

from typing import Any

from whichlora.errors import WhichloraError
from whichlora.train.prompting import IGNORE_INDEX


def head_on_label_positions(model: Any) -> bool:
    """True when the model can apply its LM head to chosen positions only (a boolean
    `logits_to_keep` mask); other models get the full logits."""
    from whichlora.models.introspect import head_takes_position_mask

    return head_takes_position_mask(model)


def check_packing(model: Any) -> None:
    """Packed rows (train/batching.py) keep attention inside each example only where the model
    builds its mask with transformers' masking utilities, which read packed sequences from the
    position ids; any other model would let examples see each other."""
    import sys

    from whichlora.models.introspect import unwrap_peft

    module = sys.modules.get(type(unwrap_peft(model)).__module__)
    if not hasattr(module, "create_causal_mask"):
        raise WhichloraError(
            f"training.packing: {type(unwrap_peft(model)).__name__} does not build its attention "
            "mask with transformers' masking utilities, so packed examples would attend to each "
            "other. Fix: set training.packing: false."
        )


def real_tokens(share: list[Any]) -> int:
    """Non-padding tokens of a micro-batch: examples, or packed rows of examples."""
    return sum(e.length for item in share for e in (item if isinstance(item, list) else [item]))


def batch_losses(
    model: Any, batch: dict[str, Any], label_positions_only: bool, forward: Any = None
) -> tuple[Any, Any]:
    """(objective, cross-entropy) of a right-padded or packed batch: the tensor to minimise, and
    the mean next-token loss over the labelled tokens, detached (read once per step: no host
    sync per micro-batch).

    The two differ only for techniques that add a penalty inside the model's forward (AdaLoRA
    adds its orthogonality term to the returned loss). Loss curves and summaries report the
    cross-entropy, so every technique's curve means the same thing.

    With `label_positions_only`, the LM head and the loss run only at positions whose next token
    is labelled (the response, under response-only loss): the logits at prompt and padding
    positions are discarded by the loss anyway, and on a small model the vocabulary projection
    is a fifth of the matmul FLOPs (SmolLM2-135M: 28M of 135M weights), plus a float copy and
    a log-softmax as wide. Same loss and gradients as the full-logits call.

    `forward` is what the batch runs through when it is not the model itself (the DDP wrapper
    of a multi-process run); `model` is still asked whether it adds a penalty.
    """
    import torch

    call = forward or model
    # no cache: transformers reads packed rows from the position ids only without one
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    inputs["use_cache"] = False

    if label_positions_only:
        shifted = torch.nn.functional.pad(batch["labels"][:, 1:], (0, 1), value=IGNORE_INDEX)
        keep = shifted != IGNORE_INDEX
        targets = shifted[keep]
        out = call(
            **inputs,
            labels=targets,
            shift_labels=targets,
            logits_to_keep=keep,
        )
    else:
        out = call(**inputs, labels=batch["labels"])
        targets = batch["labels"][:, 1:]
    objective = out.loss
    if not _adds_penalty(model):
        return objective, objective.detach()
    with torch.no_grad():
        logits = out.logits if label_positions_only else out.logits[:, :-1]
        ce = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE_INDEX,
        )
    return objective, ce


def _adds_penalty(model: Any) -> bool:
    """AdaLoRA's model adds `orth_reg_weight * penalty` to the loss it returns."""
    config = getattr(model, "peft_config", {}).get("default")
    return float(getattr(config, "orth_reg_weight", 0.0) or 0.0) > 0


def labelled_tokens(batch: dict[str, Any]) -> int:
    """Next-token targets the loss counts: labelled positions after the first."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
