"""Language codes: one canonical code per language, whatever a data source calls it.

Sources say "en", "eng", "en-US", "English" or (Aya) "Standard Arabic"; records and study files use
one code: ISO 639-1 where the language has one, else ISO 639-3 (the BCP 47 rule). Region and
script subtags are dropped, so "zh-Hant" and "zh-Hans" both become "zh".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from whichlora.errors import WhichloraError

# Individual languages that sources use for the standard variety of a macrolanguage.
INDIVIDUAL_TO_MACRO = {
    "arb": "ar", "cmn": "zh", "swh": "sw", "pes": "fa", "npi": "ne", "zsm": "ms", "plt": "mg",
    "ekk": "et", "lvs": "lv", "khk": "mn", "uzn": "uz", "azj": "az", "gaz": "om", "ydd": "yi",
    "pbu": "ps", "als": "sq", "knc": "kr", "kmr": "ku", "ory": "or", "ike": "iu", "twi": "tw",
}  # fmt: skip

# Names that sources use but the ISO tables spell differently.
NAME_ALIASES = {
    "simplified chinese": "zh", "traditional chinese": "zh", "chinese (simplified)": "zh",
    "chinese (traditional)": "zh", "mandarin": "zh", "modern standard arabic": "ar",
    "standard arabic": "ar", "farsi": "fa", "persian": "fa", "greek": "el", "pashto": "ps",
    "malay": "ms", "nepali": "ne", "swahili": "sw", "sinhalese": "si", "sesotho": "st",
    "setswana": "tn", "burmese": "my", "kurdish": "ku", "oriya": "or", "odia": "or",
    "uzbek": "uz", "mongolian": "mn", "estonian": "et", "latvian": "lv", "albanian": "sq",
    "azerbaijani": "az", "malagasy": "mg", "oromo": "om", "yiddish": "yi", "filipino": "fil",
}  # fmt: skip

_TAG = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")


@dataclass(frozen=True)
class Language:
    """A bundled language; tier says how much web text exists for it (high, mid, low)."""

    code: str
    iso639_3: str
    name: str
    script: str
    tier: str


@dataclass(frozen=True)
class _Iso:
    part3: str
    part1: str
    part2b: str
    scope: str
    names: tuple[str, ...]


def _bundled_text(name: str) -> str:
    return (resources.files("whichlora.data") / "bundled" / name).read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def bundled_languages() -> dict[str, Language]:
    """The 13 languages of the bundled data, keyed by code, in file order."""
    data = yaml.safe_load(_bundled_text("languages.yaml"))
    return {row["code"]: Language(**row) for row in data["languages"]}


@lru_cache(maxsize=1)
def _iso_table() -> tuple[dict[str, _Iso], dict[str, str]]:
    """Every ISO 639 code (1, 2B, 3) to its row, and lower-cased names to canonical codes."""
    by_code: dict[str, _Iso] = {}
    rows = []
    for line in _bundled_text("iso639.tsv").splitlines():
        if not line or line.startswith("#"):
            continue
        part3, part1, part2b, scope, names = line.split("\t")
        row = _Iso(part3, part1, part2b, scope, tuple(names.split(";")))
        rows.append(row)
        for code in (part3, part1, part2b):
            if code:
                by_code.setdefault(code, row)
    names: dict[str, str] = dict(NAME_ALIASES)
    # Languages with a two-letter code first, so "Swahili" means sw, not an individual variety.
    for row in sorted(rows, key=lambda r: (not r.part1, r.scope != "M")):
        for name in row.names:
            for key in (name.casefold(), re.sub(r"\s*\(.*\)$", "", name).casefold()):
                names.setdefault(key, _canonical(row))
    return by_code, names


def _canonical(row: _Iso) -> str:
    return row.part1 or INDIVIDUAL_TO_MACRO.get(row.part3, row.part3)


def normalize_language(value: object) -> str | None:
    """The canonical code for a code or English name, or None when it is not a language."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    by_code, names = _iso_table()
    if _TAG.match(text):
        primary = re.split(r"[-_]", text)[0].lower()
        if primary in INDIVIDUAL_TO_MACRO:
            return INDIVIDUAL_TO_MACRO[primary]
        row = by_code.get(primary)
        if row is not None:
            return None if row.scope == "S" else _canonical(row)  # und, mul, zxx, mis
    return names.get(text.casefold()) or names.get(re.sub(r"\s*\(.*\)$", "", text).casefold())


def require_language(value: object, where: str, fix: str = "") -> str:
    """normalize_language, or a WhichloraError naming where the bad code came from."""
    code = normalize_language(value)
    if code is None:
        hint = fix or "use an ISO 639-1 or 639-3 code such as 'en', 'sw' or 'yor'"
        raise WhichloraError(f"{where}: {value!r} is not a known language code or name; {hint}.")
    return code


def language_name(code: str) -> str:
    """English name for a canonical code (the code itself when unknown)."""
    bundled = bundled_languages().get(code)
    if bundled:
        return bundled.name
    row = _iso_table()[0].get(code)
    return re.sub(r"\s*\(.*\)$", "", row.names[0]) if row else code


def iso639_3(code: str) -> str | None:
    """ISO 639-3 code of a canonical code (the macrolanguage for macrolanguages)."""
    row = _iso_table()[0].get(code)
    return row.part3 if row else None


def evaluation_languages(study: Any) -> list[str]:
    """The languages a study evaluates: those it lists (all bundled ones when none), the source
    language first when the list lacks it."""
    langs = study.evaluation.languages or sorted(bundled_languages())
    if study.evaluation.source_language not in langs:
        langs = [study.evaluation.source_language, *langs]
    return list(dict.fromkeys(langs))
