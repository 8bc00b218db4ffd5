"""Local files in every supported format, with field mappings, chat messages and fixed languages."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from whichlora.data.records import LoadReport, Record
from whichlora.data.sources import load_instructions

ROWS = [
    {"id": "a1", "language": "en", "instruction": "Say hi.", "input": "", "output": "Hi!"},
    {"id": "a1", "language": "de", "instruction": "Sag hallo.", "input": "", "output": "Hallo!"},
    {"id": "a2", "language": "en", "instruction": "Add.", "input": "2 + 2", "output": "4"},
]
EXPECTED = [
    Record("a1", "en", "Say hi.", "Hi!"),
    Record("a1", "de", "Sag hallo.", "Hallo!"),
    Record("a2", "en", "Add.", "4", input="2 + 2"),
]


def write(path: Path, rows: list[dict]) -> Path:
    suffix = path.suffix
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    elif suffix == ".json":
        path.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    elif suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_every_format_loads_the_same_records(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path / f"data{suffix}", ROWS)
    assert load_instructions(str(path)) == EXPECTED
    assert load_instructions(str(path), ["de"]) == [EXPECTED[1]]


def test_field_mapping_and_fixed_language(tmp_path: Path) -> None:
    rows = [{"prompt": "Hello?", "context": "x", "response": "Yes.", "uid": 7}]
    path = write(tmp_path / "mapped.csv", rows)
    options = {
        "fields": {"instruction": "prompt", "input": "context", "output": "response", "id": "uid"},
        "language": "Swahili",
    }
    assert load_instructions(str(path), None, options) == [
        Record("7", "sw", "Hello?", "Yes.", input="x")
    ]


def test_generated_ids_are_unique_when_the_file_has_none(tmp_path: Path) -> None:
    rows = [{"instruction": f"Q{i}", "output": "A"} for i in range(3)]
    path = write(tmp_path / "noid.jsonl", rows)
    records = load_instructions(str(path), None, {"language": "en"})
    assert len({r.id for r in records}) == 3


def test_chat_messages_take_first_user_and_assistant_turns(tmp_path: Path) -> None:
    rows = [
        {
            "id": "c1",
            "lang": "fr",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Bonjour ?"},
                {"role": "assistant", "content": "Bonjour !"},
                {"role": "user", "content": "Encore ?"},
                {"role": "assistant", "content": "Non."},
            ],
        }
    ]
    path = write(tmp_path / "chat.jsonl", rows)
    assert load_instructions(str(path)) == [Record("c1", "fr", "Bonjour ?", "Bonjour !")]


def test_messages_stored_as_json_text_in_csv(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    path = write(tmp_path / "chat.csv", [{"messages": json.dumps(messages)}])
    records = load_instructions(str(path), None, {"language": "en"})
    assert (records[0].instruction, records[0].output) == ("Hi", "Hello")


def test_folder_of_language_files(tmp_path: Path) -> None:
    folder = tmp_path / "parallel"
    folder.mkdir()
    write(folder / "en.jsonl", [{"id": "1", "instruction": "Hi", "output": "Hello"}])
    write(folder / "yo.jsonl", [{"id": "1", "instruction": "Ẹ n lẹ", "output": "Ẹ n lẹ o"}])
    records = load_instructions(str(folder))
    assert [(r.id, r.language) for r in records] == [("1", "en"), ("1", "yo")]


def test_limit_per_language_and_report(tmp_path: Path) -> None:
    rows = [{"id": str(i), "instruction": f"Q{i}", "output": "A"} for i in range(5)]
    path = write(tmp_path / "many.jsonl", rows)
    report = LoadReport("x")
    records = load_instructions(
        str(path), ["en"], {"language": "en", "limit_per_language": 2}, report
    )
    assert [r.id for r in records] == ["0", "1"]
    assert report.loaded == 2 and report.skipped == {} and report.source == str(path)


def test_utf8_bom_and_blank_lines_are_fine(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    line = json.dumps({"id": "1", "language": "en", "instruction": "Hi", "output": "Yo"})
    path.write_bytes(b"\xef\xbb\xbf" + line.encode() + b"\n\n")
    assert len(load_instructions(str(path))) == 1
