"""A study folder: its resolved config, its store, its planned runs and units, and a lock.

Opening a study for a run compares the unit keys of the study file with what the store holds:
units done for the same key are reused, new ones will be computed, and finished units whose
inputs changed (stale) are redone only with permission (`discard=True`, the CLI's `--yes`),
since their old results are then replaced. Results the study no longer asks for stay in the
store, left out of the analysis and report, until `whichlora gc`. Opened `readonly` (a dry run:
`whichlora plan`), nothing is written: no folder, no database, no lock.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from whichlora.config.examples import study_path
from whichlora.config.study import AnalysisSpec, Study, dump_study, load_study
from whichlora.data.atlas import atlas_anchors
from whichlora.errors import WhichloraError
from whichlora.paths import remove_stale_temp, write_text_atomic
from whichlora.store import DATABASE, LOCK, RESOLVED, Store, selected
from whichlora.store.names import RUNS_DIR
from whichlora.study.keys import (
    TRAIN,
    VALIDATE,
    analysis_key,
    evaluation_units,
    planned_units,
)
from whichlora.study.plan import RunSpec, plan_study

LENGTH_SAMPLE = 256  # training examples encoded up front to check that responses survive


@dataclass
class StudyContext:
    study: Study
    study_dir: Path
    store: Store
    runs: list[RunSpec]
    lock: FileLock | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    keys: dict[tuple[str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.keys:
            self.keys = planned_units(self.study, self.runs)

    def sweep_choices(self) -> dict[str, float]:
        """Per run label whose sweep is finished (every sweep run validated, or failed to
        train), the rate with the lowest mean validation NLL (ties: the lower rate)."""
        sweeps: dict[str, list[RunSpec]] = {}
        for run in self.runs:
            if run.sweep:
                sweeps.setdefault(run.label, []).append(run)
        chosen = {}
        for label, runs in sweeps.items():
            statuses = [
                (self.unit_status(r.run_id, TRAIN), self.unit_status(r.run_id, VALIDATE))
                for r in runs
            ]
            if not all(t == "failed" or v == "done" for t, v in statuses):
                continue
            scores = validation_nll(self.store, runs)
            if scores:
                chosen[label] = best_rate(scores)
        return chosen

    def replan(self) -> list[RunSpec]:
        """With `training.sweep_seeds`: add the runs at the rates the finished sweeps chose
        (keys included); returns the runs added. A sweep that now chooses another rate makes
        those runs' keys change, so they are redone like any stale unit."""
        if self.study.training.sweep_seeds is None:
            return []
        before = {(r.run_id, self.keys.get((r.run_id, TRAIN))) for r in self.runs}
        self.runs = plan_study(self.study, self.sweep_choices())
        self.keys = planned_units(self.study, self.runs)
        return [r for r in self.runs if (r.run_id, self.keys[(r.run_id, TRAIN)]) not in before]

    def run_dir(self, run_id: str) -> Path:
        return self.study_dir / RUNS_DIR / run_id

    def key(self, run_id: str, stage: str) -> str:
        return self.keys[(run_id, stage)]

    def unit_status(self, run_id: str, stage: str) -> str | None:
        """done | failed for the unit's current key, 'stale' when finished with other inputs,
        None when never finished."""
        return self.store.unit_status(run_id, stage, self.keys.get((run_id, stage), ""))

    def test_stages(self) -> list[str]:
        """Test-split units of every model: one per evaluation language, one per harness task."""
        return list(evaluation_units(self.study, None))

    def is_evaluated(self, run_id: str) -> bool:
        return all(self.unit_status(run_id, s) == "done" for s in self.test_stages())

    def analysis_key(self) -> str:
        evaluated = [r for r in self.selected_runs() if self.is_evaluated(r.run_id)]
        return analysis_key(self.study, evaluated)

    def current_runs(self) -> list[RunSpec]:
        """Planned runs whose training is not stale: those the report may show."""
        return [r for r in self.runs if self.unit_status(r.run_id, TRAIN) != "stale"]

    def selected_runs(self) -> list[RunSpec]:
        """Runs whose results count: all, or the best learning rate per technique in a sweep."""
        return selected(self.runs, self.store.get_kv("selected_runs"))

    def data(self) -> tuple[list[Any], Any]:
        """(training records, evaluation set), built once per process."""
        if "train" not in self.cache:
            from whichlora.study.datasets import evaluation_set, training_data

            train, validation = training_data(self.study)
            self.cache["train"] = train
            self.cache["validation"] = validation
            self.cache["evalset"] = evaluation_set(self.study, validation)
        return self.cache["train"], self.cache["evalset"]

    def validation_records(self) -> list[Any]:
        """The validation split's records when the runs log a learning curve, else none."""
        if not self.study.training.validate_every:
            return []
        if "validation" not in self.cache:
            from whichlora.study.datasets import training_data

            self.cache["validation"] = training_data(self.study)[1]
        return list(self.cache["validation"])

    def atlas_texts(self) -> list[Any]:
        """The transfer atlas's articles (evaluation.atlas), read once per process."""
        if "atlas" not in self.cache:
            from whichlora.data.atlas import atlas_texts

            spec = self.study.evaluation.atlas
            anchors = atlas_anchors(self.study)
            self.cache["atlas"] = [] if spec is None else atlas_texts(spec, anchors)
        return self.cache["atlas"]

    def close(self) -> None:
        self.store.close()
        if self.lock is not None:
            self.lock.release()


