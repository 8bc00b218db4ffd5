"""Optional lm-evaluation-harness backend: run lm-eval tasks on a model already in memory.

Why in memory: the evaluate stage already holds the base model or the tuned PeftModel, so
wrapping it in ``HFLM(pretrained=model)`` avoids saving, merging and reloading weights, and
scores exactly the adapter we trained. Results become the same store rows as our own suite
(``metrics`` and ``examples``), so significance tests and reports treat them alike.

Metric names are ``harness:<task>:<metric>`` (``harness:<task>:<metric>/<filter>`` for
generation tasks whose filter is not lm-eval's default ``none``). Groups (e.g. ``belebele``)
get aggregate metric rows only; their member tasks carry the per-example rows.

Tasks that read Hugging Face hub datasets need network access (or a filled datasets cache).
Local YAML tasks with ``dataset_path: json`` and ``dataset_kwargs: {data_files: ...}`` run
offline; ``data_files`` is resolved against the working directory, so give absolute paths.
Needs the optional extra: ``pip install 'whichlora[harness]'``.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import re
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from whichlora.data.languages import normalize_language
from whichlora.errors import WhichloraError

PREFIX = "harness"
INSTALL_HINT = "pip install 'whichlora[harness]'"
DEFAULT_FILTER = "none"

# lm-eval metrics where lower is better; everything else it ships (acc, f1, bleu...) is higher.
_LOWER_IS_BETTER = {
    "perplexity",
    "word_perplexity",
    "byte_perplexity",
    "bits_per_byte",
    "ter",
    "brier_score",
}

# Multilingual task families whose names carry an ISO 639-1 code after the family prefix,
# sometimes followed by a subject (global_mmlu_full_sw_anatomy) or preceded by a prompt
# variant (mgsm_native_cot_sw). Longest prefixes first.
_FAMILIES = (
    "global_mmlu_full",
    "global_mmlu",
    "lambada_openai_mt",
    "xstorycloze",
    "xwinograd",
    "truthfulqa",
    "hellaswag",
    "m_mmlu",
    "xcopa",
    "xquad",
    "pawsx",
    "paws",
    "mgsm",
    "mlqa",
    "xnli",
    "arc",
)
_FLORES_CODE = re.compile(r"(?:^|_)([a-z]{3})_[A-Z][a-z]{3}(?=_|$)")  # eng_Latn, swh_Latn
_TWO_LETTERS = re.compile(r"[a-z]{2}")
_LANGUAGE_TAG = re.compile(r"[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
_NAME_CHARS = re.compile(r"[\w.\-]+")
_PLAIN_TASK_KINDS = {"task", "py_task", "python_task"}  # groups/tags may need lm-eval's tasks


def _require_lm_eval() -> None:
    """Fail with the install command rather than an ImportError deep inside the stage."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as err:
        raise WhichloraError(
            "The lm-evaluation-harness backend needs the optional package lm-eval, which is "
            f"not installed. Fix: {INSTALL_HINT}, or remove the harness tasks from the study."
        ) from err


# --------------------------------------------------------------------------- languages


def split_task_language(task: str) -> tuple[str, str | None]:
    """(the task name without its language code, the canonical code), or (task, None) when
    the name encodes no language: xnli_de -> (xnli, de), belebele_swh_Latn -> (belebele, sw),
    global_mmlu_full_sw_anatomy -> (global_mmlu_full_anatomy, sw).

    Conservative on purpose: English words in task names ("is", "to", "an") are also ISO codes,
    so a bare two-letter token only counts right after a known family prefix or at the end.
    """
    match = _FLORES_CODE.search(task)
    if match:
        code = normalize_language(match.group(1))
        rest = (task[: match.start()] + task[match.end() :]).strip("_").replace("__", "_")
        return (rest or task, code) if code else (task, None)
    tokens = task.split("_")
    for family in _FAMILIES:
        if task.startswith(family + "_"):
            skip = family.count("_") + 1
            for index, token in enumerate(tokens[skip:], skip):
                code = _TWO_LETTERS.fullmatch(token) and normalize_language(token)
                if code:
                    return "_".join(tokens[:index] + tokens[index + 1 :]), code
            break
    if len(tokens) > 1 and _TWO_LETTERS.fullmatch(tokens[-1]):
        code = normalize_language(tokens[-1])
        if code:
            return "_".join(tokens[:-1]), code
    return task, None


def language_from_task_name(task: str) -> str | None:
    """Canonical language code that a task name encodes, or None when it encodes none."""
    return split_task_language(task)[1]


def task_language(task: str, config: dict[str, Any] | None = None) -> str:
    """A task's language: explicit ``metadata.language``, else the name, else ``dataset_name``.

    An explicit declaration in the task YAML beats a guess from the name, so a local task can
    always state its language. Returns "" when nothing identifies one.
    """
    config = config or {}
    metadata = config.get("metadata")
    if isinstance(metadata, dict):
        declared = normalize_language(metadata.get("language"))
        if declared:
            return declared
    from_name = language_from_task_name(task)
    if from_name:
        return from_name
    dataset_name = config.get("dataset_name")
    if isinstance(dataset_name, str) and _LANGUAGE_TAG.fullmatch(dataset_name):
        return normalize_language(dataset_name) or ""
    return ""


