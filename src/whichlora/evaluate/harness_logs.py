"""Read lm-evaluation-harness ``--log_samples`` output into a long score table.

`lm_eval ... --output_path OUT --log_samples` writes, per model, ``OUT/<model>/results_<date>.json``
and one ``samples_<task>_<date>.jsonl`` per task (the JSON lines carry each document's ``doc_id``,
``filter``, the names of its ``metrics`` and their per-document values). A runs table maps each
such folder (or OUT itself, when it holds one model) to a technique and a seed:

    path,technique,seed
    out/lora-s1,lora,1

Each task's per-document metric becomes the per-item score (example_id = doc_id), so techniques
pair by document and seed. The metric's direction is the task's ``higher_is_better`` in the
results JSON. Tasks that differ only in their language code (xnli_de, xnli_fr) share one metric,
``harness:xnli:acc`` (the study's harness naming, evaluate/harness.py), the language going to the
language column; the language comes from ``--language TASK=LANG``, else the task's declared
``metadata.language``, its name (xnli_de, belebele_swh_Latn) or its dataset_name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from whichlora.errors import WhichloraError
from whichlora.evaluate.harness import (
    DEFAULT_FILTER,
    as_number,
    higher_is_better,
    metric_name,
    split_task_language,
    task_language,
)

__all__ = ["RUN_COLUMNS", "LmEvalScores", "read_lm_eval"]

RUN_COLUMNS = ("path", "technique", "seed")
SCORE_COLUMNS = ["technique", "seed", "language", "example_id", "metric", "value", "task"]
RESULTS_GLOB = "results_*.json"
LOG_SAMPLES_FIX = (
    "run lm_eval with --output_path FOLDER --log_samples and give that folder (or its "
    "per-model subfolder) in the path column"
)


@dataclass
class LmEvalScores:
    """The score table (with ``task``: the family a task gives when there are no languages),
    each metric's direction, and what could not be judged per item."""

    scores: pd.DataFrame
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)


@dataclass
class _Task:
    task: str
    config: dict[str, Any]
    directions: dict[str, Any]
    samples: Path


def _date(results: Path) -> str:
    """lm-eval's own rule (utils.get_file_datetime): the text after the last underscore."""
    return results.stem[results.stem.rfind("_") + 1 :]


def _results_files(path: Path, where: str) -> list[Path]:
    if path.is_file():
        if path.suffix != ".json":
            raise WhichloraError(f"{where}: {path} is not an lm-eval results JSON or folder; "
                                 f"{LOG_SAMPLES_FIX}.")  # fmt: skip
        return [path]
    if not path.is_dir():
        raise WhichloraError(f"{where}: {path} does not exist. Fix the path (relative paths are "
                             "read from the runs table's folder).")  # fmt: skip
    found = sorted(path.glob(RESULTS_GLOB))
    if found:
        return found
    models = sorted(d for d in path.iterdir() if d.is_dir() and any(d.glob(RESULTS_GLOB)))
    if len(models) == 1:
        return sorted(models[0].glob(RESULTS_GLOB))
    if models:
        names = ", ".join(d.name for d in models)
        raise WhichloraError(
            f"{where}: {path} holds the results of {len(models)} models ({names}); give each "
            "its own row, with the path of that model's folder."
        )
    raise WhichloraError(f"{where}: no lm-eval results ({RESULTS_GLOB}) in {path}. Fix: "
                         f"{LOG_SAMPLES_FIX}.")  # fmt: skip