def default_study_dir(study: Study, study_file: Path) -> Path:
    return Path.cwd() / "studies" / study.name


def _read_target(target: Path, out: Path | None) -> tuple[Study, Path, Path]:
    """(study, study folder, the file it was read from)."""
    target = study_path(target)  # a bundled study's name reads its file
    if target.is_dir():
        resolved = target / RESOLVED
        if not resolved.is_file():
            raise WhichloraError(
                f"Folder {target} is not a study folder (no {RESOLVED}). Fix: pass the study YAML "
                "file, or a folder made by `whichlora run`."
            )
        return load_study(resolved), target, resolved
    study = load_study(target)
    return study, (out or default_study_dir(study, target)), target


# ------------------------------------------------------------------------------ preflight
def _with_fix(message: str, fix: str) -> str:
    message = message.rstrip().rstrip(".")
    return f"{message}." if "fix" in message.lower() else f"{message}. Fix: {fix}"


def _check_model(study: Study, where: Path) -> Any:
    from whichlora.models.loading import (
        check_weights,
        load_config,
        resolve_device,
        resolve_model_path,
    )

    spec = study.model
    try:
        config = load_config(spec.id, spec.trust_remote_code)
        check_weights(resolve_model_path(spec.id), spec.allow_pickle)
        if spec.device_map is None:
            resolve_device(spec.device)
    except WhichloraError as exc:
        raise WhichloraError(f"Study file {where}, key 'model': {exc}") from None
    return config


def _check_executor(study: Study, where: Path) -> None:
    if study.executor.kind == "ray" and importlib.util.find_spec("ray") is None:
        raise WhichloraError(
            f"Study file {where}, key 'executor.kind': 'ray' needs Ray, which is not installed. "
            "Fix: pip install 'whichlora[ray]' (or `pip install ray`), or use executor: "
            "{kind: local}."
        )


def _check_budgets(study: Study, runs: list[RunSpec], config: Any, where: Path) -> None:
    """Resolve every run's adapter settings on the model's config (meta device: no weights), so
    an impossible rank or a bad technique option fails now, not hours into the study. Every
    technique that cannot be planned is named in the one message, so a study over many
    techniques is fixed in one pass."""
    from whichlora.techniques.budget import settings_for_request
    from whichlora.techniques.registry import get_technique

    checked: set[str] = set()
    problems: list[str] = []  # every technique's, so one preflight names all that need a fix
    for run in runs:
        request = run.request
        fields = (
            request.technique,
            request.rank,
            request.trainable_params,
            request.fraction,
            request.alpha,
            request.dropout,
            request.target_modules,
            request.options,
            request.steps,
        )
        key = repr(fields)
        if key in checked:
            continue
        checked.add(key)
        technique = get_technique(request.technique)
        try:
            settings, _ = settings_for_request(config, technique, request)
            _check_optimizer(config, technique, settings, request)
        except WhichloraError as exc:
            problems.append(f"technique '{run.label}': {exc}")
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(
                f"technique '{run.label}': its adapter cannot be built with "
                f"options {request.options} and {request.steps} training steps ({exc}). Fix: "
                "correct the technique's options (see `whichlora techniques`) or training.steps."
            )
    if len(problems) == 1:
        raise WhichloraError(f"Study file {where}, {problems[0]}")
    if problems:
        listed = " ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise WhichloraError(
            f"Study file {where}: {len(problems)} techniques cannot be planned: {listed}"
        )


