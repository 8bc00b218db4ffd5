"""Length-grouped batches: padding is wasted compute, so similar lengths share a batch.

Order stays random (seeded) at the level of batches, so the model still sees a shuffled stream.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from whichlora.train.prompting import IGNORE_INDEX, EncodedExample


def grouped_batches(
    examples: list[EncodedExample], batch_size: int, seed: int, group_factor: int = 32
) -> Iterator[list[EncodedExample]]:
    """Endless stream of batches: shuffle, sort within mega-batches by length, shuffle batches."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        mega = batch_size * group_factor
        batches: list[list[int]] = []
        for start in range(0, len(order), mega):
            chunk = sorted(order[start : start + mega], key=lambda i: examples[i].length)
            batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
        rng.shuffle(batches)
        for batch in batches:
            yield [examples[i] for i in batch]


def collate(batch: list[EncodedExample], pad_id: int) -> dict[str, Any]:
    """Right-pad to the longest example of the batch."""
    import torch

    width = max(e.length for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = example.length
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
