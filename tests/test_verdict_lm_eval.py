"""`whichlora verdict --lm-eval runs.csv`: lm-evaluation-harness --log_samples folders judged.

The end-to-end tests (slow: ~25 s, `make test-slow`) run lm-eval itself (simple_evaluate with
its EvaluationTracker writing the folders, as `lm_eval --output_path OUT --log_samples` does) on
the tiny model with a local task, for two techniques x two seeds, and judge the folders in a real
process. The fast tests write folders with lm-eval's own EvaluationTracker from made-up samples
(shaped as evaluator.evaluate logs them), to reach every parsing rule and error in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from whichlora.cli import main
from whichlora.evaluate.harness import split_task_language
from whichlora.evaluate.harness_logs import read_lm_eval

pytestmark = pytest.mark.skipif(
    find_spec("lm_eval") is None,
    reason="lm-eval not installed (optional extra: pip install 'whichlora[harness]')",
)
DATA = Path(__file__).parent / "data" / "harness"


# ------------------------------------------------------------------ folders written by lm-eval
def _sample(doc_id: int, values: dict[str, Any], filter_key: str = "none") -> dict[str, Any]:
    """One --log_samples record as evaluator.evaluate builds it."""
    return {
        "doc_id": doc_id, "doc": {"q": f"question {doc_id}"}, "target": 0,
        "arguments": [("Question:", " a"), ("Question:", " b")],
        "resps": [[["-1.0", "False"]], [["-2.0", "False"]]],
        "filtered_resps": [["-1.0", "False"], ["-2.0", "False"]],
        "filter": filter_key, "metrics": list(values), "doc_hash": f"d{doc_id}",
        "prompt_hash": "p", "target_hash": "t", **values,
    }  # fmt: skip


def write_lm_eval(
    out: Path,
    model: str,
    samples: dict[str, list[dict[str, Any]]],
    directions: dict[str, dict[str, bool]] | None = None,
    configs: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write one lm_eval run with lm-eval's EvaluationTracker; return the model's folder."""
    from lm_eval.loggers import EvaluationTracker

    tracker = EvaluationTracker(output_path=str(out))
    tracker.general_config_tracker.log_experiment_args(
        model_source="hf", model_args=f"pretrained={model}", system_instruction=None,
        chat_template=None, fewshot_as_multiturn=False,
    )  # fmt: skip
    directions = directions or {}
    configs = configs or {}
    results = {
        "results": {task: {"alias": task} for task in samples},
        "configs": {task: configs.get(task, {"task": task}) for task in samples},
        "higher_is_better": {
            task: directions.get(task, {m: True for m in rows[0]["metrics"]})
            for task, rows in samples.items()
        },
    }
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    folder = out / tracker.general_config_tracker.model_name_sanitized
    assert any(folder.glob("results_*.json")), "lm-eval did not write its results"
    return folder


def acc(values: list[int], metric: str = "acc") -> list[dict[str, Any]]:
    return [_sample(i, {metric: float(v)}) for i, v in enumerate(values)]


def runs_csv(folder: Path, rows: list[tuple[str, str, Any]]) -> Path:
    path = folder / "runs.csv"
    pd.DataFrame(rows, columns=["path", "technique", "seed"]).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------ parsing (fast)
@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("xnli_de", ("xnli", "de")),
        ("belebele_swh_Latn", ("belebele", "sw")),
        ("xcopa_sw", ("xcopa", "sw")),
        ("global_mmlu_full_sw_anatomy", ("global_mmlu_full_anatomy", "sw")),
        ("mgsm_native_cot_sw", ("mgsm_native_cot", "sw")),
        ("arc_challenge", ("arc_challenge", None)),
        ("gsm8k", ("gsm8k", None)),
    ],
)
def test_split_task_language(task: str, expected: tuple[str, str | None]) -> None:
    assert split_task_language(task) == expected