def _check_optimizer(config: Any, technique: Any, settings: Any, request: Any) -> None:
    """A technique with its own optimizer (LoRA+) reads its options only there: build it on the
    meta-device model so a bad option value fails now (no weights, no memory)."""
    if technique.make_optimizer is None:
        return
    from whichlora.techniques.budget import meta_peft_model

    model = meta_peft_model(config, technique, settings)
    technique.make_optimizer(model, request.learning_rate, request.weight_decay, settings.options)


def _check_data(study: Study, where: Path) -> dict[str, Any]:
    """Load every data source the study names (cheap next to training), checking each row."""
    from whichlora.data.parallel import load_parallel
    from whichlora.study.datasets import evaluation_languages, evaluation_set, training_data

    try:
        train, validation = training_data(study)
    except WhichloraError as exc:
        raise WhichloraError(
            _with_fix(
                f"Study file {where}, key 'data' (source {study.data.source}): {exc}",
                "correct the data it names, or the study's data settings.",
            )
        ) from None
    try:
        evalset = evaluation_set(study, validation)
    except WhichloraError as exc:
        raise WhichloraError(
            _with_fix(
                f"Study file {where}, key 'evaluation': {exc}",
                "correct the evaluation settings or the files they name.",
            )
        ) from None
    atlas = _check_atlas(study, where)
    spec = study.analysis
    try:
        load_parallel(spec.parallel, evaluation_languages(study), spec.sentences_per_language)
    except WhichloraError as exc:
        raise WhichloraError(
            _with_fix(
                f"Study file {where}, key 'analysis.parallel' ({spec.parallel}): {exc}",
                "set analysis.parallel to builtin:sentences or list other evaluation languages.",
            )
        ) from None
    cache: dict[str, Any] = {"train": train, "validation": validation, "evalset": evalset}
    if atlas is not None:
        cache["atlas"] = atlas
    return cache


def _check_atlas(study: Study, where: Path) -> list[Any] | None:
    """The atlas's languages and articles exist (and the UDHR is fetched), before anything runs."""
    from whichlora.data.atlas import atlas_texts

    if study.evaluation.atlas is None:
        return None
    try:
        return atlas_texts(study.evaluation.atlas, atlas_anchors(study))
    except WhichloraError as exc:
        raise WhichloraError(f"Study file {where}, key 'evaluation.atlas': {exc}") from None


def _check_lengths(study: Study, train: list[Any], where: Path) -> None:
    """Training needs examples whose response survives truncation to training.max_length."""
    from whichlora.models.loading import load_tokenizer
    from whichlora.train.prompting import encode_records

    try:
        tokenizer = load_tokenizer(study.model.id, study.model.trust_remote_code)
    except WhichloraError as exc:
        raise WhichloraError(f"Study file {where}, key 'model': {exc}") from None
    spec = study.training
    for sample in (train[:LENGTH_SAMPLE], train):  # the whole set only when the sample is empty
        if encode_records(tokenizer, sample, spec.max_length, spec.response_only_loss):
            return
    raise WhichloraError(
        f"Study file {where}, key 'training.max_length': no training example has a response left "
        f"after truncation to {spec.max_length} tokens. Fix: raise training.max_length or use "
        "shorter examples."
    )


def _check_run_ids(runs: list[RunSpec], where: Path) -> None:
    ids = [run.run_id for run in runs]
    dupes = sorted({run_id for run_id in ids if ids.count(run_id) > 1})
    if dupes:
        raise WhichloraError(
            f"Study file {where}: several runs would be named {', '.join(dupes)} and share one "
            "folder (learning rates that round to the same tag, or labels that clash). Fix: use "
            "learning rates that differ in their first three significant digits, or distinct "
            "technique labels."
        )


