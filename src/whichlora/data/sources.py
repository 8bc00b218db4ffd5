"""One entry point from any instruction source to validated `Record`s.

A source is `builtin:instructions` / `builtin:heldout` (shipped with the package), a local file or
folder (.jsonl, .json, .csv, .parquet), or `hub:ID` / `hf:ID` (the Hugging Face hub, the only
path that may touch the network, and only when a study names it). Every source goes through the
same row mapper, so a bad row reads the same wherever it came from: file, line, problem, fix.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from whichlora.data.hub import hub_rows
from whichlora.data.languages import bundled_languages, normalize_language, require_language
from whichlora.data.local import (
    SKIP_HINT,
    OnBad,
    Row,
    bad_utf8,
    data_files,
    read_rows,
    strict,
)
from whichlora.data.options import FieldMap, SourceOptions, parse_options
from whichlora.data.records import LoadReport, Record
from whichlora.errors import WhichloraError

log = logging.getLogger("whichlora.data")

BUILTIN_INSTRUCTIONS = ("instructions", "heldout")


def load_instructions(
    source: str,
    languages: list[str] | None = None,
    options: dict[str, Any] | None = None,
    report: LoadReport | None = None,
) -> list[Record]:
    """Records of `source` in `languages` (None: all); pass a LoadReport to see what was skipped."""
    report = report if report is not None else LoadReport(source)
    report.source = source
    wanted = _wanted_languages(languages)
    if source.startswith(("hub:", "hf:")):
        opts, rows, default_id = hub_rows(source.split(":", 1)[1], wanted, options)
    else:
        opts = parse_options(options)
        rows, default_id = _file_rows(source, opts, report)
    records = map_rows(rows, opts, wanted, report, default_id)
    _check_coverage(source, records, wanted, report)
    log.log(logging.WARNING if report.skipped else logging.INFO, report.summary())
    return records


def _wanted_languages(languages: Iterable[str] | None) -> list[str] | None:
    if languages is None:
        return None
    return [require_language(code, "data.languages") for code in languages]


def _file_rows(source: str, opts: SourceOptions, report: LoadReport) -> tuple[Iterator[Row], str]:
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in BUILTIN_INSTRUCTIONS:
            raise WhichloraError(
                f"Unknown instruction source '{source}'; use builtin:instructions, "
                "builtin:heldout, a data file, or hub:DATASET_ID."
            )
        opts.fields, opts.language, opts.skip_invalid = FieldMap(), None, False
        return bundled_rows(name), name
    path = Path(source).expanduser()
    if not path.exists() and source.count("/") == 1 and not source.startswith((".", "/", "~")):
        raise WhichloraError(
            f"Data source '{source}' is neither a file nor a folder; to load it from the Hugging "
            f"Face hub, write hub:{source}."
        )
    files = data_files(path)
    return _rows_of_files(files, _skipper(opts, report), folder=path.is_dir()), path.stem


def bundled_rows(name: str, languages: Iterable[str] | None = None) -> Iterator[Row]:
    """Rows of a bundled folder (instructions, heldout, knowledge, sentences), per language."""
    folder = resources.files("whichlora.data") / "bundled" / name
    for code in languages or bundled_languages():
        file = folder / f"{code}.jsonl"
        for row in read_rows(file, f"bundled {name}/{code}.jsonl", strict):
            yield replace(row, file_language=code)


def _rows_of_files(files: list[Path], on_bad: OnBad, folder: bool) -> Iterator[Row]:
    for file in files:
        file_language = normalize_language(file.name.split(".")[0]) if folder else None
        for row in read_rows(file, str(file), on_bad):
            yield replace(row, file_language=file_language) if file_language else row


def _raise(reason: str, message: str) -> None:
    raise WhichloraError(message + ".")


def _skipper(opts: SourceOptions, report: LoadReport) -> OnBad:
    """Raise on a bad row, or count and skip it when `skip_invalid` is on."""

    def on_bad(reason: str, message: str) -> None:
        if not opts.skip_invalid:
            _raise(reason, message)
        report.skip(reason, message)

    return on_bad


def map_rows(
    rows: Iterable[Row],
    opts: SourceOptions,
    wanted: list[str] | None,
    report: LoadReport,
    default_id: str,
) -> list[Record]:
    """Validate and convert rows; rows in languages not wanted are dropped before other checks."""
    on_bad = _skipper(opts, report)
    seen: dict[tuple[str, str], str] = {}
    per_language: dict[str, int] = {}
    records: list[Record] = []
    for ordinal, row in enumerate(rows, 1):
        try:
            record = _to_record(row, opts, wanted, f"{default_id}-{ordinal:06d}")
        except _BadRow as bad:
            on_bad(bad.reason, bad.message)
            continue
        if record is None:
            continue
        if per_language.get(record.language, 0) >= (opts.limit_per_language or 1 << 62):
            continue
        key = (record.language, record.id)
        if key in seen:
            on_bad(
                "duplicate id",
                f"{row.where} repeats id '{record.id}' for language '{record.language}' (first "
                f"at {seen[key]}); give every item its own id {SKIP_HINT}",
            )
            continue
        seen[key] = row.where
        per_language[record.language] = per_language.get(record.language, 0) + 1
        records.append(record)
    report.loaded = len(records)
    return records


class _BadRow(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def _to_record(
    row: Row, opts: SourceOptions, wanted: list[str] | None, fallback_id: str
) -> Record | None:
    values, fields = row.values, opts.fields
    language = _language(row, opts)
    if wanted is not None and language not in wanted:
        return None
    messages = _pick(values, fields.messages)
    if messages is not None and _pick(values, fields.instruction) is None:
        instruction, output = _from_messages(row, messages)
    else:
        instruction = _text(row, fields.instruction, "instruction", required=True)
        output = _text(row, fields.output, "output", required=True)
    has_id = _pick(values, fields.id) is not None
    return Record(
        id=_text(row, fields.id, "id", required=True) if has_id else fallback_id,
        language=language,
        instruction=instruction,
        output=output,
        input=_text(row, fields.input, "input", required=False),
        task=_text(row, fields.task, "task", required=False),
    )


def _pick(values: dict[str, Any], columns: tuple[str, ...]) -> Any:
    for column in columns:
        if values.get(column) is not None:
            return values[column]
    return None


def _language(row: Row, opts: SourceOptions) -> str:
    if opts.language:
        return opts.language
    raw = _pick(row.values, opts.fields.language)
    if raw is None or not str(raw).strip():
        if row.file_language:
            return row.file_language
        columns = "/".join(opts.fields.language) or "none mapped"
        raise _BadRow(
            "missing language",
            f"{row.where} has no language ({columns}); add a language column, map it with "
            "data.options.fields.language, or set data.options.language for a one-language file, "
            + SKIP_HINT,
        )
    _check_utf8(row, "language", str(raw))
    code = normalize_language(str(raw))
    if code is None:
        raise _BadRow(
            "unknown language",
            f"{row.where} has unknown language code {raw!r}; use an ISO 639-1 or 639-3 code such "
            f"as 'en' or 'swh' {SKIP_HINT}",
        )
    return code


def _describe(columns: tuple[str, ...], name: str) -> str:
    column = "/".join(columns) or "(unmapped)"
    return f"'{column}'" if column == name else f"'{column}' (the {name})"


def _text(row: Row, columns: tuple[str, ...], name: str, required: bool) -> str:
    value = _pick(row.values, columns)
    if value is None:
        if not required:
            return ""
        raise _BadRow(
            "missing field",
            f"{row.where} has no {_describe(columns, name)} field; add it or map another column "
            f"with data.options.fields.{name} {SKIP_HINT}",
        )
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _BadRow(
            "not text",
            f"{row.where} has a {type(value).__name__} in {_describe(columns, name)} where text "
            f"is needed; store it as a string {SKIP_HINT}",
        )
    text = str(value).strip()
    _check_utf8(row, name, text)
    if required and not text:
        raise _BadRow(
            "empty text",
            f"{row.where} has an empty {_describe(columns, name)}; write the text {SKIP_HINT}",
        )
    return text


def _check_utf8(row: Row, name: str, text: str) -> None:
    if bad_utf8(text):
        raise _BadRow(
            "invalid UTF-8",
            f"{row.where} has bytes that are not valid UTF-8 in the {name}; re-save the file as "
            f"UTF-8 {SKIP_HINT}",
        )


def _from_messages(row: Row, messages: Any) -> tuple[str, str]:
    """First user turn -> instruction, first assistant turn after it -> output."""
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            messages = None
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise _BadRow(
            "bad messages",
            f"{row.where} has a 'messages' field that is not a list of {{role, content}} "
            f"objects; fix it {SKIP_HINT}",
        )
    user = next((i for i, m in enumerate(messages) if m.get("role") == "user"), None)
    reply = None
    if user is not None:
        reply = next((m for m in messages[user + 1 :] if m.get("role") == "assistant"), None)
    if user is None or reply is None:
        missing = "user" if user is None else "assistant"
        raise _BadRow(
            "bad messages",
            f"{row.where} has no {missing} turn in 'messages'; each conversation needs a user "
            f"turn followed by an assistant turn {SKIP_HINT}",
        )
    turns = Row(row.where, {"user turn": messages[user].get("content"),
                            "assistant turn": reply.get("content")})  # fmt: skip
    return (
        _text(turns, ("user turn",), "instruction", required=True),
        _text(turns, ("assistant turn",), "output", required=True),
    )


def _check_coverage(
    source: str, records: list[Record], wanted: list[str] | None, report: LoadReport
) -> None:
    if not records:
        raise WhichloraError(
            f"Data source {source} gave no usable records ({report.skipped_text()}); check its "
            "fields, "
            "languages and options."
        )
    if wanted is None:
        return
    found = {r.language for r in records}
    missing = [code for code in wanted if code not in found]
    if missing:
        have = ", ".join(sorted(found)) or "none"
        raise WhichloraError(
            f"Data source {source} has no records in language(s) {', '.join(missing)} (it has: "
            f"{have}); remove them from the study's languages or use a source that has them."
        )
