"""Read local data files into plain rows that remember where they came from.

Every row carries its location ("train.jsonl line 7", "train.parquet row 7") so that any later
complaint about it names the file and line. Bytes that are not UTF-8 are kept as surrogate
escapes here and reported per row by the mapper, so one bad line never hides the others.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from whichlora.errors import WhichloraError

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
SKIP_HINT = "or set data.options.skip_invalid: true to skip such rows"

File = Path | Traversable
OnBad = Callable[[str, str], None]
"""Called with (reason, message) for a bad row; raises unless invalid rows are skipped."""


@dataclass(frozen=True)
class Row:
    where: str  # "path line N" or "path row N"
    values: dict[str, Any]
    file_language: str | None = None  # from a <lang>.jsonl file name in a folder


def strict(reason: str, message: str) -> None:
    """OnBad for sources without skipping (bundled data, evaluation files): always raise."""
    raise WhichloraError(message.replace(" " + SKIP_HINT, "") + ".")


def bad_utf8(text: str) -> bool:
    """True when the text holds bytes that were not UTF-8 (kept as surrogate escapes)."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def data_files(path: Path) -> list[Path]:
    """A data file, or the data files of a folder (one file per language, like the bundle)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _suffix(p.name) in SUFFIXES)
        if not files:
            raise WhichloraError(
                f"Data folder {path} has no .jsonl, .json, .csv or .parquet files; put one file "
                "per language in it (e.g. en.jsonl) or give the path of a single file."
            )
        return files
    if not path.is_file():
        raise WhichloraError(
            f"Data file {path} does not exist; give the path of a .jsonl, .json, .csv or .parquet "
            "file, a folder of them, builtin:instructions, or hub:DATASET_ID."
        )
    if _suffix(path.name) not in SUFFIXES:
        raise WhichloraError(
            f"Data file {path} has an unsupported type '{path.suffix}'; convert it to .jsonl, "
            ".json, .csv or .parquet."
        )
    return [path]


def _suffix(name: str) -> str:
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def read_rows(file: File, label: str, on_bad: OnBad) -> Iterator[Row]:
    """Rows of one file; `label` is how messages name it (the path the user gave)."""
    suffix = _suffix(file.name)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise WhichloraError(
            f"Data file {label} cannot be read ({exc.strerror}); check that it exists and that "
            "you may read it."
        ) from None
    if suffix == ".parquet":
        yield from _parquet_rows(data, label)
        return
    text = data.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    if suffix == ".jsonl":
        yield from _jsonl_rows(text, label, on_bad)
    elif suffix == ".json":
        yield from _json_rows(text, label, on_bad)
    elif suffix == ".csv":
        yield from _csv_rows(text, label)
    else:
        raise WhichloraError(
            f"Data file {label} has an unsupported type '{suffix}'; convert it to .jsonl, .json, "
            ".csv or .parquet."
        )


def _jsonl_rows(text: str, label: str, on_bad: OnBad) -> Iterator[Row]:
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{label} line {number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            on_bad("invalid JSON", f"{where} is not valid JSON ({exc.msg}); fix it {SKIP_HINT}")
            continue
        if not isinstance(value, dict):
            on_bad(
                "not an object",
                f"{where} holds a JSON {type(value).__name__}, not an object with named fields; "
                f"write one object per line {SKIP_HINT}",
            )
            continue
        yield Row(where, value)


def _json_rows(text: str, label: str, on_bad: OnBad) -> Iterator[Row]:
    """Objects of a top-level JSON list, each with the line it starts on."""
    decoder = json.JSONDecoder()
    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        raise WhichloraError(
            f"Data file {label} line {_line(text, pos)} must start a JSON list of objects "
            "([{...}, ...]); wrap the objects in a list or save them as .jsonl, one per line."
        )
    pos = _skip_space(text, pos + 1)
    if text.startswith("]", pos):
        return
    while True:
        start = pos
        try:
            value, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError as exc:
            raise WhichloraError(
                f"Data file {label} line {exc.lineno} is not valid JSON ({exc.msg}); fix the JSON "
                "there (a broken .json list cannot be skipped; .jsonl lines can)."
            ) from None
        where = f"{label} line {_line(text, start)}"
        if isinstance(value, dict):
            yield Row(where, value)
        else:
            on_bad(
                "not an object",
                f"{where} holds a JSON {type(value).__name__} where the list needs an object with "
                f"named fields; replace it {SKIP_HINT}",
            )
        pos = _skip_space(text, pos)
        if text.startswith(",", pos):
            pos = _skip_space(text, pos + 1)
            continue
        if text.startswith("]", pos):
            return
        raise WhichloraError(
            f"Data file {label} line {_line(text, pos)} is not valid JSON (expected ',' or ']' "
            "after a list item); fix the JSON there."
        )


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _csv_rows(text: str, label: str) -> Iterator[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise WhichloraError(
            f"Data file {label} line 1 has no header; add a header row naming the columns "
            "(e.g. instruction,input,output,language)."
        )
    start = reader.line_num + 1
    for row in reader:
        values = {k: v for k, v in row.items() if k is not None}
        if any(v not in (None, "") for v in values.values()):
            yield Row(f"{label} line {start}", values)
        start = reader.line_num + 1


def _parquet_rows(data: bytes, label: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise WhichloraError(
            f"Data file {label} is not a readable Parquet file ({exc}); re-export it as Parquet "
            "or use .jsonl."
        ) from None
    number = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for values in batch.to_pylist():
            number += 1
            yield Row(f"{label} row {number}", values)