def study_metrics(study: Study) -> tuple[list[str], list[str]]:
    """(the metrics the study computes per example, the harness prefixes it computes under).

    Read from the code that writes them (the suite's and the atlas's metric tuples), for the
    parts of the evaluation the study turns on. lm-eval names its metrics only when a task runs,
    so a harness task gives a prefix: `harness:<task>:` and, for a group, `harness:<task>_`."""
    from whichlora.evaluate.atlas import ATLAS_METRICS
    from whichlora.evaluate.harness import PREFIX
    from whichlora.evaluate.suite import suite_metrics

    spec = study.evaluation
    names = suite_metrics(
        knowledge=bool(spec.knowledge),
        heldout=bool(spec.heldout),
        generation=bool(spec.heldout) and spec.generation_items > 0,
    )
    if spec.atlas is not None:
        names += ATLAS_METRICS
    prefixes = [f"{PREFIX}:{task}{end}" for task in spec.harness_tasks for end in (":", "_")]
    return names, prefixes


def _where_metric_comes_from(metric: str) -> str:
    """The setting that makes the study compute a metric it could compute but does not."""
    from whichlora.evaluate.atlas import ATLAS_METRICS
    from whichlora.evaluate.harness import PREFIX
    from whichlora.evaluate.suite import GENERATION_METRICS, HELDOUT_METRICS, KNOWLEDGE_METRICS

    if metric in KNOWLEDGE_METRICS:
        return "set evaluation.knowledge (e.g. builtin:knowledge) to compute it"
    if metric in HELDOUT_METRICS:
        return "set evaluation.heldout (e.g. builtin:heldout) to compute it"
    if metric in GENERATION_METRICS:
        return "set evaluation.heldout and evaluation.generation_items > 0 to compute it"
    if metric in ATLAS_METRICS:
        return "turn on evaluation.atlas (e.g. {languages: 30}) to compute it"
    if metric.startswith(f"{PREFIX}:"):
        task = metric.split(":")[1]
        return f"add {task} to evaluation.harness_tasks to compute it"
    return ""


def _check_analysis(study: Study, runs: list[RunSpec], where: Path) -> None:
    """The analysis can answer what it is asked: its baseline is one of the study's techniques
    and its primary metric is one the study computes (and can judge: it has a margin). Both
    problems are named in one message."""
    from whichlora.evaluate.metrics import default_margin
    from whichlora.store import RESOLVED

    spec = study.analysis
    problems: list[str] = []
    labels = list(dict.fromkeys(run.label for run in runs))
    if spec.baseline not in labels:
        problems.append(
            f"key 'analysis.baseline': {spec.baseline!r} is not a technique of this study, so "
            "nothing would be compared with it (the report would only say there is nothing to "
            f"decide). Fix: set analysis.baseline to one of the technique labels "
            f"({', '.join(labels)}), or add {spec.baseline!r} to techniques"
        )
    metric = spec.primary_metric
    names, prefixes = study_metrics(study)
    computed = metric in names or any(metric.startswith(p) for p in prefixes)
    # The default (nll) of a study that computes no NLL falls back to the first metric it does
    # compute, as documented; a metric the user named must be computed. A study folder's
    # resolved.yaml spells every default, so it counts as not named.
    named = "primary_metric" in spec.model_fields_set and where.name != RESOLVED
    default = AnalysisSpec.model_fields["primary_metric"].default
    if not computed and (named or metric != default):
        listed = ", ".join(names) or "none of the suite's metrics"
        if prefixes:
            listed += ", and harness:<task>:<metric> for " + ", ".join(
                study.evaluation.harness_tasks
            )
        hint = _where_metric_comes_from(metric)
        problems.append(
            f"key 'analysis.primary_metric': the study does not compute {metric!r}, so the "
            f"decision table could not lead with it. It computes {listed}. Fix: set "
            f"analysis.primary_metric to one of them" + (f", or {hint}" if hint else "")
        )
    elif computed and metric not in spec.margins and default_margin(metric) is None:
        problems.append(
            f"key 'analysis.primary_metric': {metric!r} has no margin of practical equivalence, "
            "so it would get no verdict and the decision table could not lead with it. Fix: set "
            f"analysis.margins: {{{metric!r}: VALUE}} in the metric's own units"
        )
    if len(problems) == 1:
        raise WhichloraError(f"Study file {where}, {problems[0]}.")
    if problems:
        listed = " ".join(f"({i}) {p}." for i, p in enumerate(problems, 1))
        raise WhichloraError(
            f"Study file {where}: {len(problems)} analysis settings cannot give an answer: {listed}"
        )


