"""The bundled data: enough items, the same ids in every language, no evaluation leak."""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from importlib import resources

import pytest

from whichlora.data.knowledge import load_knowledge
from whichlora.data.languages import bundled_languages
from whichlora.data.mixing import build_training_set, normalize_text
from whichlora.data.parallel import load_parallel
from whichlora.data.sources import load_instructions

BUNDLED = resources.files("whichlora.data") / "bundled"


def test_languages_yaml_describes_every_bundled_language() -> None:
    languages = bundled_languages()
    assert len(languages) >= 12
    for code, lang in languages.items():
        assert len(code) == 2 and len(lang.iso639_3) == 3 and lang.name
        assert len(lang.script) == 4 and lang.script[0].isupper()
        assert lang.tier in {"high", "mid", "low"}
    assert {languages[c].script for c in ("zh", "ja", "ar", "hi", "ru")} == {
        "Hans", "Jpan", "Arab", "Deva", "Cyrl",
    }  # fmt: skip
    assert (BUNDLED / "LICENSE.md").read_text(encoding="utf-8").count("CC-BY-4.0") >= 1


@pytest.mark.parametrize("folder", ["instructions", "heldout", "knowledge", "sentences"])
def test_every_language_file_has_the_same_sorted_ids(folder: str) -> None:
    ids = {}
    for code in bundled_languages():
        lines = (BUNDLED / folder / f"{code}.jsonl").read_text(encoding="utf-8").splitlines()
        ids[code] = [json.loads(line)["id"] for line in lines]
    reference = ids["en"]
    assert reference == sorted(reference) and len(set(reference)) == len(reference)
    assert all(found == reference for found in ids.values())


def test_instructions_have_at_least_150_items_in_12_languages() -> None:
    records = load_instructions("builtin:instructions")
    counts = Counter(r.language for r in records)
    assert len(counts) >= 12 and min(counts.values()) >= 150
    tasks = {(r.id, r.task) for r in records}
    assert len(tasks) == len({r.id for r in records})  # a task is the same in every language


def test_knowledge_is_parallel_and_balanced() -> None:
    items = load_knowledge()
    english = items["en"]
    answers = Counter(item.answer for item in english)
    assert max(answers.values()) - min(answers.values()) <= 1
    assert len({item.question for item in english}) == len(english)  # no question asked twice
    for found in items.values():
        assert [(i.id, i.answer, i.subject) for i in found] == [
            (i.id, i.answer, i.subject) for i in english
        ]
        assert all(len(i.choices) == 4 and len(set(i.choices)) == 4 for i in found)


def test_sentences_and_heldout_are_complete() -> None:
    sentences = load_parallel("builtin:sentences", n=None)
    assert len(sentences) >= 12 and {len(v) for v in sentences.values()} == {60}
    heldout = Counter(r.language for r in load_instructions("builtin:heldout"))
    assert set(heldout.values()) == {60}


def test_no_evaluation_item_leaks_into_the_training_set() -> None:
    languages = list(bundled_languages())
    records = load_instructions("builtin:instructions")
    train, validation = build_training_set(records, languages, seed=0)
    heldout = load_instructions("builtin:heldout")
    knowledge = load_knowledge()
    sentences = load_parallel("builtin:sentences", n=None)
    eval_ids = {r.id for r in heldout} | {i.id for found in knowledge.values() for i in found}
    assert not eval_ids & {r.id for r in train + validation}

    def texts(record):  # noqa: ANN001, ANN202
        return {normalize_text(t) for t in (record.instruction, record.input, record.output) if t}

    train_texts = set().union(*(texts(r) for r in train + validation))
    train_prompts = {
        (r.language, normalize_text(r.instruction), normalize_text(r.input)) for r in train
    }
    for item in heldout:  # the same task may recur with a new input, never the same prompt
        assert (
            item.language,
            normalize_text(item.instruction),
            normalize_text(item.input),
        ) not in (train_prompts)
        assert normalize_text(item.output) not in train_texts
    for found in knowledge.values():
        assert not {normalize_text(i.question) for i in found} & train_texts
    for found in sentences.values():
        assert not {normalize_text(s) for s in found} & train_texts


SCRIPT_NAMES = {
    "Latn": ("LATIN",),
    "Cyrl": ("CYRILLIC",),
    "Arab": ("ARABIC",),
    "Deva": ("DEVANAGARI",),
    "Hans": ("CJK",),
    "Jpan": ("CJK", "HIRAGANA", "KATAKANA"),
}


def in_script(text: str, script: str) -> float:
    letters = [ch for ch in text if ch.isalpha()]
    hits = [ch for ch in letters if unicodedata.name(ch, "").startswith(SCRIPT_NAMES[script])]
    return len(hits) / max(1, len(letters))


def test_texts_are_written_in_the_language_script() -> None:
    languages = bundled_languages()
    by_language: dict[str, list[float]] = {}
    for record in load_instructions("builtin:instructions") + load_instructions("builtin:heldout"):
        script = languages[record.language].script
        # translation items answer in the other language, so only their instruction counts
        text = record.instruction + ("" if record.task == "translation" else record.output)
        by_language.setdefault(record.language, []).append(in_script(text, script))
    for code, shares in by_language.items():
        good = sum(share >= 0.5 for share in shares) / len(shares)
        assert good >= 0.97, (code, good)
