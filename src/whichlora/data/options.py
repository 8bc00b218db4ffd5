"""`data.options`: which column holds each part of a record, and how a source is loaded.

Every source (bundled, local file, Hugging Face dataset) takes the same options, checked once up
front so a typo fails before any data is read; a hub preset starts from its own column mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from whichlora.data.languages import require_language
from whichlora.errors import WhichloraError

OPTION_NAMES = (
    "fields", "language", "skip_invalid", "config", "split", "revision", "limit_per_language",
)  # fmt: skip
FIELD_NAMES = ("instruction", "input", "output", "language", "id", "task", "messages")


@dataclass(frozen=True)
class FieldMap:
    """Which column holds each part of a record; the first column present in a row wins."""

    instruction: tuple[str, ...] = ("instruction",)
    input: tuple[str, ...] = ("input",)
    output: tuple[str, ...] = ("output",)
    language: tuple[str, ...] = ("language", "lang")
    id: tuple[str, ...] = ("id",)
    task: tuple[str, ...] = ("task",)
    messages: tuple[str, ...] = ("messages",)

    def with_options(self, fields: Any) -> FieldMap:
        """Apply `data.options.fields` ({instruction: prompt, ...}; null turns a field off)."""
        if fields is None:
            return self
        if not isinstance(fields, dict):
            raise WhichloraError(
                "data.options.fields must be a mapping such as {instruction: prompt, output: "
                f"response}}, not {type(fields).__name__}; write it as a YAML mapping."
            )
        changes: dict[str, tuple[str, ...]] = {}
        for key, column in fields.items():
            if key not in FIELD_NAMES:
                raise WhichloraError(
                    f"data.options.fields has unknown key '{key}'; use only "
                    f"{', '.join(FIELD_NAMES)}."
                )
            if column is not None and not isinstance(column, str):
                raise WhichloraError(
                    f"data.options.fields.{key} must be a column name (or null), not "
                    f"{type(column).__name__}; give the name of the column as text."
                )
            changes[key] = (column,) if column else ()
        return replace(self, **changes)


@dataclass
class SourceOptions:
    fields: FieldMap
    language: str | None
    skip_invalid: bool
    config: str | None
    split: str
    revision: str | None
    limit_per_language: int | None


def parse_options(options: dict[str, Any] | None, base: FieldMap | None = None) -> SourceOptions:
    """Check `data.options` once, up front, so a typo fails before any data is read."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise WhichloraError(
            f"data.options has unknown key(s) {', '.join(unknown)}; use only "
            f"{', '.join(OPTION_NAMES)}."
        )
    language = options.get("language")
    if language is not None:
        language = require_language(language, "data.options.language")
    limit = options.get("limit_per_language")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise WhichloraError(
            f"data.options.limit_per_language must be a positive whole number, not {limit!r}; "
            "fix the value or remove the key."
        )
    skip = options.get("skip_invalid", False)
    if not isinstance(skip, bool):
        raise WhichloraError(
            f"data.options.skip_invalid must be true or false, not {skip!r}; fix the value."
        )
    return SourceOptions(
        fields=(base or FieldMap()).with_options(options.get("fields")),
        language=language,
        skip_invalid=skip,
        config=options.get("config"),
        split=str(options.get("split", "train")),
        revision=options.get("revision"),
        limit_per_language=limit,
    )
