"""Bad data: one sentence naming file, line, problem and fix; or skipped and counted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from whichlora.data.records import LoadReport
from whichlora.data.sources import load_instructions
from whichlora.errors import WhichloraError

GOOD = {"id": "g1", "language": "en", "instruction": "Say hi.", "output": "Hi!"}


def one_sentence(message: str) -> str:
    assert message.endswith(".") and not re.search(r"\.\s+[A-Z]", message), message
    assert "Traceback" not in message
    return message


def jsonl(tmp_path: Path, *lines: bytes | dict, name: str = "bad.jsonl") -> Path:
    path = tmp_path / name
    encoded = [
        x if isinstance(x, bytes) else json.dumps(x, ensure_ascii=False).encode() for x in lines
    ]
    path.write_bytes(b"\n".join(encoded) + b"\n")
    return path


def fails(path: Path | str, options: dict | None = None, languages: list[str] | None = None) -> str:
    with pytest.raises(WhichloraError) as info:
        load_instructions(str(path), languages, options)
    return one_sentence(str(info.value))


def row(**changes: object) -> dict:
    """A valid row with some fields changed (None removes the field)."""
    values = {"id": "b", "language": "en", "instruction": "Q", "output": "A", **changes}
    return {k: v for k, v in values.items() if v is not None}


ONLY_USER = [{"role": "user", "content": "Q"}]
BAD_LINES = [
    (row(output=None), r"has no 'output' field"),
    (row(instruction="  "), r"empty 'instruction'"),
    (row(language="xx"), r"unknown language code 'xx'"),
    (row(language=None), r"has no language"),
    (row(instruction=["Q"]), r"list in 'instruction'"),
    (row(id="g1", instruction="Q2"), r"repeats id 'g1'.*line 1"),
    (row(id=""), r"empty 'id'"),
    (row(instruction=None, messages=ONLY_USER), r"no assistant turn"),
    (row(instruction=None, messages="nope"), r"not a list of \{role, content\}"),
    (b'{"id": "b", "language": "en", "instruction": "Q\xff", "output": "A"}', r"not valid UTF-8"),
    (b'{"id": "b", "language": "en", "instruction": "Q", "output": "A"', r"not valid JSON"),
    (b'["not", "an", "object"]', r"holds a JSON list"),
]


@pytest.mark.parametrize(("line", "expected"), BAD_LINES)
def test_bad_jsonl_line_names_file_line_and_fix(tmp_path: Path, line, expected: str) -> None:  # noqa: ANN001
    path = jsonl(tmp_path, GOOD, line)
    message = fails(path)
    assert message.startswith(f"{path} line 2 ")
    assert re.search(expected, message), message
    assert "skip_invalid" in message or "fix" in message


def test_skip_invalid_skips_and_counts_each_reason(tmp_path: Path) -> None:
    path = jsonl(
        tmp_path,
        GOOD,
        {"id": "b", "language": "en", "instruction": "Q"},
        b"{broken",
        {"id": "c", "language": "qq", "instruction": "Q", "output": "A"},
        {"id": "g1", "language": "en", "instruction": "Other", "output": "A"},
        b'{"id": "d", "language": "en", "instruction": "\xc3\x28", "output": "A"}',
        {"id": "e", "language": "en", "instruction": "Fine", "output": "Yes"},
    )
    report = LoadReport("")
    records = load_instructions(str(path), None, {"skip_invalid": True}, report)
    assert [r.id for r in records] == ["g1", "e"]
    assert report.loaded == 2 and report.skipped_total == 5
    assert report.skipped == {
        "missing field": 1, "invalid JSON": 1, "unknown language": 1, "duplicate id": 1,
        "invalid UTF-8": 1,
    }  # fmt: skip
    assert "line 2" in report.examples[0]
    assert report.summary().endswith(
        "loaded 2 records, skipped 5: 1 duplicate id, 1 invalid JSON, 1 invalid UTF-8, "
        "1 missing field, 1 unknown language"
    )


def test_csv_and_json_and_parquet_report_lines_or_rows(tmp_path: Path) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_bytes(
        b'id,language,instruction,output\n1,en,"multi\nline",ok\n2,en,Q,\n3,en,Q\xff,A\n'
    )
    assert fails(csv_path).startswith(f"{csv_path} line 4 has an empty 'output'")
    message = fails(csv_path, {"fields": {"output": None}})
    assert "line 2 has no '(unmapped)' (the output) field" in message
    message = fails(csv_path, {"skip_invalid": True, "fields": {"output": None}})
    assert "gave no usable records (skipped 3: 1 invalid UTF-8, 2 missing field)" in message

    json_path = tmp_path / "bad.json"
    json_path.write_text('[\n  {"id": "1", "language": "en", "instruction": "Q", "output": "A"},\n'
                         '  {"id": "2", "language": "en", "instruction": "Q"}\n]\n')  # fmt: skip
    assert fails(json_path).startswith(f"{json_path} line 3 has no 'output' field")
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"id": "1",\n  "x": }\n]')
    assert fails(broken).startswith(f"Data file {broken} line 3 is not valid JSON")
    not_list = tmp_path / "obj.json"
    not_list.write_text('{"id": 1}')
    assert "must start a JSON list" in fails(not_list)

    parquet = tmp_path / "bad.parquet"
    pd.DataFrame([GOOD, {**GOOD, "id": "g2", "output": ""}]).to_parquet(parquet)
    assert fails(parquet).startswith(f"{parquet} row 2 has an empty 'output'")


def test_invalid_utf8_in_csv_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,language,instruction,output\n1,en,Café,ok\n".encode("latin-1"))
    assert fails(path).startswith(f"{path} line 2 has bytes that are not valid UTF-8")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"field": {}}, r"data.options has unknown key\(s\) field"),
        ({"fields": {"prompt": "x"}}, r"data.options.fields has unknown key 'prompt'"),
        ({"fields": "instruction"}, r"data.options.fields must be a mapping"),
        ({"fields": {"output": 3}}, r"data.options.fields.output must be a column name"),
        ({"language": "Elvish"}, r"data.options.language: 'Elvish' is not a known language"),
        ({"skip_invalid": "yes"}, r"skip_invalid must be true or false"),
        ({"limit_per_language": 0}, r"limit_per_language must be a positive whole number"),
    ],
)
def test_bad_options_are_rejected_before_reading(
    tmp_path: Path, options: dict, expected: str
) -> None:
    assert re.search(expected, fails(jsonl(tmp_path, GOOD), options))


def test_bad_sources(tmp_path: Path) -> None:
    assert "does not exist" in fails(tmp_path / "missing.jsonl")
    assert "write hub:someone/dataset" in fails("someone/dataset")
    other = tmp_path / "data.xlsx"
    other.write_text("x")
    assert "unsupported type '.xlsx'" in fails(other)
    assert "Unknown instruction source 'builtin:nope'" in fails("builtin:nope")
    assert "has no .jsonl" in fails(tmp_path)
    message = fails(jsonl(tmp_path, GOOD), languages=["en", "pt"])
    assert "has no records in language(s) pt" in message
    assert "data.languages: 'zz' is not a known language" in fails(
        "builtin:instructions", None, ["zz"]
    )
