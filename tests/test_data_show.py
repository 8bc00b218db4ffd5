"""`data show`: per-language counts and length statistics."""

from __future__ import annotations

from typing import Any

from whichlora.data.show import describe_source, format_table


def test_instruction_source_with_character_lengths() -> None:
    df = describe_source("builtin:instructions", ["en", "yo"])
    assert list(df["language"]) == ["en", "yo", "all"]
    assert list(df["items"]) == [155, 155, 310]
    assert set(df["unit"]) == {"chars"}
    assert (df["p50"] <= df["p95"]).all() and (df["p95"] <= df["max"]).all()
    assert sum(df.loc[0, "tasks"].values()) == 155
    table = format_table(df)
    assert table.splitlines()[0].split() == [
        "language", "name", "items", "unit", "mean", "p50", "p95", "max",
    ]  # fmt: skip
    assert "Yoruba" in table and "tasks per language: " in table


def test_token_lengths_with_a_tokenizer(tokenizer: Any) -> None:
    df = describe_source("builtin:heldout", ["en"], tokenizer=tokenizer)
    chars = describe_source("builtin:heldout", ["en"])
    assert df.loc[0, "unit"] == "tokens" and df.loc[0, "mean"] < chars.loc[0, "mean"]


def test_knowledge_and_parallel_sources() -> None:
    knowledge = describe_source("builtin:knowledge", ["de"])
    assert knowledge.loc[0, "items"] == 137 and "geography" in knowledge.loc[0, "tasks"]
    sentences = describe_source("builtin:sentences", ["en", "hi"])
    assert list(sentences["items"]) == [60, 60, 120]