def preflight(study: Study, runs: list[RunSpec], where: Path) -> dict[str, Any]:
    """Check everything that can be checked without training, before anything is written.

    Returns the loaded data so the runner does not read it twice.
    """
    _check_run_ids(runs, where)
    _check_analysis(study, runs, where)
    _check_executor(study, where)
    config = _check_model(study, where)
    _check_budgets(study, runs, config, where)
    cache = _check_data(study, where)
    _check_lengths(study, cache["train"], where)
    return cache


# ------------------------------------------------------------------------------ open
def _held_study(study_dir: Path) -> dict[str, Any] | None:
    """The study folder's resolved.yaml as a dict; None for a new folder (or an unreadable
    file: then the folder is pinned as a new one)."""
    resolved = study_dir / RESOLVED
    if not resolved.is_file():
        return None
    try:
        held = yaml.safe_load(resolved.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    return held if isinstance(held, dict) else None


def _held_setting(held: dict[str, Any], section: str, default: str) -> str:
    value = held.get(section)
    return str((value if isinstance(value, dict) else {}).get("precision", default))


def pin_precision(study: Study, study_dir: Path) -> Study:
    """`precision: auto` made concrete once per study folder, for evaluation and training alike:
    what its resolved.yaml holds, else what this machine runs fast. Pinned, a study resumed or
    grown on another machine keeps its keys, scores everything (base and runs alike) in one
    precision and trains its new runs as it trained the first ones.

    Folders from before a setting keep what they ran in: fp32 scores (before
    `evaluation.precision`), fp32 training (before `training.precision`), and a training
    `auto` written before it meant bf16 on CPUs with AMX/AVX512-BF16 stays what it was then."""
    from whichlora.models.precision import AUTO, FP32, resolve_precision
    from whichlora.study.keys import evaluation_precision
    from whichlora.train.precision import DEFAULT

    held = _held_study(study_dir)
    updates: dict[str, Any] = {}
    if study.evaluation.precision == AUTO:
        pinned = _held_setting(held, "evaluation", FP32) if held is not None else AUTO
        if pinned == AUTO:
            pinned = evaluation_precision(study)
        updates["evaluation"] = study.evaluation.model_copy(update={"precision": pinned})
    if study.training.precision == AUTO:
        where = (study.model.device, study.executor.gpus_per_run)
        pinned = _held_setting(held, "training", DEFAULT) if held is not None else AUTO
        if pinned == AUTO:  # a new folder: this machine; an old auto: fp32 on CPU, as it was
            pinned = resolve_precision(
                AUTO,
                *where,
                cpu_bf16=None if held is None else False,
                model_dtype=study.model.dtype,
            )
        updates["training"] = study.training.model_copy(update={"precision": pinned})
    return study.model_copy(update=updates) if updates else study


def _prepare_dir(study_dir: Path) -> None:
    if study_dir.exists() and not study_dir.is_dir():
        raise WhichloraError(
            f"Study folder {study_dir} is a file, not a folder. Fix: give --out a folder path "
            "(new or made by `whichlora run`)."
        )
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WhichloraError(
            f"Study folder {study_dir} cannot be created ({exc.strerror}). Fix: give --out a "
            "folder you may write to, whose parents are folders."
        ) from None


def _acquire(study_dir: Path) -> FileLock:
    lock = FileLock(str(study_dir / LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise WhichloraError(
            f"Study folder {study_dir} is in use by another whichlora process. Fix: wait for "
            "it to finish (or stop it), then run again; a killed run releases the lock."
        ) from None
    return lock


def stale_units(ctx: StudyContext) -> list[tuple[str, str]]:
    """Planned units finished (done) with other inputs than the study's: redoing them replaces
    finished results."""
    held = ctx.store.units()
    return sorted(
        unit
        for unit, key in ctx.keys.items()
        if unit in held and held[unit][0] == "done" and held[unit][1] != key
    )


def _refuse_discards(ctx: StudyContext, where: Path) -> None:
    stale = stale_units(ctx)
    if not stale:
        return
    shown = ", ".join(f"{stage} of {run_id}" for run_id, stage in stale[:8])
    more = f" and {len(stale) - 8} more" if len(stale) > 8 else ""
    raise WhichloraError(
        f"Study folder {ctx.study_dir} holds finished results that study file {where} would "
        f"discard: {len(stale)} unit(s) whose inputs changed ({shown}{more}); `whichlora plan` "
        "lists them as stale. Fix: run again with --yes to redo them (their old results are "
        f"replaced; old adapters are kept under {RUNS_DIR}/.stale/ until `whichlora gc`), or "
        "give a new --out folder to keep the old results beside the new ones."
    )


def _open_readonly(
    study: Study, study_dir: Path, runs: list[RunSpec], where: Path, check: bool
) -> StudyContext:
    cache = preflight(study, runs, where) if check else {}
    database = study_dir / DATABASE
    store = Store(database, readonly=True) if database.is_file() else Store.empty()
    ctx = StudyContext(study=study, study_dir=study_dir, store=store, runs=runs, cache=cache)
    ctx.replan()
    return ctx


def open_study(
    target: str | Path,
    out: str | Path | None = None,
    *,
    locked: bool = True,
    create: bool = True,
    check: bool = True,
    readonly: bool = False,
    discard: bool = False,
) -> StudyContext:
    """Open (and with `create`, initialise) the study folder for a study file or folder.

    With `create` and `check`, the whole study is checked first (model, budgets, data): invalid
    input fails with one message and leaves nothing behind (`check=False` is for commands that only
    read the store, such as the report). With `locked`, a second process on the same folder is
    refused instead of racing this one, and debris of a killed process is swept away. Finished
    units the study would redo with other inputs are refused unless `discard`. `readonly` writes
    nothing at all (the store, if any, is opened read-only).
    """
    study, study_dir, where = _read_target(Path(target), Path(out) if out else None)
    study_dir = study_dir.resolve()
    study = pin_precision(study, study_dir)
    if not create and not (study_dir / DATABASE).is_file():
        raise WhichloraError(
            f"Study folder {study_dir} has no results yet. Fix: run `whichlora run` (or `whichlora "
            "train`) on the study first."
        )
    runs = plan_study(study)
    if readonly:
        return _open_readonly(study, study_dir, runs, where, check and create)
    # A study folder already: lock it first, so a busy one is refused at once (no checking).
    existing = (study_dir / RESOLVED).is_file()
    lock = _acquire(study_dir) if locked and existing else None
    resolved_text = dump_study(study)
    resolved_path = study_dir / RESOLVED
    store: Store | None = None
    try:
        if existing and (study_dir / DATABASE).is_file() and not discard:
            with Store(study_dir / DATABASE, readonly=True) as held:
                probe = StudyContext(study=study, study_dir=study_dir, store=held, runs=runs)
                _refuse_discards(probe, where)
        cache = preflight(study, runs, where) if create and check else {}
        _prepare_dir(study_dir)
        if locked and lock is None:
            lock = _acquire(study_dir)
        if lock is not None:
            remove_stale_temp(study_dir)
        store = Store(study_dir / DATABASE)
        ctx = StudyContext(
            study=study, study_dir=study_dir, store=store, runs=runs, lock=lock, cache=cache
        )
        ctx.replan()
        if not discard:  # again under the lock: another process may have finished units since
            _refuse_discards(ctx, where)
        if not resolved_path.is_file() or resolved_path.read_text("utf-8") != resolved_text:
            write_text_atomic(resolved_path, resolved_text)
    except BaseException:
        if store is not None:
            store.close()
        if lock is not None:
            lock.release()
        raise
    register_runs(store, ctx.runs)
    return ctx


def register_runs(store: Store, runs: list[RunSpec]) -> None:
    for run in runs:
        store.add_run(
            run.run_id,
            run.technique,
            run.label,
            run.seed,
            run.learning_rate,
            run.sweep,
            run.request.__dict__,
        )


def best_rate(scores: dict[float, float]) -> float:
    """The rate with the lowest validation NLL; ties go to the lower rate."""
    return min(scores, key=lambda lr: (scores[lr], lr))


def validation_nll(store: Store, runs: list[RunSpec]) -> dict[float, float]:
    """Mean validation NLL per learning rate over the given runs that have one."""
    by_rate: dict[float, list[float]] = {}
    for run in runs:
        for (value,) in store.query(
            "SELECT AVG(value) FROM examples WHERE run_id=? AND split='validation' "
            "AND metric='nll'",
            (run.run_id,),
        ):
            if value is not None:
                by_rate.setdefault(run.learning_rate, []).append(value)
    return {lr: sum(v) / len(v) for lr, v in by_rate.items()}