def _read_json(path: Path, where: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WhichloraError(f"{where}: cannot read lm-eval results {path} ({err}). Fix: give "
                             "the folder lm_eval wrote, unchanged.") from None  # fmt: skip
    if not isinstance(data, dict) or not isinstance(data.get("configs"), dict):
        raise WhichloraError(f"{where}: {path} is not an lm-eval results file (no 'configs'). "
                             f"Fix: {LOG_SAMPLES_FIX}.")  # fmt: skip
    return data


def _tasks(path: Path, where: str) -> dict[str, _Task]:
    """task -> its newest results and samples file (a folder may hold several lm_eval runs)."""
    tasks: dict[str, _Task] = {}
    for results in sorted(_results_files(path, where), key=_date):
        data = _read_json(results, where)
        directions = data.get("higher_is_better") or {}
        for task, config in data["configs"].items():
            samples = results.parent / f"samples_{task}_{_date(results)}.jsonl"
            tasks[task] = _Task(task, config if isinstance(config, dict) else {},
                                directions.get(task) or {}, samples)  # fmt: skip
    if not tasks:
        raise WhichloraError(f"{where}: the lm-eval results in {path} name no task. Fix: "
                             f"{LOG_SAMPLES_FIX}.")  # fmt: skip
    return tasks


def _samples(task: _Task, where: str) -> list[dict[str, Any]]:
    if not task.samples.is_file():
        raise WhichloraError(
            f"{where}: task {task.task} has no per-document scores ({task.samples.name} is "
            f"missing): lm_eval ran without --log_samples. Fix: {LOG_SAMPLES_FIX}."
        )
    out = []
    with task.samples.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                sample = json.loads(line)
            except json.JSONDecodeError as err:
                raise WhichloraError(
                    f"{where}: {task.samples} line {number} is not JSON ({err.msg}); rerun "
                    f"lm_eval for {task.task}."
                ) from None
            if not isinstance(sample, dict) or "doc_id" not in sample:
                raise WhichloraError(f"{where}: {task.samples} line {number} has no doc_id; it "
                                     "is not lm-eval --log_samples output.")  # fmt: skip
            out.append(sample)
    return out


def _read_runs(runs: Path) -> pd.DataFrame:
    if not runs.is_file():
        raise WhichloraError(f"runs table {runs} does not exist; pass a CSV with columns "
                             f"{', '.join(RUN_COLUMNS)}.")  # fmt: skip
    try:
        table = pd.read_csv(runs, dtype=str, keep_default_na=False)
    except Exception as err:  # pandas raises several types for a malformed file
        raise WhichloraError(f"cannot read runs table {runs}: {err}. Write it as CSV with a "
                             f"header row: {','.join(RUN_COLUMNS)}.") from None  # fmt: skip
    missing = [c for c in RUN_COLUMNS if c not in table.columns]
    if missing:
        raise WhichloraError(
            f"runs table {runs} lacks column(s) {missing}; it maps each lm-eval output folder "
            f"to a technique and seed: {','.join(RUN_COLUMNS)} (found {list(table.columns)})."
        )
    if table.empty:
        raise WhichloraError(f"runs table {runs} has no rows; add one per lm_eval run.")
    for col in RUN_COLUMNS:
        empty = table[col].str.strip() == ""
        if empty.any():
            row = int(empty.to_numpy().argmax()) + 1
            raise WhichloraError(f"runs table {runs}: column {col!r} is empty in data row {row}; "
                                 "fill it in or drop the row.")  # fmt: skip
    return table


def read_lm_eval(runs: Path, languages: Mapping[str, str] | None = None) -> LmEvalScores:
    """Scores of every run in the runs table (see the module docstring)."""
    languages = dict(languages or {})
    table = _read_runs(runs)
    rows: list[dict[str, Any]] = []
    directions: dict[str, set[bool]] = {}
    owner: dict[tuple[str, str, str], int] = {}  # (technique, seed, task) -> runs-table row
    left_out: dict[str, str] = {}
    tasks_seen: set[str] = set()
    for index, run in enumerate(table.to_dict("records"), 1):
        where = f"runs table {runs}, data row {index}"
        technique, seed = run["technique"].strip(), run["seed"].strip()
        path = Path(run["path"].strip()).expanduser()
        path = path if path.is_absolute() else runs.parent / path
        for task, info in sorted(_tasks(path, where).items()):
            key = (technique, seed, task)
            if key in owner:
                raise WhichloraError(
                    f"{where}: technique {technique} seed {seed} has task {task} already from "
                    f"data row {owner[key]}; keep one lm_eval run per (technique, seed, task)."
                )
            owner[key] = index
            tasks_seen.add(task)
            name, from_name = split_task_language(task)
            language = languages.get(task) or task_language(task, info.config)
            bench = name if from_name else task
            for sample in _samples(info, where):
                filter_key = str(sample.get("filter", DEFAULT_FILTER))
                for metric in sample.get("metrics", []):
                    full = metric_name(bench, metric, filter_key)
                    value = as_number(sample.get(metric))
                    if value is None:
                        why = f"{task}: per-document {metric} is not a number (lm-eval "
                        left_out.setdefault(full, why + "aggregates it over the corpus)")
                        continue
                    hib = info.directions.get(metric)
                    hib = higher_is_better(full) if not isinstance(hib, bool) else hib
                    directions.setdefault(full, set()).add(hib)
                    rows.append({"technique": technique, "seed": seed, "language": language,
                                 "example_id": str(sample["doc_id"]), "metric": full,
                                 "value": value, "task": bench, "_task": task})  # fmt: skip
    unknown = sorted(set(languages) - tasks_seen)
    if unknown:
        raise WhichloraError(f"--language names task(s) {unknown} that no run has; the tasks "
                             f"are {sorted(tasks_seen)}.")  # fmt: skip
    if not rows:
        raise WhichloraError(
            f"runs table {runs}: no per-document score is a number ({'; '.join(left_out.values())}"
            "), so there is nothing to pair. Fix: judge tasks whose metrics are scored per "
            "document (acc, acc_norm, exact_match, ...)."
        )
    mixed = sorted(m for m, d in directions.items() if len(d) > 1)
    if mixed:
        raise WhichloraError(f"metric(s) {mixed} are higher-is-better in some tasks and lower in "
                             "others; map those tasks to languages with --language so each "
                             "keeps its own name.")  # fmt: skip
    scores = pd.DataFrame(rows)
    # Tasks that share a metric and a language (subjects of one benchmark) keep their documents
    # apart: their ids become <task>/<doc_id>, the same in every run.
    shared = scores.groupby(["metric", "language"])["_task"].transform("nunique") > 1
    scores.loc[shared, "example_id"] = (
        scores.loc[shared, "_task"] + "/" + scores.loc[shared, "example_id"]
    )
    scores = scores.drop(columns="_task")
    scores = scores[scores["value"].map(math.isfinite)].reset_index(drop=True)
    return LmEvalScores(
        scores=scores[SCORE_COLUMNS],
        higher_is_better={m: next(iter(d)) for m, d in directions.items()},
        left_out=[f"{m} ({why})" for m, why in sorted(left_out.items()) if m not in directions],
    )
