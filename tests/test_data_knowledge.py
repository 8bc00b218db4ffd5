"""Knowledge items: bundled and local, lm-eval prompt conventions, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from whichlora.data.knowledge import KnowledgeItem, context, continuations, load_knowledge
from whichlora.errors import WhichloraError


def test_bundled_items_and_lm_eval_convention() -> None:
    items = load_knowledge("builtin:knowledge", ["en", "yo"])
    first = items["en"][0]
    assert first == KnowledgeItem(
        "mc-0001", "en", "geography", "What is the capital of France?",
        ("Paris", "London", "Rome", "Berlin"), 0,
    )  # fmt: skip
    assert context(first) == "Question: What is the capital of France?\nAnswer:"
    assert continuations(first) == [" Paris", " London", " Rome", " Berlin"]
    assert [i.id for i in items["yo"]] == [i.id for i in items["en"]]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


ROW = {"id": "q1", "language": "sw", "subject": "math", "question": "2 + 2?",
       "choices": ["3", "4"], "answer": 1}  # fmt: skip


def test_local_jsonl_and_folder(tmp_path: Path) -> None:
    items = load_knowledge(str(write(tmp_path / "k.jsonl", [ROW])))
    assert items == {"sw": [KnowledgeItem("q1", "sw", "math", "2 + 2?", ("3", "4"), 1)]}
    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder / "de.jsonl", [{k: v for k, v in ROW.items() if k != "language"}])
    assert load_knowledge(str(folder), ["de"])["de"][0].language == "de"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"answer": 2}, r"line 2 has answer 2, but it must be the 0-based index"),
        ({"choices": ["only"]}, r"line 2 needs 'choices' as a list of at least two"),
        ({"question": ""}, r"line 2 has no text in 'question'"),
        ({"language": "xx"}, r"line 2 has an unknown language \('xx'\)"),
        ({"id": "q1"}, r"line 2 repeats id 'q1' for language 'sw' \(first at .* line 1\)"),
    ],
)
def test_bad_items_name_file_and_line(tmp_path: Path, change: dict, expected: str) -> None:
    path = write(tmp_path / "bad.jsonl", [ROW, {**ROW, "id": "q2", **change}])
    with pytest.raises(WhichloraError, match=expected) as info:
        load_knowledge(str(path))
    assert str(info.value).startswith(str(path)) and str(info.value).endswith(".")


def test_missing_languages_and_sources() -> None:
    with pytest.raises(WhichloraError, match="has no items in pt"):
        load_knowledge("builtin:knowledge", ["en", "pt"])
    with pytest.raises(WhichloraError, match="Unknown knowledge source 'builtin:mmlu'"):
        load_knowledge("builtin:mmlu")


def test_broken_json_line_in_an_evaluation_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(ROW) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(WhichloraError) as info:
        load_knowledge(str(path))
    message = str(info.value)
    assert message.startswith(f"{path} line 2 is not valid JSON") and message.endswith("fix it.")
