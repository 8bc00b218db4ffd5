"""Batches of a run: length-grouped, or packed into full rows.

Padding is wasted compute. Length-grouped batches (the default) put similar lengths in one batch,
so little is padded; the order stays random (seeded) at the level of batches. Packed steps
(`training.packing`) fill each of a step's rows with whole examples, side by side, as wide as
the run's longest example: almost nothing is padded, whatever the lengths, and a step holds more
examples. Each example keeps its own positions (restarting at 0) and attends only within itself,
so packing changes which examples share a step, never what one example computes.
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


def packed_rows(
    examples: list[EncodedExample], rows: int, seed: int
) -> Iterator[list[list[EncodedExample]]]:
    """Endless stream of steps of `rows` rows, each row whole examples whose lengths add up to
    at most the longest example's (`packing_width`).

    Every pass shuffles the examples (seeded), packs them first-fit-decreasing (longest first,
    each into the first row it fits: rows come out nearly full) and shuffles the rows, so a step
    is a random mix of examples; rows left over at the end of a pass open the next one, so every
    step has exactly `rows` rows."""
    rng = random.Random(seed)
    width = packing_width(examples)
    pending: list[list[EncodedExample]] = []
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        order.sort(key=lambda i: -examples[i].length)  # stable: ties stay shuffled
        bins: list[list[int]] = []
        free: list[int] = []
        for i in order:
            n = examples[i].length
            slot = next((b for b, room in enumerate(free) if room >= n), None)
            if slot is None:
                bins.append([i])
                free.append(width - n)
            else:
                bins[slot].append(i)
                free[slot] -= n
        rng.shuffle(bins)
        pending.extend([examples[i] for i in b] for b in bins)
        while len(pending) >= rows:
            step, pending = pending[:rows], pending[rows:]
            yield step


def packing_width(examples: list[EncodedExample]) -> int:
    """Width of a packed row: the longest example (already cut to `max_length`)."""
    return max(e.length for e in examples)


def collate_packed(rows: list[list[EncodedExample]], pad_id: int, width: int) -> dict[str, Any]:
    """`rows` of examples side by side, right-padded to `width`, with position ids restarting at
    0 for every example and no attention mask: transformers then reads the packed sequences from
    the position ids and keeps attention inside each example (its `DataCollatorWithFlattening`
    convention). An example's first token is never a target: it does not follow the one before.
    The padding continues the last example's positions (attended by nothing real, unlabelled)."""
    import torch

    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for row, examples in enumerate(rows):
        at = 0
        for example in examples:
            n = example.length
            ids[row, at : at + n] = torch.tensor(example.input_ids)
            labels[row, at + 1 : at + n] = torch.tensor(example.labels[1:])
            positions[row, at : at + n] = torch.arange(n)
            at += n
        positions[row, at:] = torch.arange(width - at) + (positions[row, at - 1] + 1 if at else 0)
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


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
