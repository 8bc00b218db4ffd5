"""Parallel sentences for representation analysis: item i means the same in every language.

Cross-language similarity is only meaningful on translations of the same sentence, so we keep
only ids present in every returned language and return them in one shared order. A requested
language the source lacks entirely is left out with a warning (the analysis covers the rest).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from whichlora.data.languages import bundled_languages, normalize_language, require_language
from whichlora.data.local import Row, bad_utf8, data_files, read_rows, strict
from whichlora.data.sources import bundled_rows
from whichlora.errors import WhichloraError

log = logging.getLogger("whichlora.data")


def load_parallel(
    source: str = "builtin:sentences", languages: list[str] | None = None, n: int | None = 60
) -> dict[str, list[str]]:
    """Up to `n` aligned texts per language; `source` is builtin:sentences, udhr or a file."""
    requested = [require_language(c, "languages") for c in languages or bundled_languages()]
    requested = list(dict.fromkeys(requested))
    texts = _udhr_texts(requested) if source == "udhr" else _texts(_rows(source), requested)
    codes = [code for code in requested if texts[code]]
    if not codes:
        raise WhichloraError(
            f"Parallel source {source} has no texts in {', '.join(requested)}; use languages it "
            "has (builtin:sentences has the bundled ones, udhr over 400)."
        )
    if len(codes) < len(requested):
        lacking = [code for code in requested if code not in codes]
        log.warning("%s has no texts in %s; leaving them out", source, ", ".join(lacking))
    common = [key for key in texts[codes[0]] if all(key in texts[c] for c in codes[1:])]
    chosen = common if n is None else common[:n]
    if len(chosen) < 2:
        raise WhichloraError(
            f"Parallel source {source} has only {len(chosen)} text(s) shared by all of "
            f"{', '.join(codes)}; use fewer languages or a source with more parallel texts."
        )
    if n is not None and len(chosen) < n:
        log.warning(
            "%s has %d parallel texts in all languages, fewer than %d", source, len(chosen), n
        )
    return {code: [texts[code][key] for key in chosen] for code in codes}


def _udhr_texts(codes: list[str]) -> dict[str, dict[str, str]]:
    from whichlora.data.udhr import udhr_articles, udhr_languages

    available = udhr_languages(complete_only=False)  # says to run the fetch when absent
    return {
        code: {f"{k:02d}": v for k, v in udhr_articles(code).items()} if code in available else {}
        for code in codes
    }


def _rows(source: str) -> Iterator[Row]:
    if source.startswith("builtin:"):
        if source != "builtin:sentences":
            raise WhichloraError(
                f"Unknown parallel source '{source}'; use builtin:sentences, udhr, or a .jsonl "
                "file (or folder of <lang>.jsonl files) with id, language and text."
            )
        return bundled_rows("sentences")
    path = Path(source).expanduser()
    return _file_rows(data_files(path), folder=path.is_dir())


def _file_rows(files: list[Path], folder: bool) -> Iterator[Row]:
    for file in files:
        language = normalize_language(file.name.split(".")[0]) if folder else None
        for row in read_rows(file, str(file), strict):
            yield Row(row.where, row.values, language)


def _texts(rows: Iterator[Row], codes: list[str]) -> dict[str, dict[str, str]]:
    """language -> id -> text, in file order; ids must be unique per language."""
    texts: dict[str, dict[str, str]] = {code: {} for code in codes}
    for row in rows:
        raw = row.values.get("language") or row.file_language
        language = normalize_language(raw) if raw else None
        if language is None:
            raise WhichloraError(
                f"{row.where} has {'an unknown' if raw else 'no'} language ({raw!r}); add a "
                "'language' field with an ISO 639 code or name the file <lang>.jsonl in a folder."
            )
        if language not in texts:
            continue
        key, text = row.values.get("id"), row.values.get("text")
        if not isinstance(key, str | int) or not str(key).strip():
            raise WhichloraError(
                f"{row.where} has no 'id'; give each sentence an id shared by its translations."
            )
        if not isinstance(text, str) or not text.strip():
            raise WhichloraError(
                f"{row.where} has no 'text'; write the sentence in a 'text' field."
            )
        if bad_utf8(text):
            raise WhichloraError(
                f"{row.where} has bytes that are not valid UTF-8 in 'text'; save the file as UTF-8."
            )
        if str(key) in texts[language]:
            raise WhichloraError(
                f"{row.where} repeats id '{key}' for language '{language}'; give every sentence "
                "its own id."
            )
        texts[language][str(key)] = text.strip()
    return texts
