"""The metrics preflight says a study computes are the metrics scoring writes, and each has an
entry in the metric table (evaluate/metrics.yaml).

`study_metrics` is what `analysis.primary_metric` is checked against (bad settings are refused
through the CLI in tests/test_reliability_inputs.py); here the list is held to the real scorers
on the tiny model, so a metric renamed or added in the suite cannot leave preflight or the metric
table behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from whichlora.config.study import parse_study
from whichlora.evaluate.metrics import metric
from whichlora.study.context import study_metrics


@pytest.mark.parametrize(
    ("knowledge", "heldout", "generation_items"),
    [
        ("builtin:knowledge", "builtin:heldout", 1),
        ("builtin:knowledge", "builtin:heldout", 0),
        (None, "builtin:heldout", 1),
        ("builtin:knowledge", None, 1),
    ],
)
@pytest.mark.usefixtures("one_torch_thread")
def test_suite_metrics_are_what_evaluate_model_writes(
    tiny_model_dir: Path,
    fresh_model: Any,
    tokenizer: Any,
    knowledge: str | None,
    heldout: str | None,
    generation_items: int,
) -> None:
    from whichlora.evaluate.suite import evaluate_model
    from whichlora.study.datasets import evaluation_set, training_data

    study = parse_study(
        {
            "model": {"id": str(tiny_model_dir), "device": "cpu"},
            "techniques": ["lora"],
            "data": {"languages": ["de"], "items_per_language": 8},
            "evaluation": {
                "languages": ["en", "de"],
                "items_per_language": 1,
                "knowledge": knowledge,
                "heldout": heldout,
                "generation_items": generation_items,
                "max_new_tokens": 2,
            },
        }
    )
    evalset = evaluation_set(study, training_data(study)[1])
    result = evaluate_model(fresh_model().model, tokenizer, evalset, "base", max_new_tokens=2)
    names, prefixes = study_metrics(study)
    assert sorted({row["metric"] for row in result.examples}) == sorted(names)
    assert prefixes == []
    assert [name for name in names if metric(name) is None] == []


@pytest.mark.usefixtures("one_torch_thread")
def test_atlas_and_harness_metrics(fresh_model: Any, tokenizer: Any) -> None:
    from whichlora.data.atlas import AtlasText
    from whichlora.evaluate.atlas import score_atlas

    study = parse_study(
        {
            "techniques": ["lora"],
            "evaluation": {
                "knowledge": None,
                "heldout": None,
                "atlas": {"languages": 2, "articles": 1},
                "harness_tasks": ["xcopa", "belebele_swh_Latn"],
            },
        }
    )
    texts = [AtlasText("de", 1, "Alle Menschen sind frei und gleich an Würde und Rechten.")]
    result, _ = score_atlas(fresh_model().model, tokenizer, texts, "base")
    names, prefixes = study_metrics(study)
    assert sorted({row["metric"] for row in result.examples}) == sorted(names)
    assert [name for name in names if metric(name) is None] == []
    # the harness writes harness:<task>:<metric>, a group's members harness:<task>_xx:<metric>
    assert any("harness:xcopa_sw:acc".startswith(p) for p in prefixes)
    assert any("harness:belebele_swh_Latn:acc".startswith(p) for p in prefixes)
    assert not any("harness:xnli_de:acc".startswith(p) for p in prefixes)
