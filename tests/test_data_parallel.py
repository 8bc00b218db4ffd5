"""Parallel sentences stay aligned by index across languages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from whichlora.data.parallel import load_parallel
from whichlora.errors import WhichloraError


def test_builtin_sentences_are_aligned() -> None:
    texts = load_parallel("builtin:sentences", ["en", "ja", "sw"], n=10)
    assert {len(v) for v in texts.values()} == {10}
    assert texts["en"][0].startswith("The old bridge")
    assert all(texts["ja"]) and texts["ja"][0] != texts["en"][0]


def test_only_ids_shared_by_all_languages_are_kept(tmp_path: Path) -> None:
    rows = [
        {"id": "s1", "language": "en", "text": "One."},
        {"id": "s2", "language": "en", "text": "Two."},
        {"id": "s3", "language": "en", "text": "Three."},
        {"id": "s3", "language": "de", "text": "Drei."},
        {"id": "s1", "language": "de", "text": "Eins."},
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert load_parallel(str(path), ["en", "de"], n=None) == {
        "en": ["One.", "Three."],
        "de": ["Eins.", "Drei."],
    }


def test_languages_the_source_lacks_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    texts = load_parallel("builtin:sentences", ["en", "pt", "de"], n=4)
    assert list(texts) == ["en", "de"]
    assert "no texts in pt" in caplog.text


def test_errors() -> None:
    with pytest.raises(WhichloraError, match="builtin:sentences has no texts in pt, qu"):
        load_parallel("builtin:sentences", ["pt", "qu"])
    with pytest.raises(WhichloraError, match="Unknown parallel source"):
        load_parallel("builtin:nope", ["en"])