def test_reads_what_lm_eval_writes(tmp_path: Path) -> None:
    perplexity = [_sample(i, {"word_perplexity": [-12.5, 4]}) for i in range(3)]
    strict = [_sample(i, {"exact_match": float(i % 2)}, "strict-match") for i in range(3)]
    first = write_lm_eval(
        tmp_path / "out-1", "org/model-a",
        {"xnli_de": acc([1, 0, 1]), "xnli_en": acc([1, 1, 0]), "wikitext": perplexity,
         "mgsm_direct_de": strict, "myqa": acc([3, 1], "brier")},
        directions={"myqa": {"brier": False}},  # lm-eval's word, not the name, gives it
        configs={"myqa": {"task": "myqa", "metadata": {"language": "fra"}}},
    )  # fmt: skip
    # a second lm_eval run into the same folder re-ran xnli_de: the newer one counts
    write_lm_eval(tmp_path / "out-1", "org/model-a", {"xnli_de": acc([0, 0, 0])})
    second = write_lm_eval(tmp_path / "out-2", "org/model-a", {"xnli_de": acc([1, 1, 1])})
    runs = runs_csv(tmp_path, [("out-1", "lora", 1), (str(second), "lora", 2)])

    read = read_lm_eval(runs)
    scores = read.scores
    assert first.parent.name == "out-1"  # the row gave the output_path: its one model folder
    assert set(scores["metric"]) == {"harness:xnli:acc", "harness:mgsm_direct:exact_match/"
                                     "strict-match", "harness:myqa:brier"}  # fmt: skip
    xnli = scores[scores["metric"] == "harness:xnli:acc"]
    assert set(xnli["language"]) == {"de", "en"} and set(xnli["seed"]) == {"1", "2"}
    de1 = xnli[(xnli["language"] == "de") & (xnli["seed"] == "1")]
    assert list(de1["example_id"]) == ["0", "1", "2"] and list(de1["value"]) == [0.0] * 3
    assert set(scores.loc[scores["metric"] == "harness:myqa:brier", "language"]) == {"fr"}
    assert read.higher_is_better == {
        "harness:xnli:acc": True,
        "harness:myqa:brier": False,
        "harness:mgsm_direct:exact_match/strict-match": True,
    }
    assert len(read.left_out) == 1 and read.left_out[0].startswith("harness:wikitext:word_perp")
    assert set(scores["task"]) == {"xnli", "mgsm_direct", "myqa"}


def test_tasks_sharing_a_metric_and_language_keep_their_documents_apart(tmp_path: Path) -> None:
    folder = write_lm_eval(tmp_path / "o", "m", {"qa_de": acc([1, 0]), "qa_deu_Latn": acc([0])})
    read = read_lm_eval(runs_csv(tmp_path, [(str(folder), "lora", 0)]))
    assert sorted(read.scores["example_id"]) == ["qa_de/0", "qa_de/1", "qa_deu_Latn/0"]


@pytest.fixture
def two_runs(tmp_path: Path) -> Path:
    """lora and other, seeds 1 and 2, on xnli_de, xnli_en and a task without a language."""
    rows = []
    for technique, seed, flip in (("lora", 1, 0), ("lora", 2, 0), ("other", 1, 1), ("other", 2, 0)):
        values = [(i + flip + seed) % 2 for i in range(6)]
        write_lm_eval(tmp_path / f"{technique}-{seed}", "m",
                      {"xnli_de": acc(values), "xnli_en": acc(values[::-1]),
                       "nolang": acc(values)})  # fmt: skip
        rows.append((f"{technique}-{seed}", technique, seed))
    return runs_csv(tmp_path, rows)


