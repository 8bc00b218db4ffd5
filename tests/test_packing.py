"""Packed training rows (`training.packing`): whole examples side by side, each attending only to
itself, so a packed batch computes what the same examples padded one per row compute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from whichlora.data.records import Record
from whichlora.train.batching import collate, collate_packed, packed_rows, packing_width
from whichlora.train.loss import batch_losses, check_packing, labelled_tokens, real_tokens
from whichlora.train.prompting import IGNORE_INDEX, EncodedExample, encode_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_packed_rows_are_full_cover_each_pass_once_and_repeat_by_seed() -> None:
    lengths = [40, 10, 25, 7, 33, 18, 12, 40, 5, 22, 31, 9, 16, 28, 3, 37, 14, 20, 11, 26]
    examples = [EncodedExample(input_ids=[1] * n, labels=[1] * n) for n in lengths]
    width = packing_width(examples)
    assert width == 40

    def rows(seed: int, steps: int) -> list[list[Any]]:
        stream = packed_rows(examples, rows=3, seed=seed)
        steps_ = [next(stream) for _ in range(steps)]
        assert all(len(step) == 3 for step in steps_)  # every step has its rows
        return [row for step in steps_ for row in step]

    first = rows(0, 8)
    assert all(sum(e.length for e in row) <= width for row in first)
    # the first pass's rows hold every example exactly once
    seen: list[int] = []
    pass_rows = 0
    while len(seen) < len(examples):
        seen += [id(e) for e in first[pass_rows]]
        pass_rows += 1
    assert sorted(seen) == sorted(id(e) for e in examples)
    # first-fit-decreasing leaves little room in a row
    assert sum(lengths) / (pass_rows * width) > 0.9
    assert [[id(e) for e in r] for r in rows(0, 8)] == [[id(e) for e in r] for r in first]
    assert [[id(e) for e in r] for r in rows(1, 8)] != [[id(e) for e in r] for r in first]


def test_collate_packed_restarts_positions_and_never_targets_an_example_start(
    tokenizer: Any, records: list[Record]
) -> None:
    a, b, c = encode_records(tokenizer, records[:3], max_length=64, response_only=False)
    width = a.length + b.length + 2
    batch = collate_packed([[a, b], [c]], pad_id=tokenizer.pad_token_id, width=width)
    assert "attention_mask" not in batch  # transformers reads the packing from the positions
    ids, labels, positions = batch["input_ids"], batch["labels"], batch["position_ids"]
    assert ids.shape == labels.shape == positions.shape == (2, width)
    n = a.length
    assert ids[0, : n + b.length].tolist() == a.input_ids + b.input_ids
    assert positions[0, : n + b.length].tolist() == list(range(n)) + list(range(b.length))
    assert labels[0, 0] == IGNORE_INDEX and labels[0, n] == IGNORE_INDEX  # each start
    assert labels[0, 1:n].tolist() == a.labels[1:]
    assert labels[0, n + b.length :].tolist() == [IGNORE_INDEX] * 2  # padding
    assert real_tokens([[a, b], [c]]) == n + b.length + c.length
    # the targets are those of the examples padded one per row
    assert labelled_tokens(batch) == labelled_tokens(collate([a, b, c], tokenizer.pad_token_id))


@pytest.mark.parametrize("response_only", [True, False])
def test_a_packed_batch_has_the_loss_and_gradients_of_the_same_examples_padded(
    response_only: bool,
    tokenizer: Any,
    records: list[Record],
    fresh_model: Any,
) -> None:
    from peft import get_peft_model

    from whichlora.techniques import REGISTRY, AdapterSettings

    examples = encode_records(tokenizer, records[:5], 64, response_only=response_only)
    torch.manual_seed(0)
    config = REGISTRY["lora"].build_config(AdapterSettings(rank=4, dropout=0.0))
    model = get_peft_model(fresh_model().model, config)
    # LoRA's B starts at zero: give the adapter a gradient-carrying value first
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    check_packing(model)
    width = sum(e.length for e in examples[:3])
    packed = collate_packed([examples[:3], examples[3:]], tokenizer.pad_token_id, width)
    padded = collate(examples, tokenizer.pad_token_id)

    def loss_and_grads(batch: dict[str, Any], head_only: bool) -> tuple[float, list[Any]]:
        model.zero_grad(set_to_none=True)
        objective, _ = batch_losses(model, batch, head_only)
        objective.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        return float(objective.detach()), grads

    reference, ref_grads = loss_and_grads(padded, False)
    for head_only in (True, False):
        loss, grads = loss_and_grads(packed, head_only)
        assert loss == pytest.approx(reference, abs=1e-5)
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_packing_trains_deterministically_and_logs_every_token(train_tiny: Any) -> None:
    packed = train_tiny("lora", packing=True, steps=3)
    again = train_tiny("lora", packing=True, steps=3, run_name="again")
    plain = train_tiny("lora", steps=3, run_name="plain")
    assert packed.losses == again.losses
    assert packed.losses != plain.losses  # other examples share the steps
    for step in packed.log["steps"]:
        assert step["tokens"] > 0 and 0 < step["labelled"] < step["tokens"]
    # rows as wide as the longest example, 4 a step: more examples than the 4 unpacked ones
    assert packed.log["steps"][0]["tokens"] > plain.log["steps"][0]["tokens"]


def test_packing_is_keyed_only_when_on(tiny_model_dir: Path) -> None:
    from whichlora.config.study import parse_study
    from whichlora.study.keys import train_key
    from whichlora.study.plan import plan_study

    def key(**training: Any) -> str:
        study = parse_study(
            {"model": str(tiny_model_dir), "techniques": ["lora"], "training": training}
        )
        return train_key(study, plan_study(study)[0])

    assert key(packing=False) == key()  # earlier studies keep their keys
    assert key(packing=True) != key()  # other examples share a step: another result
    assert key(compile=True) == key(compile=False) == key()  # same step, fused


def test_packing_refuses_a_model_without_transformers_masks() -> None:
    from whichlora.errors import WhichloraError

    class Remote(torch.nn.Module):
        pass

    with pytest.raises(WhichloraError, match="training.packing: false"):
        check_packing(Remote())