def higher_is_better(metric: str) -> bool:
    """Direction of a ``harness:<task>:<metric>[/<filter>]`` name, for reports and tests."""
    base = metric.split(":")[-1].split("/")[0]
    return base not in _LOWER_IS_BETTER


# --------------------------------------------------------------------------- task lookup


@lru_cache(maxsize=1)
def _manager_class() -> type:
    """TaskManager whose load errors (e.g. an unreachable hub dataset) name the fix."""
    from lm_eval.tasks import TaskManager

    class _Manager(TaskManager):  # type: ignore[misc]
        def load(self, task_list: Any) -> Any:
            try:
                return super().load(task_list)
            except WhichloraError:
                raise
            except Exception as err:
                names = task_list if isinstance(task_list, list) else [task_list]
                shown = ", ".join(str(n) for n in names)
                raise WhichloraError(
                    f"lm-eval could not load task(s) {shown}: {type(err).__name__}: {err}. "
                    "Tasks that read Hugging Face hub datasets need network access (or a filled "
                    "HF_DATASETS_CACHE). Fix: run online once, or use a local YAML task with "
                    "`dataset_path: json` and `dataset_kwargs: {data_files: /abs/path.jsonl}` "
                    "in the folder given as include_path."
                ) from err

    return _Manager


@lru_cache(maxsize=4)
def _full_manager(include_path: str | None) -> Any:
    """lm-eval's own tasks plus include_path; indexing ~14k YAML files takes ~30 s, so cached."""
    return _manager_class()(include_path=include_path)


@lru_cache(maxsize=1)
def _lm_eval_yaml_words() -> frozenset[str]:
    """Every word in lm-eval's task YAMLs: a cheap test that a name cannot be a bundled task."""
    import lm_eval.tasks

    words: set[str] = set()
    for path in Path(lm_eval.tasks.__file__).parent.rglob("*.yaml"):
        words.update(_NAME_CHARS.findall(path.read_text(encoding="utf-8", errors="ignore")))
    return frozenset(words)


def _maybe_bundled(name: str) -> bool:
    """False only when lm-eval surely has no such task (every index name appears verbatim)."""
    return not _NAME_CHARS.fullmatch(name) or name in _lm_eval_yaml_words()


def _unknown_task_error(missing: list[str], include_path: str | None) -> WhichloraError:
    where = f" nor in include_path '{include_path}'" if include_path else ""
    return WhichloraError(
        f"Unknown lm-eval task(s): {', '.join(missing)} "
        f"(not an lm-eval task, group or tag{where}). "
        "Fix: use an lm-eval task name such as belebele_swh_Latn or xcopa_sw (list them with "
        "`lm-eval ls tasks`), or write a local YAML task (e.g. `dataset_path: json` with "
        "`dataset_kwargs: {data_files: ...}`) whose `task:` is that name, in a folder passed as "
        "include_path."
    )


def _kind(entry: Any) -> str:
    """An index entry's kind: an Entry with .kind in lm-eval 0.4.13, a dict with "type" before."""
    kind = getattr(entry, "kind", None)
    if kind is not None:
        return str(kind.name).lower()
    return str(entry.get("type", "")) if isinstance(entry, dict) else ""


def _task_manager(tasks: Sequence[str], include_path: str | None) -> Any:
    """Only local tasks -> index just include_path (fast); otherwise lm-eval's full index."""
    local = None
    folder: str | None = None
    if include_path is not None:
        path = Path(include_path).expanduser()
        if not path.is_dir():
            raise WhichloraError(
                f"Harness include_path '{include_path}' is not an existing folder. Fix: point it "
                "at the folder holding your lm-eval task YAML files (subfolders are searched)."
            )
        folder = str(path.resolve())
        local = _manager_class()(include_path=folder, include_defaults=False)
        if all(_kind(local.task_index.get(t)) in _PLAIN_TASK_KINDS for t in tasks):
            return local

    def known(name: str) -> bool:
        return Path(name).is_file() or (local is not None and name in local.task_index)

    missing = [t for t in tasks if not known(t) and not _maybe_bundled(t)]
    if missing:
        raise _unknown_task_error(missing, include_path)
    manager = _full_manager(folder)
    missing = [t for t in tasks if t not in manager.task_index and not Path(t).is_file()]
    if missing:
        raise _unknown_task_error(missing, include_path)
    return manager


# --------------------------------------------------------------------------- conversion


def metric_name(task: str, metric: str, filter_key: str = DEFAULT_FILTER) -> str:
    """``harness:<task>:<metric>``, with ``/<filter>`` when the filter is not lm-eval's none."""
    suffix = "" if filter_key == DEFAULT_FILTER else f"/{filter_key}"
    return f"{PREFIX}:{task}:{metric}{suffix}"


