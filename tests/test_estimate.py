"""The plan's cost estimate models the work scoring really does (tokens, logits, decoding)."""

from __future__ import annotations

from pathlib import Path

import pytest

from whichlora.config.study import parse_study
from whichlora.evaluate.suite import evaluate_model
from whichlora.models.flops import counting
from whichlora.models.scoring import ScoringModels
from whichlora.study.datasets import evaluation_set, training_data
from whichlora.study.estimate import estimate_run_seconds, scoring_tokens


@pytest.mark.slow  # long: `make test-slow`
def test_scoring_tokens_match_what_scoring_counts(tiny_model_dir: Path) -> None:
    study = parse_study(
        {
            "model": {"id": str(tiny_model_dir), "device": "cpu"},
            "techniques": ["lora"],
            "evaluation": {"languages": ["en", "de"], "items_per_language": 6},
        }
    )
    evalset = evaluation_set(study, training_data(study)[1])
    model, tokenizer = ScoringModels(study.model, True, "fp32").get(None)
    max_new = study.evaluation.max_new_tokens
    with counting() as work:
        evaluate_model(model, tokenizer, evalset, "base", max_new_tokens=max_new)
    estimated = scoring_tokens(tokenizer, evalset, max_new)
    # scoring drops each continuation's last token and may stop generating at EOS: the
    # estimate is an upper bound that stays close (a few tokens per request)
    assert work.tokens <= estimated["tokens"] + estimated["decoded"] <= 1.3 * work.tokens
    assert estimated["decoded"] == max_new * sum(len(v) for v in evalset.generation.values())


def test_estimate_scales_with_the_work() -> None:
    scoring = {"tokens": 1000.0, "head_positions": 400.0, "decoded": 0.0}
    one = estimate_run_seconds((10**6, 10**5), 100.0, 40.0, 10, scoring)
    two = estimate_run_seconds((10**6, 10**5), 200.0, 80.0, 10, scoring)
    assert two["train_seconds"] == pytest.approx(2 * one["train_seconds"], rel=0.3)
    assert estimate_run_seconds((10**6, 10**5), 100.0, 40.0, 0, scoring)["train_seconds"] == 0
    decoding = estimate_run_seconds((10**6, 10**5), 0, 0, 0, {**scoring, "decoded": 50.0})
    assert decoding["evaluate_seconds"] > one["evaluate_seconds"]
