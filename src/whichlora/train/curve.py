"""The learning curve (`training.validate_every`): validation NLL read beside the training.

A run is long enough when its validation NLL has flattened; the training loss cannot say so
(each step sees other languages and lengths). Every N steps the mean response NLL of the study's
validation examples (the examples the `validate` unit scores, encoded as the training encodes
them, each example's mean over its response tokens, then the mean over examples as the learning
rate choice takes it) is computed in eval mode under the run's own autocast, with no random draws,
so the trained adapter is the same with or without it. Compiled blocks are bypassed for it: a
no-grad forward would compile them a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from whichlora.train.batching import collate
from whichlora.train.compiling import eager_layers
from whichlora.train.precision import autocast
from whichlora.train.prompting import EncodedExample


def validation_nll(
    model: Any,
    examples: Sequence[EncodedExample],
    pad_id: int,
    batch_size: int,
    precision: str,
) -> float:
    """Mean over examples of each example's mean NLL per response token."""
    import torch

    device = next(p.device for p in model.parameters() if p.requires_grad)
    order = sorted(range(len(examples)), key=lambda i: examples[i].length)
    per_example: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), eager_layers(model):
            for start in range(0, len(order), batch_size):
                batch = collate([examples[i] for i in order[start : start + batch_size]], pad_id)
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(precision, device.type):
                    logits = model(
                        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                    ).logits
                labels = batch["labels"][:, 1:]
                nll = torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().transpose(1, 2), labels, reduction="none"
                )
                counted = (labels != -100).sum(1).clamp(min=1)
                per_example += (nll.sum(1) / counted).tolist()
    finally:
        model.train(was_training)
    return sum(per_example) / len(per_example)
