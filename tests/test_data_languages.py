"""Language codes and names from any source map to one canonical code."""

from __future__ import annotations

import pytest

from whichlora.data.languages import (
    iso639_3,
    language_name,
    normalize_language,
    require_language,
)
from whichlora.errors import WhichloraError


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("en", "en"), ("EN", "en"), ("en-US", "en"), ("zh_Hant", "zh"), ("eng", "en"),
        ("ger", "de"), ("swh", "sw"), ("arb", "ar"), ("cmn", "zh"), ("yor", "yo"),
        ("ary", "ary"), ("fil", "fil"), ("English", "en"), ("Standard Arabic", "ar"),
        ("Simplified Chinese", "zh"), ("Swahili", "sw"), ("Moroccan Arabic", "ary"),
        ("Yoruba", "yo"), ("Punjabi", "pa"), ("Iranian Persian", "fa"),
    ],
)  # fmt: skip
def test_codes_and_names_normalise(value: str, code: str) -> None:
    assert normalize_language(value) == code


@pytest.mark.parametrize("value", ["", "xx", "und", "zzz-Latn", "Klingonese", None, 12])
def test_unknown_values_are_none(value: object) -> None:
    assert normalize_language(value) is None


def test_require_language_names_where_the_code_came_from() -> None:
    with pytest.raises(WhichloraError, match=r"data.languages: 'xx' is not a known language"):
        require_language("xx", "data.languages")


def test_names_and_iso639_3() -> None:
    assert language_name("yo") == "Yoruba"
    assert language_name("ary") == "Moroccan Arabic"
    assert iso639_3("sw") == "swa"
