"""Content keys of the units of work: each names exactly the inputs that change the unit's result.

A unit whose key is recorded as done in the store is reused; one whose key changed is stale and
is redone (its old results discarded); one the study no longer asks for is left out of the
analysis and the report, and kept until `whichlora gc`. Like Snakemake or DVC, and for the same
reason: a study grows (seeds, techniques, learning rates, languages, harness tasks) without
redoing finished work.

What is deliberately *not* in a key, because it never changes a result: the device, device map
and executor (the executor only decides where a run happens), `allow_pickle`, progress options,
`training.checkpoint_every`, `training.report_to`, `training.stall_timeout`,
`training.gradient_checkpointing` (same gradients, tested), `evaluation.batch_size` (scores do
not depend on it up to float rounding, tested), `evaluation.precision` while it is fp32 (so
studies from before the setting keep their keys; bf16 is in the key of every scoring unit), and
the analysis margins and alpha for train, evaluate and embed units.

Bump a VERSION entry when the code of that unit kind changes what it computes: every unit of the
kind becomes stale.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from whichlora.config.study import Study
from whichlora.data.atlas import atlas_anchors
from whichlora.data.languages import evaluation_languages
from whichlora.models.precision import FP32, resolve_precision
from whichlora.store import BASE
from whichlora.study.plan import RunSpec
from whichlora.train.precision import DEFAULT as DEFAULT_PRECISION

VERSION = {
    "train": 1,
    "evaluate": 1,
    "validate": 1,
    "harness": 1,
    "analyze": 2,
    "atlas": 1,
}

# TrainRequest fields that never change a trained adapter (the model's identity is in model_key).
NOT_IN_TRAIN_KEY = frozenset(
    {
        "model",
        "dtype",
        "trust_remote_code",
        "allow_pickle",
        "device",
        "device_map",
        "checkpoint_every",
        "report_to",
        "run_name",
        "gradient_checkpointing",  # recomputes the same activations: same gradients (tested)
        "compile",  # the same step, fused: equal within bf16 rounding (tested)
        "stall_timeout",  # when a stalled run is given up: never what it computes
        "validate_every",  # a learning curve read beside the training: never what it trains
    }
)
# Fields added after studies were run, keyed only when they differ from the value every earlier
# run had, so a finished study keeps its keys (e.g. precision "auto" resolves to fp32 on CPU).
KEYED_UNLESS_DEFAULT = {
    "precision": DEFAULT_PRECISION,
    "processes": 1,
    "packing": False,
    "sparse_dropout": False,
}
# Since the loss of a step is normalised by the labelled tokens of its whole global batch, a run
# with several micro-batches per step weighs them by their tokens, not equally: its result
# changed, so its key says so. A one-micro-batch step is unchanged to the bit, and so is its key.
TOKEN_WEIGHTED = {"loss": "labelled tokens of the global batch"}

EVALUATE = "evaluate"  # stage prefix of the built-in suite's units: "evaluate:<language>"
HARNESS = "harness"  # stage prefix of one lm-eval task's units: "harness:<task>"
VALIDATE = "validate"
TRAIN = "train"
ATLAS = "atlas"  # one unit per model: the transfer atlas (evaluation.atlas), when asked for


def digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


def model_key(study: Study) -> dict[str, Any]:
    spec = study.model
    return {"id": spec.id, "dtype": spec.dtype, "trust_remote_code": spec.trust_remote_code}


def data_key(study: Study) -> dict[str, Any]:
    """What the training and validation records are built from."""
    data = study.data
    return {
        "source": data.source,
        "languages": list(data.languages),
        "items_per_language": data.items_per_language,
        "validation_fraction": data.validation_fraction,
        "target_ratio": data.target_ratio,
        "options": data.options,
        "split_seed": data.split_seed,
        "source_language": study.evaluation.source_language,
    }


def train_key(study: Study, run: RunSpec) -> str:
    request = {
        k: v
        for k, v in asdict(run.request).items()
        if k not in NOT_IN_TRAIN_KEY
        and not (k in KEYED_UNLESS_DEFAULT and v == KEYED_UNLESS_DEFAULT[k])
    }
    if run.request.grad_accum > 1:
        request.update(TOKEN_WEIGHTED)
    return digest(
        {
            "unit": TRAIN,
            "version": VERSION[TRAIN],
            "model": model_key(study),
            "data": data_key(study),
            "request": request,
        }
    )


def scored_model_key(study: Study, run: RunSpec | None) -> dict[str, Any]:
    """The model a scoring unit scores: the base, or a trained run (merged or not); scores are
    computed under the study's thread count (CPU reductions depend on it)."""
    scored: dict[str, Any] = {"threads": study.training.threads}
    precision = evaluation_precision(study)
    if precision != FP32:  # only when set: fp32 studies keep the keys they were scored under
        scored["precision"] = precision
    if run is None:
        scored["base"] = model_key(study)
    else:
        scored["run"] = train_key(study, run)
        scored["merged"] = study.evaluation.merge_adapters
    return scored


