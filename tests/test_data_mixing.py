"""Training/validation sets: deterministic, split per item id, capped, mixed, deduplicated."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from whichlora.data.mixing import build_training_set, dedupe
from whichlora.data.records import Record
from whichlora.data.sources import load_instructions
from whichlora.errors import WhichloraError

TRAIN = ["en", "de", "fr", "es", "ru", "zh"]


@pytest.fixture(scope="module")
def bundled() -> list[Record]:
    return load_instructions("builtin:instructions")


def test_same_seed_same_sets_regardless_of_input_order(bundled: list[Record]) -> None:
    first = build_training_set(bundled, TRAIN, seed=3, validation_fraction=0.1)
    shuffled = list(bundled)
    random.Random(0).shuffle(shuffled)
    assert build_training_set(shuffled, TRAIN, seed=3, validation_fraction=0.1) == first
    other = build_training_set(bundled, TRAIN, seed=4, validation_fraction=0.1)
    assert {r.id for r in other[1]} != {r.id for r in first[1]}


def test_split_is_per_item_id_so_validation_is_unseen_in_every_language(
    bundled: list[Record],
) -> None:
    train, validation = build_training_set(bundled, TRAIN, seed=0, validation_fraction=0.2)
    train_ids, val_ids = {r.id for r in train}, {r.id for r in validation}
    assert not train_ids & val_ids
    assert len(val_ids) == round(0.2 * 155)
    assert {r.language for r in train} == set(TRAIN)
    per_id = Counter(r.id for r in validation)
    assert set(per_id.values()) == {len(TRAIN)}  # every translation of a validation item


def test_items_per_language_caps_train_and_keeps_validation_in_proportion(
    bundled: list[Record],
) -> None:
    train, validation = build_training_set(bundled, TRAIN, items_per_language=20, seed=1)
    assert Counter(r.language for r in train) == dict.fromkeys(TRAIN, 20)
    assert Counter(r.language for r in validation) == dict.fromkeys(TRAIN, 2)
    by_lang = {lang: {r.id for r in train if r.language == lang} for lang in TRAIN}
    assert all(ids == by_lang["en"] for ids in by_lang.values())  # parallel across languages
    assert train[0].language == "en" and train[1].language == "de"  # interleaved by item


def test_target_ratio_adds_a_fraction_of_the_source_count(bundled: list[Record]) -> None:
    train, validation = build_training_set(
        bundled, TRAIN, items_per_language=50, seed=0, target_ratio={"sw": 0.1, "yo": 0.001}
    )
    counts = Counter(r.language for r in train)
    assert counts["sw"] == 5 and counts["yo"] == 1 and counts["en"] == 50
    assert {r.id for r in train if r.language == "sw"} <= {r.id for r in train}
    assert not {r.id for r in train} & {r.id for r in validation}


def test_target_ratio_needs_the_source_language(bundled: list[Record]) -> None:
    with pytest.raises(WhichloraError, match="relative to the source language 'en'"):
        build_training_set(bundled, ["de"], target_ratio={"sw": 0.1})
    with pytest.raises(WhichloraError, match="target_ratio for sw is -1"):
        build_training_set(bundled, ["en"], target_ratio={"sw": -1})


def test_dedupe_and_exclude_ids() -> None:
    records = [
        Record("1", "en", "Say hi.", "Hi!"),
        Record("2", "en", "  say   HI. ", "hi!"),  # same text after normalising
        Record("1", "de", "Sag hallo.", "Hallo!"),
        Record("3", "en", "Count.", "1 2 3"),
        Record("4", "en", "Spell.", "a b c"),
    ]
    assert [r.id for r in dedupe(records)] == ["1", "1", "3", "4"]
    train, validation = build_training_set(
        records, ["en", "de"], validation_fraction=0.0, exclude_ids={"3"}
    )
    assert validation == [] and sorted({r.id for r in train}) == ["1", "4"]


def test_missing_training_language_is_a_clear_error(bundled: list[Record]) -> None:
    with pytest.raises(WhichloraError, match="has no items in pt; remove them"):
        build_training_set(bundled, ["en", "pt"])