def _bad(argv: list[str], capsys: pytest.CaptureFixture[str], json_out: Path) -> str:
    assert main([*argv, "--json", str(json_out)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert not json_out.exists()
    return captured.err


def test_cli_in_a_real_process(two_runs: Path) -> None:
    out = two_runs.parent / "v.json"
    proc = subprocess.run(
        [sys.executable, "-m", "whichlora", "verdict", "--lm-eval", str(two_runs), "--baseline",
         "lora", "--source", "en", "--seen", "de", "--language", "nolang=sw", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=two_runs.parent,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    families = {r["family"] for r in json.loads(out.read_text())}
    assert families == {"transfer_seen", "transfer_unseen", "retention", "tradeoff"}
    bad = subprocess.run(
        [sys.executable, "-m", "whichlora", "verdict", "--lm-eval", str(two_runs), "--baseline",
         "lora", "--source", "en"],
        capture_output=True, text=True, timeout=120, cwd=two_runs.parent,
    )  # fmt: skip
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "--language TASK=LANG" in bad.stderr and bad.stdout == ""


def test_cli_without_languages_one_family_per_task(
    two_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = two_runs.parent / "v.json"
    assert main(["verdict", "--lm-eval", str(two_runs), "--baseline", "lora", "--json",
                 str(out)]) == 0  # fmt: skip
    records = json.loads(out.read_text())
    assert {(r["family"], r["metric"]) for r in records} == {
        ("xnli", "harness:xnli:acc"), ("nolang", "harness:nolang:acc")
    }
    xnli = next(r for r in records if r["family"] == "xnli")
    assert (xnli["n_languages"], xnli["n_items"], xnli["n_seeds"]) == (2, 12, 2)
    assert "harness:nolang:acc" in capsys.readouterr().out
    # with roles, the two task families make a trade-off row only if they share a metric
    err = _bad(["verdict", "--lm-eval", str(two_runs), "--baseline", "lora", "--role",
                "xnli=transfer_seen", "--role", "nolang=retention"], capsys, out.with_suffix(
                ".x"))  # fmt: skip
    assert "share no metric" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--source", "en", "--seen", "de"], "--language TASK=LANG"),
        (["--language", "xnli_fr=fr"], "no run has"),
        (["--language", "nolang=klingonish"], "not a known language"),
        (["--seen", "de"], "--seen needs --source"),
        (["--baseline", "dora"], "baseline 'dora'"),
    ],
)
def test_cli_bad_lm_eval_options(
    two_runs: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    argv = ["verdict", "--lm-eval", str(two_runs), *extra]
    if "--baseline" not in extra:
        argv += ["--baseline", "lora"]
    assert message in _bad(argv, capsys, two_runs.parent / "v.json")


def test_cli_language_option_places_a_task(
    two_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = two_runs.parent / "v.json"
    argv = ["verdict", "--lm-eval", str(two_runs), "--baseline", "lora", "--source", "eng",
            "--seen", "deu", "--language", "nolang=sw", "--json", str(out)]  # fmt: skip
    assert main(argv) == 0
    records = json.loads(out.read_text())
    unseen = [r for r in records if r["family"] == "transfer_unseen"]
    assert [r["metric"] for r in unseen] == ["harness:nolang:acc"]
    assert {r["family"] for r in records} >= {"transfer_seen", "retention", "tradeoff"}


def _drop_samples(tmp: Path) -> Path:
    folder = write_lm_eval(tmp / "o", "m", {"xnli_de": acc([1, 0])})
    for file in folder.glob("samples_*"):
        file.unlink()
    return runs_csv(tmp, [("o", "lora", 1)])


def _two_models(tmp: Path) -> Path:
    write_lm_eval(tmp / "o", "m1", {"xnli_de": acc([1, 0])})
    write_lm_eval(tmp / "o", "m2", {"xnli_de": acc([1, 0])})
    return runs_csv(tmp, [("o", "lora", 1)])


def _twice(tmp: Path) -> Path:
    write_lm_eval(tmp / "o", "m", {"xnli_de": acc([1, 0])})
    return runs_csv(tmp, [("o", "lora", 1), ("o", "lora", 1)])


def _no_margin(tmp: Path) -> Path:
    write_lm_eval(tmp / "o", "m", {"xnli_de": acc([1, 0], "exact_match")})
    write_lm_eval(tmp / "p", "m", {"xnli_de": acc([1, 1], "exact_match")})
    return runs_csv(tmp, [("o", "lora", 1), ("p", "dora", 1)])


def _no_column(tmp: Path) -> Path:
    path = tmp / "runs.csv"
    path.write_text("folder,technique,seed\no,lora,1\n", encoding="utf-8")
    return path


def _missing_path(tmp: Path) -> Path:
    return runs_csv(tmp, [("nowhere", "lora", 1)])


def _only_perplexity(tmp: Path) -> Path:
    rows = [_sample(i, {"word_perplexity": [-1.0, 3]}) for i in range(2)]
    write_lm_eval(tmp / "o", "m", {"wikitext": rows})
    return runs_csv(tmp, [("o", "lora", 1)])


BAD_RUNS = {
    "no --log_samples": (_drop_samples, "ran without --log_samples"),
    "two models in one folder": (_two_models, "holds the results of 2 models"),
    "one run twice": (_twice, "already from data row 1"),
    "no margin": (_no_margin, "--margin harness:xnli:exact_match=VALUE"),
    "no path column": (_no_column, "lacks column(s) ['path']"),
    "missing folder": (_missing_path, "does not exist"),
    "nothing per document": (_only_perplexity, "no per-document score is a number"),
}


@pytest.mark.parametrize("case", list(BAD_RUNS))
def test_cli_bad_runs_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    make, message = BAD_RUNS[case]
    runs = make(tmp_path)
    err = _bad(["verdict", "--lm-eval", str(runs), "--baseline", "lora"], capsys,
               tmp_path / "v.json")  # fmt: skip
    assert message in err, err


# ------------------------------------------------------------------ real lm-eval output
@pytest.fixture(scope="module")
def real_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """lm-eval on the tiny Llama: lora (two random adapters, seeds 1 and 2) and other (two more)
    on tinyqa_en and tinyqa_de, written as `lm_eval --output_path --log_samples` writes them;
    the runs table adds `copy`, the very folders of lora (a model identical to the baseline)."""
    import datasets.config
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("lm-eval-runs")
    tasks = root / "tasks"
    tasks.mkdir()
    for name in ("tinyqa_en", "tinyqa_de"):
        text = (DATA / "tinyqa_en.yaml").read_text(encoding="utf-8")
        text = text.replace("DATA_FILE", str(DATA / "tinyqa.jsonl"))
        (tasks / f"{name}.yaml").write_text(text.replace("task: tinyqa_en", f"task: {name}"))
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        cache = root / "hf-datasets"
        for key, value in (("HF_DATASETS_CACHE", str(cache)), ("HF_DATASETS_OFFLINE", "1"),
                           ("HF_HUB_OFFLINE", "1")):  # fmt: skip
            mp.setenv(key, value)
        mp.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
        torch.set_num_threads(1)
        manager = TaskManager(include_path=str(tasks), include_defaults=False)
        rows = []
        for technique, seed in (("lora", 1), ("lora", 2), ("other", 11), ("other", 12)):
            torch.manual_seed(seed)
            adapter = root / "adapters" / f"{technique}-{seed}"
            config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
            base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
            get_peft_model(base, config).save_pretrained(adapter)
            out = root / "out" / f"{technique}-{seed}"
            tracker = EvaluationTracker(output_path=str(out))
            results = simple_evaluate(
                model="hf",
                model_args=f"pretrained={tiny_model_dir},peft={adapter},dtype=float32",
                tasks=["tinyqa_en", "tinyqa_de"], task_manager=manager, device="cpu",
                batch_size=8, log_samples=True, evaluation_tracker=tracker, bootstrap_iters=0,
            )  # fmt: skip
            assert results is not None
            samples = results.pop("samples")  # what lm_eval's CLI does with --log_samples
            tracker.save_results_aggregated(results=results, samples=samples)
            for task in results["configs"]:
                tracker.save_results_samples(task_name=task, samples=samples[task])
            paired_seed = seed if technique == "lora" else seed - 10
            rows.append((f"out/{technique}-{seed}", technique, paired_seed))
            if technique == "lora":
                rows.append((f"out/{technique}-{seed}", "copy", seed))
        torch.set_num_threads(threads)
    yield runs_csv(root, rows)


@pytest.mark.slow
def test_real_lm_eval_output_is_judged_in_a_real_process(real_runs: Path) -> None:
    out = real_runs.parent / "verdicts.json"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "whichlora", "verdict", "--lm-eval", str(real_runs),
         "--baseline", "lora", "--source", "en", "--seen", "de", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=real_runs.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = json.loads(out.read_text())
    metrics = {"harness:tinyqa:acc", "harness:tinyqa:acc_norm"}
    assert {(r["technique"], r["family"], r["metric"]) for r in records} == {
        (t, f, m) for t in ("copy", "other") for f in ("transfer_seen", "retention", "tradeoff")
        for m in metrics
    }  # fmt: skip
    for r in records:
        assert r["higher_is_better"] is True and r["baseline"] == "lora"
        if r["family"] != "tradeoff":
            assert (r["n_seeds"], r["n_languages"], r["n_items"]) == (2, 1, 8), r
            assert r["margin"] == 0.01  # lm-eval accuracies have a default margin
        if r["technique"] == "copy":  # the baseline's own folders: never better or worse
            assert r["verdict"] not in ("better", "worse"), r
            assert r["family"] == "tradeoff" or r["estimate"] == 0.0
    assert "copy" in proc.stdout and "harness:tinyqa:acc" in proc.stdout


@pytest.mark.slow
def test_real_lm_eval_scores_are_lm_evals_own(real_runs: Path) -> None:
    """Each per-item score is lm-eval's per-document value: their mean is its aggregate."""
    scores = read_lm_eval(real_runs).scores
    for folder in (real_runs.parent / "out").glob("*/*"):
        technique, seed = folder.parent.name.split("-")
        seed = str(int(seed) - 10) if technique == "other" else seed
        results = json.loads(next(folder.glob("results_*.json")).read_text(encoding="utf-8"))
        for task, language in (("tinyqa_en", "en"), ("tinyqa_de", "de")):
            for metric in ("acc", "acc_norm"):
                mine = scores[(scores["technique"] == technique) & (scores["seed"] == seed)
                              & (scores["language"] == language)
                              & (scores["metric"] == f"harness:tinyqa:{metric}")]  # fmt: skip
                assert len(mine) == 8
                assert mine["value"].mean() == pytest.approx(results["results"][task][
                    f"{metric},none"])  # fmt: skip