def as_number(value: Any) -> float | None:
    """A per-doc or aggregate value as a float; None for tuples (bleu inputs), strings, NaN."""
    if isinstance(value, bool | int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return as_number(item())
    return None


def _aggregate_rows(
    name: str, values: dict[str, Any], language: str, n: int, run_id: str
) -> list[dict[str, Any]]:
    """Metric rows from one results entry ({"acc,none": 0.5, "acc_stderr,none": ...})."""
    rows = []
    for key, value in values.items():
        metric, sep, filter_key = key.partition(",")
        number = as_number(value)
        if not sep or metric.endswith("_stderr") or number is None:
            continue
        rows.append(
            {
                "run_id": run_id,
                "split": "test",
                "language": language,
                "metric": metric_name(name, metric, filter_key),
                "value": number,
                "n": n,
            }
        )
    return rows


def _example_rows(
    task: str, samples: list[dict[str, Any]], language: str, run_id: str
) -> list[dict[str, Any]]:
    """Per-doc rows keyed by lm-eval's doc_id, so runs on the same task pair up."""
    rows = []
    for sample in sorted(samples, key=lambda s: (str(s.get("filter")), s["doc_id"])):
        filter_key = str(sample.get("filter", DEFAULT_FILTER))
        for metric in sample.get("metrics", []):
            number = as_number(sample.get(metric))
            if number is None:
                continue
            rows.append(
                {
                    "run_id": run_id,
                    "split": "test",
                    "language": language,
                    "metric": metric_name(task, metric, filter_key),
                    "example_id": str(sample["doc_id"]),
                    "value": number,
                }
            )
    return rows


def _leaf_tasks(name: str, subtasks: dict[str, list[str]]) -> set[str]:
    """Tasks under a (possibly nested) group: a group's n is the sum of theirs."""
    leaves: set[str] = set()
    stack, seen = [name], set()
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        children = subtasks.get(current)
        if children:
            stack += children
        else:
            leaves.add(current)
    return leaves


def results_to_rows(results: dict[str, Any], run_id: str) -> tuple[list[dict], list[dict]]:
    """Turn simple_evaluate's output (with samples) into (metric rows, example rows)."""
    configs = results.get("configs", {})
    n_samples = results.get("n-samples", {})
    samples = results.get("samples", {})
    metrics: list[dict[str, Any]] = []
    examples: list[dict[str, Any]] = []
    languages: dict[str, str] = {}
    counts: dict[str, int] = {}
    subtasks = results.get("group_subtasks", {})
    groups = results.get("groups", {})
    for task, values in sorted(results.get("results", {}).items()):
        if task in groups or subtasks.get(task):  # older lm-eval also lists groups here
            continue
        language = languages[task] = task_language(task, configs.get(task))
        task_samples = samples.get(task, [])
        default_n = len({s["doc_id"] for s in task_samples})
        counts[task] = int(n_samples.get(task, {}).get("effective", default_n))
        metrics += _aggregate_rows(task, values, language, counts[task], run_id)
        examples += _example_rows(task, task_samples, language, run_id)
    for group, values in sorted(groups.items()):
        leaves = _leaf_tasks(group, subtasks) & counts.keys()
        child_languages = {languages[t] for t in leaves}
        language = language_from_task_name(group) or (
            child_languages.pop() if len(child_languages) == 1 else ""
        )
        n = sum(counts[t] for t in leaves)
        metrics += _aggregate_rows(group, values, language, n, run_id)
    return metrics, examples


# --------------------------------------------------------------------------- running


@contextlib.contextmanager
def _untouched(model: Any) -> Iterator[None]:
    """lm-eval reseeds every global RNG and puts the model in eval mode; undo both after."""
    import numpy as np
    import torch

    was_training = getattr(model, "training", False)
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng():
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        model.train(was_training)


def run_harness(
    model: Any,
    tokenizer: Any,
    tasks: list[str],
    *,
    include_path: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    run_id: str,
) -> tuple[list[dict], list[dict]]:
    """Run lm-eval tasks on an in-memory model (HF or PeftModel); return store rows.

    Returns (metric rows, example rows) shaped for the ``metrics`` and ``examples`` tables.
    ``limit`` keeps the first N docs of each task (lm-eval's semantics), so runs stay paired.
    """
    _require_lm_eval()
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        raise WhichloraError("run_harness got no tasks. Fix: list at least one lm-eval task name.")
    if batch_size < 1:
        raise WhichloraError(f"batch_size must be at least 1, got {batch_size}.")
    if limit is not None and limit < 1:
        raise WhichloraError(f"limit must be a positive number of docs or None, got {limit}.")
    manager = _task_manager(tasks, include_path)

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    with _untouched(model):
        # HFLM may set a pad token on the tokenizer; keep the caller's tokenizer as it was.
        lm = HFLM(pretrained=model, tokenizer=copy.deepcopy(tokenizer), batch_size=batch_size)
        results = simple_evaluate(
            model=lm,
            tasks=tasks,
            limit=limit,
            batch_size=batch_size,
            log_samples=True,
            bootstrap_iters=0,  # stderr: we run our own paired significance tests
            task_manager=manager,
        )
    if results is None:  # only non-zero ranks of a distributed launch get None
        return [], []
    return results_to_rows(dict(results), run_id)