def evaluation_precision(study: Study) -> str:
    """fp32 or bf16: the study's `evaluation.precision`, `auto` resolved for this machine (a
    study opened with open_study has it pinned already, so its keys do not follow the machine).
    A device map places the model on the GPUs when torch sees any, else on the CPU."""
    from whichlora.models.loading import resolve_device

    spec = study.model
    device = "auto" if spec.device_map else resolve_device(spec.device)
    return resolve_precision(study.evaluation.precision, device)


def evaluate_key(study: Study, run: RunSpec | None, language: str) -> str:
    spec = study.evaluation
    return digest(
        {
            "unit": EVALUATE,
            "version": VERSION[EVALUATE],
            "model": scored_model_key(study, run),
            "language": language,
            "knowledge": spec.knowledge,
            "heldout": spec.heldout,
            "items_per_language": spec.items_per_language,
            "generation_items": spec.generation_items,
            "max_new_tokens": spec.max_new_tokens,
        }
    )


def harness_key(study: Study, run: RunSpec | None, task: str) -> str:
    spec = study.evaluation
    return digest(
        {
            "unit": HARNESS,
            "version": VERSION[HARNESS],
            "model": scored_model_key(study, run),
            "task": task,
            "include_path": spec.harness_include_path,
            "limit": spec.harness_limit,
        }
    )


def atlas_key(study: Study, run: RunSpec | None) -> str:
    """The atlas's texts follow from its spec and the pinned UDHR (data/atlas.py); a count of
    languages also from the study's languages, which come first."""
    from whichlora.data.udhr import UDHR_VERSION

    spec = study.evaluation.atlas
    assert spec is not None
    texts: dict[str, Any] = {**spec.model_dump(mode="json"), "udhr": UDHR_VERSION}
    if isinstance(spec.languages, int):
        texts["anchors"] = atlas_anchors(study)
    return digest(
        {
            "unit": ATLAS,
            "version": VERSION[ATLAS],
            "model": scored_model_key(study, run),
            "texts": texts,
        }
    )


def validate_key(study: Study, run: RunSpec) -> str:
    return digest(
        {
            "unit": VALIDATE,
            "version": VERSION[VALIDATE],
            "model": scored_model_key(study, run),
            "data": data_key(study),
        }
    )


def evaluation_units(study: Study, run: RunSpec | None) -> dict[str, str]:
    """Test-split units of one model (None: the base): stage -> key, one per evaluation language
    of the built-in suite, one per harness task, and the atlas when the study asks for one."""
    units = {f"{EVALUATE}:{lang}": evaluate_key(study, run, lang) for lang in _languages(study)}
    for task in study.evaluation.harness_tasks:
        units[f"{HARNESS}:{task}"] = harness_key(study, run, task)
    if study.evaluation.atlas is not None:  # absent by default: existing keys never change
        units[ATLAS] = atlas_key(study, run)
    return units


def _languages(study: Study) -> list[str]:
    return evaluation_languages(study)


def analysis_key(study: Study, runs: list[RunSpec]) -> str:
    """The analysis reads the evaluated runs' scores and the models' representations."""
    spec = study.analysis
    return digest(
        {
            "unit": "analyze",
            "version": VERSION["analyze"],
            "models": {
                BASE: evaluation_units(study, None),
                **{r.run_id: evaluation_units(study, r) for r in runs},
            },
            "analysis": spec.model_dump(mode="json"),
            "source_language": study.evaluation.source_language,
        }
    )


def planned_units(study: Study, runs: list[RunSpec]) -> dict[tuple[str, str], str]:
    """Every per-model unit the study asks for: (run_id, stage) -> key. Validation units are
    planned for sweep runs only; which runs get test units after a sweep depends on the chosen
    rates (see the runner), here every run is listed."""
    units: dict[tuple[str, str], str] = {}
    for stage, key in evaluation_units(study, None).items():
        units[(BASE, stage)] = key
    for run in runs:
        units[(run.run_id, TRAIN)] = train_key(study, run)
        if run.sweep:
            units[(run.run_id, VALIDATE)] = validate_key(study, run)
        for stage, key in evaluation_units(study, run).items():
            units[(run.run_id, stage)] = key
    return units
