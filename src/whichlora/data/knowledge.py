"""Multiple-choice knowledge items, scored like lm-eval scores its multiple-choice tasks.

The bundled set asks the same questions in every language (same ids, same gold position), so a
drop in one language after fine-tuning measures forgetting in that language, not a harder test.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichlora.data.languages import normalize_language, require_language
from whichlora.data.local import Row, bad_utf8, data_files, read_rows, strict
from whichlora.data.sources import bundled_rows
from whichlora.errors import WhichloraError


@dataclass(frozen=True)
class KnowledgeItem:
    """One question; `answer` is the index of the right entry in `choices`."""

    id: str
    language: str
    subject: str
    question: str
    choices: tuple[str, ...]
    answer: int


def context(item: KnowledgeItem) -> str:
    """The prompt the choices are scored after (lm-eval's plain QA template)."""
    return f"Question: {item.question}\nAnswer:"


def continuations(item: KnowledgeItem) -> list[str]:
    """Each choice with lm-eval's default target delimiter (one space)."""
    return [" " + choice for choice in item.choices]


def load_knowledge(
    source: str = "builtin:knowledge", languages: list[str] | None = None
) -> dict[str, list[KnowledgeItem]]:
    """Items per language, sorted by id; `source` is builtin:knowledge, a .jsonl or a folder."""
    wanted = None if languages is None else [require_language(c, "languages") for c in languages]
    rows = _rows(source, wanted)
    items: dict[str, list[KnowledgeItem]] = {}
    seen: dict[tuple[str, str], str] = {}
    for row in rows:
        item = _item(row)
        if wanted is not None and item.language not in wanted:
            continue
        key = (item.language, item.id)
        if key in seen:
            raise WhichloraError(
                f"{row.where} repeats id '{item.id}' for language '{item.language}' (first at "
                f"{seen[key]}); give every question its own id."
            )
        seen[key] = row.where
        items.setdefault(item.language, []).append(item)
    missing = [code for code in (wanted or []) if code not in items]
    if missing or not items:
        raise WhichloraError(
            f"Knowledge source {source} has no items in {', '.join(missing) or 'any language'} "
            f"(it has: {', '.join(sorted(items)) or 'none'}); drop those evaluation languages or "
            "use a source that has them."
        )
    return {code: sorted(found, key=lambda i: i.id) for code, found in items.items()}


def _rows(source: str, wanted: list[str] | None) -> Iterator[Row]:
    if source.startswith("builtin:"):
        if source != "builtin:knowledge":
            raise WhichloraError(
                f"Unknown knowledge source '{source}'; use builtin:knowledge or a .jsonl file "
                "(or folder of <lang>.jsonl files) with id, question, choices and answer."
            )
        from whichlora.data.languages import bundled_languages

        codes = wanted if wanted is not None else list(bundled_languages())
        return bundled_rows("knowledge", [c for c in codes if c in bundled_languages()])
    path = Path(source).expanduser()
    return _file_rows(data_files(path), folder=path.is_dir())


def _file_rows(files: Iterable[Path], folder: bool) -> Iterator[Row]:
    for file in files:
        language = normalize_language(file.name.split(".")[0]) if folder else None
        for row in read_rows(file, str(file), strict):
            yield Row(row.where, row.values, language)


def _item(row: Row) -> KnowledgeItem:
    values = row.values
    question = _string(row, "question")
    choices = values.get("choices")
    if (
        not isinstance(choices, list)
        or len(choices) < 2
        or not all(isinstance(c, str) and c.strip() for c in choices)
    ):
        raise WhichloraError(
            f"{row.where} needs 'choices' as a list of at least two non-empty texts; fix the "
            "choices of this question."
        )
    answer = _answer(row, values.get("answer"), len(choices))
    raw_language = values.get("language") or row.file_language
    language = normalize_language(raw_language) if raw_language else None
    if language is None:
        raise WhichloraError(
            f"{row.where} has {'no' if not raw_language else 'an unknown'} language "
            f"({raw_language!r}); add a 'language' field with an ISO 639 code or name the file "
            "<lang>.jsonl inside a folder."
        )
    return KnowledgeItem(
        id=_string(row, "id"),
        language=language,
        subject=str(values.get("subject") or "").strip(),
        question=question,
        choices=tuple(c.strip() for c in choices),
        answer=answer,
    )


def _string(row: Row, name: str) -> str:
    value = row.values.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and name == "id":
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise WhichloraError(f"{row.where} has no text in '{name}'; add the question's {name}.")
    if bad_utf8(value):
        raise WhichloraError(
            f"{row.where} has bytes that are not valid UTF-8 in '{name}'; save the file as UTF-8."
        )
    return value.strip()


def _answer(row: Row, value: Any, n_choices: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n_choices:
        raise WhichloraError(
            f"{row.where} has answer {value!r}, but it must be the 0-based index of the right "
            f"choice (0 to {n_choices - 1}); fix the answer."
        )
    return value
