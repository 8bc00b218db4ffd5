"""lm-evaluation-harness backend: offline local YAML task on the tiny Llama, rows, errors.

The agreement test is the point: lm-eval's HFLM and our own scorer must give the same per-item
accuracy on the same questions, so the two backends can be mixed in one study.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from whichlora.errors import WhichloraError
from whichlora.evaluate.harness import (
    higher_is_better,
    language_from_task_name,
    results_to_rows,
    run_harness,
    task_language,
)

DATA = Path(__file__).parent / "data" / "harness"
JSONL = DATA / "tinyqa.jsonl"

needs_lm_eval = pytest.mark.skipif(
    find_spec("lm_eval") is None,
    reason="lm-eval not installed (optional extra: pip install 'whichlora[harness]')",
)


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Datasets cache in tmp and no network; patch datasets.config too, as it reads env once."""
    cache = tmp_path / "hf-datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if find_spec("datasets") is not None:
        import datasets.config

        monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
        monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)


def write_task(folder: Path, name: str = "tinyqa_en", language: str | None = None) -> Path:
    """Copy the fixture YAML with an absolute data_files path (datasets resolves it from cwd)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (DATA / "tinyqa_en.yaml").read_text(encoding="utf-8")
    text = text.replace("DATA_FILE", str(JSONL)).replace("task: tinyqa_en", f"task: {name}")
    if language:
        text = text.replace("  version: 1.0", f"  version: 1.0\n  language: {language}")
    (folder / f"{name}.yaml").write_text(text, encoding="utf-8")
    return folder


def our_scores(model: Any, tokenizer: Any, limit: int | None = None) -> list[Any]:
    from whichlora.evaluate.scoring import MultipleChoiceItem, score_multiple_choice

    docs = [json.loads(line) for line in JSONL.read_text(encoding="utf-8").splitlines()][:limit]
    items = [
        MultipleChoiceItem(f"Question: {d['question']}\nAnswer:", d["choices"], d["answer"])
        for d in docs
    ]
    return score_multiple_choice(model, tokenizer, items)


def by_metric(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault(row["metric"], []).append(row)
    return out


def per_doc(rows: list[dict[str, Any]]) -> list[float]:
    return [r["value"] for r in sorted(rows, key=lambda r: int(r["example_id"]))]


# --------------------------------------------------------------------------- no model needed


@pytest.mark.parametrize(
    ("task", "language"),
    [
        ("belebele_eng_Latn", "en"),
        ("belebele_swh_Latn", "sw"),
        ("belebele_zho_Hans", "zh"),
        ("xcopa_sw", "sw"),
        ("xstorycloze_sw", "sw"),
        ("global_mmlu_sw", "sw"),
        ("global_mmlu_full_sw_abstract_algebra", "sw"),
        ("mgsm_native_cot_sw", "sw"),
        ("hellaswag_de", "de"),
        ("arc_challenge", None),
        ("hellaswag", None),
        ("gsm8k", None),
    ],
)
def test_language_from_task_name(task: str, language: str | None) -> None:
    assert language_from_task_name(task) == language


def test_task_language_prefers_declared_metadata_then_dataset_name() -> None:
    assert task_language("xcopa_sw", {"metadata": {"language": "yor"}}) == "yo"
    assert task_language("myqa", {"dataset_name": "swh_Latn"}) == "sw"
    assert task_language("myqa", {"dataset_name": "default"}) == ""
    assert task_language("myqa", None) == ""


def test_higher_is_better() -> None:
    assert higher_is_better("harness:xcopa_sw:acc")
    assert not higher_is_better("harness:wikitext:word_perplexity")


def test_results_to_rows_groups_filters_and_stderr() -> None:
    results = {
        "results": {
            "xcopa_sw": {"alias": "xcopa_sw", "acc,none": 0.5, "acc_stderr,none": "N/A"},
            "xcopa_et": {"acc,none": 1.0},
            "mgsm_direct_sw": {"exact_match,strict-match": 0.0, "exact_match,flexible": 1.0},
        },
        "groups": {"xcopa": {"acc,none": 0.75, "acc_stderr,none": 0.1}},
        "group_subtasks": {"xcopa": ["xcopa_sw", "xcopa_et"]},
        "configs": {"xcopa_sw": {}, "xcopa_et": {}, "mgsm_direct_sw": {}},
        "n-samples": {
            "xcopa_sw": {"original": 100, "effective": 2},
            "xcopa_et": {"original": 100, "effective": 1},
        },
        "samples": {
            "xcopa_sw": [
                {"doc_id": 1, "filter": "none", "metrics": ["acc"], "acc": 0.0},
                {"doc_id": 0, "filter": "none", "metrics": ["acc"], "acc": 1.0},
            ],
            "mgsm_direct_sw": [
                {
                    "doc_id": 0,
                    "filter": "strict-match",
                    "metrics": ["exact_match"],
                    "exact_match": 0.0,
                },
            ],
        },
    }
    metrics, examples = results_to_rows(results, "r")
    rows = {m["metric"]: m for m in metrics}
    assert set(rows) == {
        "harness:xcopa_sw:acc",
        "harness:xcopa_et:acc",
        "harness:xcopa:acc",
        "harness:mgsm_direct_sw:exact_match/strict-match",
        "harness:mgsm_direct_sw:exact_match/flexible",
    }
    group = rows["harness:xcopa:acc"]
    assert (group["value"], group["n"], group["language"]) == (0.75, 3, "")
    assert rows["harness:xcopa_et:acc"]["language"] == "et"
    assert rows["harness:mgsm_direct_sw:exact_match/flexible"]["n"] == 1  # from samples
    assert [(e["metric"], e["example_id"], e["value"]) for e in examples] == [
        ("harness:mgsm_direct_sw:exact_match/strict-match", "0", 0.0),
        ("harness:xcopa_sw:acc", "0", 1.0),
        ("harness:xcopa_sw:acc", "1", 0.0),
    ]


def test_missing_lm_eval_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # makes `import lm_eval` fail
    with pytest.raises(WhichloraError, match=r"pip install 'whichlora\[harness\]'"):
        run_harness(object(), object(), ["xcopa_sw"], run_id="r")


# --------------------------------------------------------------------------- with lm-eval


@needs_lm_eval
def test_unknown_task_names_task_and_fix(tmp_path: Path) -> None:
    folder = write_task(tmp_path / "tasks")
    with pytest.raises(WhichloraError, match="no_such_task_xyz") as info:
        run_harness(object(), object(), ["no_such_task_xyz"], include_path=str(folder), run_id="r")
    message = str(info.value)
    assert "include_path" in message and "lm-eval ls tasks" in message


@needs_lm_eval
def test_missing_include_path(tmp_path: Path) -> None:
    with pytest.raises(WhichloraError, match="not an existing folder"):
        run_harness(object(), object(), ["x"], include_path=str(tmp_path / "nope"), run_id="r")


@needs_lm_eval
@pytest.mark.usefixtures("offline", "one_torch_thread")
def test_local_task_agrees_with_our_scorer(
    tmp_path: Path, fresh_model: Callable[[], Any], tokenizer: Any
) -> None:
    model = fresh_model().model
    model.train()  # the caller's mode must survive lm-eval's model.eval()
    folder = write_task(tmp_path / "tasks")

    metrics, examples = run_harness(
        model, tokenizer, ["tinyqa_en"], include_path=str(folder), batch_size=4, run_id="run-1"
    )

    assert model.training
    assert {m["metric"] for m in metrics} == {"harness:tinyqa_en:acc", "harness:tinyqa_en:acc_norm"}
    for row in metrics:
        assert (row["run_id"], row["split"], row["language"]) == ("run-1", "test", "en")
        assert row["n"] == 8
    grouped = by_metric(examples)
    assert len(examples) == 16
    assert {r["example_id"] for r in grouped["harness:tinyqa_en:acc"]} == {str(i) for i in range(8)}
    assert all(r["split"] == "test" and r["language"] == "en" for r in examples)

    ours = our_scores(model, tokenizer)
    assert per_doc(grouped["harness:tinyqa_en:acc"]) == [s.acc for s in ours]
    assert per_doc(grouped["harness:tinyqa_en:acc_norm"]) == [s.acc_norm for s in ours]
    value = {m["metric"]: m["value"] for m in metrics}
    assert value["harness:tinyqa_en:acc"] == pytest.approx(sum(s.acc for s in ours) / 8)


@needs_lm_eval
@pytest.mark.usefixtures("offline", "one_torch_thread")
def test_peft_model_path_with_limit_and_declared_language(
    tmp_path: Path, fresh_model: Callable[[], Any], tokenizer: Any
) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    # Random B (not the zero init) so the adapter changes the scores and must be applied.
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model = get_peft_model(fresh_model().model, config)
    folder = write_task(tmp_path / "tasks", name="tinyqa_custom", language="fr")

    metrics, examples = run_harness(
        model, tokenizer, ["tinyqa_custom"], include_path=str(folder), limit=5, run_id="peft"
    )

    assert all(m["n"] == 5 and m["language"] == "fr" for m in metrics)
    grouped = by_metric(examples)
    assert len(grouped["harness:tinyqa_custom:acc"]) == 5
    ours = our_scores(model, tokenizer, limit=5)
    assert per_doc(grouped["harness:tinyqa_custom:acc"]) == [s.acc for s in ours]
    assert per_doc(grouped["harness:tinyqa_custom:acc_norm"]) == [s.acc_norm for s in ours]
