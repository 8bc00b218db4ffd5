"""The study file: one YAML validated into typed objects, every default written back.

Unknown keys, wrong types and impossible values are rejected with the file, the key and a fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from whichlora.config.examples import bundled_studies, study_path
from whichlora.errors import WhichloraError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"
MAX_SEED = 2**32 - 1  # numpy's seed range; torch and random accept it too


def _distinct_rates(rates: list[float] | None) -> list[float] | None:
    if rates is not None and (not rates or len(set(rates)) != len(rates)):
        raise ValueError("learning_rates must be a non-empty list of distinct rates")
    return rates


def _check_seeds(seeds: list[int]) -> list[int]:
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be a non-empty list of distinct integers")
    bad = [seed for seed in seeds if not 0 <= seed <= MAX_SEED]
    if bad:
        raise ValueError(f"seeds {bad} are outside 0..{MAX_SEED}; use such whole numbers")
    return seeds


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(Strict):
    id: str = Field("builtin:smollm2-135m", description="builtin:NAME, a local folder or a hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype the base weights are loaded in (training and scoring)"
    )
    trust_remote_code: bool = Field(False, description="run model code from the hub (off: safer)")
    allow_pickle: bool = Field(False, description="allow non-safetensors weights (can run code)")
    device: str = Field("auto", description="auto (a GPU when torch sees one), cpu, cuda, cuda:1")
    device_map: str | None = Field(
        None, description="'auto' spreads one run over every visible GPU (accelerate)"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not re.match(DEVICE_PATTERN, device):
            raise ValueError(f"device '{device}' is not one of auto, cpu, mps, cuda, cuda:N")
        return device


class BudgetSpec(Strict):
    """Give exactly one of rank, trainable_params or fraction; the real count is always recorded."""

    rank: Annotated[int, Field(ge=1)] | None = Field(
        None, description="every technique's rank (8 when no size is given)"
    )
    trainable_params: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="solve each technique's capacity knob for the nearest trainable count; a "
        "technique that cannot come within 10% is refused before anything trains",
    )
    fraction: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="as trainable_params, as a fraction of the base model's parameters"
    )
    alpha: Annotated[float, Field(gt=0)] | None = Field(
        None, description="LoRA scaling alpha; default: 2 x rank"
    )
    dropout: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.05, description="dropout on the adapter's input"
    )
    target_modules: str | list[str] = Field(
        "all-linear",
        description="'all-linear', a list of module names (q_proj, ...), or, as in peft, one "
        "string that is a regex over full module names",
    )

    @model_validator(mode="after")
    def _one_size(self) -> BudgetSpec:
        given = [
            k for k in ("rank", "trainable_params", "fraction") if getattr(self, k) is not None
        ]
        if len(given) > 1:
            raise ValueError(
                f"give only one of rank, trainable_params, fraction (got {', '.join(given)})"
            )
        return self


class TechniqueSpec(Strict):
    name: str = Field(description="the technique, as `whichlora techniques` names it")
    label: str | None = Field(None, description="run label; defaults to the technique name")
    rank: Annotated[int, Field(ge=1)] | None = Field(
        None, description="this technique's rank, instead of the budget's size"
    )
    trainable_params: Annotated[int, Field(ge=1)] | None = Field(
        None, description="this technique's trainable count, instead of the budget's size"
    )
    fraction: Annotated[float, Field(gt=0, lt=1)] | None = Field(
        None, description="this technique's fraction of the base, instead of the budget's size"
    )
    alpha: Annotated[float, Field(gt=0)] | None = Field(None, description="instead of budget.alpha")
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None, description="instead of budget.dropout"
    )
    target_modules: str | list[str] | None = Field(
        None, description="instead of budget.target_modules"
    )
    learning_rates: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        None,
        description="this technique's rates (one run per rate, the best kept on validation NLL), "
        "instead of training.learning_rate(s)",
    )
    seeds: list[int] | None = Field(
        None, description="this technique's seeds, instead of training.seeds"
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="the technique's own typed options (`whichlora techniques --details NAME`)",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        from whichlora.techniques import REGISTRY

        if name not in REGISTRY:
            raise ValueError(f"unknown technique '{name}'; known: {', '.join(REGISTRY)}")
        return name

    @field_validator("label")
    @classmethod
    def _safe_label(cls, label: str | None) -> str | None:
        if label is not None and not re.match(NAME_PATTERN, label):
            raise ValueError("label must be letters, digits, '.', '_' or '-' (no path separators)")
        return label

    @field_validator("learning_rates")
    @classmethod
    def _rates(cls, rates: list[float] | None) -> list[float] | None:
        return _distinct_rates(rates)

    @field_validator("seeds")
    @classmethod
    def _own_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        return None if seeds is None else _check_seeds(seeds)

    @model_validator(mode="after")
    def _options_known(self) -> TechniqueSpec:
        from whichlora.techniques import REGISTRY

        try:  # the technique's typed options: unknown names, wrong types, out-of-range values
            REGISTRY[self.name].parse_options(self.options)
        except WhichloraError as exc:
            raise ValueError(str(exc)) from None
        given = [
            k for k in ("rank", "trainable_params", "fraction") if getattr(self, k) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"give only one of rank, trainable_params, fraction (got {given})")
        return self

    @property
    def run_label(self) -> str:
        return self.label or self.name


class DataSpec(Strict):
    source: str = Field("builtin:instructions", description="builtin:NAME, a local file or hub:ID")
    languages: list[str] = Field(
        default_factory=lambda: ["en", "de", "fr", "es", "ru", "zh"],
        description="training (seen) languages",
    )
    items_per_language: Annotated[int, Field(ge=1)] | None = Field(
        None, description="items sampled per training language (default: all)"
    )
    validation_fraction: Annotated[float, Field(ge=0, lt=0.5)] = Field(
        0.1, description="share of the items held out for validation NLL (picks a sweep's rate)"
    )
    target_ratio: dict[str, Annotated[float, Field(gt=0, le=1)]] | None = Field(
        None, description="add target-language items, e.g. {sw: 0.01} = 1% of the source count"
    )
    options: dict[str, Any] = Field(default_factory=dict, description="source-specific settings")
    split_seed: Annotated[int, Field(ge=0)] = Field(
        0,
        description="seed of the item sampling and train/validation split; its own seed, so "
        "adding training seeds never changes the data of finished runs",
    )

    @property
    def trained_languages(self) -> list[str]:
        """Every language the adapters see in training: the listed ones plus those added
        through target_ratio (these are 'seen' in the report, not unseen)."""
        return list(dict.fromkeys([*self.languages, *(self.target_ratio or {})]))


class TrainingSpec(Strict):
    steps: Annotated[int, Field(ge=1)] = Field(30, description="optimizer steps per run")
    batch_size: Annotated[int, Field(ge=1)] = Field(
        8, description="examples per forward, per process"
    )
    grad_accum: Annotated[int, Field(ge=1)] = Field(
        1, description="forwards accumulated into one optimizer step"
    )
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = Field(
        2e-4, description="peak AdamW learning rate (linear warmup, then linear decay to 0)"
    )
    learning_rates: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        None, description="sweep: best per technique on the validation split"
    )
    sweep_seeds: list[int] | None = Field(
        None,
        description="with learning_rates: the seeds the sweep runs on; a technique's other seeds "
        "run only at the rate its sweep chose on validation NLL, once the sweep is validated "
        "(default: every seed runs every rate)",
    )
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.1, description="share of the steps spent warming the learning rate up"
    )
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.0, description="AdamW weight decay")
    max_grad_norm: Annotated[float, Field(gt=0)] = Field(
        1.0, description="gradients are clipped to this norm"
    )
    max_length: Annotated[int, Field(ge=16)] = Field(
        256, description="tokens per example (prompt and response); longer ones are cut"
    )
    response_only_loss: bool = Field(
        True, description="loss on the response tokens only (false: on the prompt too)"
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0],
        description="one run per seed for every technique (techniques[].seeds overrides)",
    )
    threads: Annotated[int, Field(ge=1)] | None = Field(
        None, description="torch CPU threads per run (default: torch's choice; not in any key)"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="compute dtype of the forward (autocast; adapter weights and optimizer "
        "state stay float32, fp16 scales the loss); 'auto': bf16 where its matmuls are fast (a "
        "CUDA GPU that has it, a CPU with AMX/AVX512-BF16, attention kept float32 there), else "
        "fp32; pinned in resolved.yaml when the study opens",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute activations in backward: much less memory for long sequences, "
        "about a third more compute, same results (not in any key)",
    )
    packing: bool = Field(
        False,
        description="pack whole examples side by side into rows as wide as the longest one "
        "(batch_size rows a step; positions restart and attention stays inside each example): "
        "almost no padding and more examples per step. Changes which examples share a step, "
        "so runs are keyed by it",
    )
    validate_every: Annotated[int, Field(ge=1)] | None = Field(
        None,
        description="every N optimizer steps and after the last, log the mean response NLL of "
        "the validation examples: the learning curve the report draws (shows whether runs are "
        "long enough). Costs a forward over the validation split each time; not in any key",
    )
    sparse_dropout: bool = Field(
        False,
        description="draw the adapters' dropout masks from the gaps between dropped positions: "
        "the same Bernoulli(p) masks in distribution from ~p as many random numbers (a third "
        "of a small model's CPU step is dropout otherwise). Other masks for the same seed, "
        "so runs are keyed by it",
    )
    compile: bool | Literal["auto"] = Field(
        "auto",
        description="torch.compile each decoder block (compiled code cached under "
        "WHICHLORA_CACHE); 'auto': only when a run's first steps show the rest is long enough "
        "to pay the compile time back (never for the quickstart). Same results within bf16 "
        "rounding (not in any key)",
    )
    processes: Annotated[int, Field(ge=1)] = Field(
        1,
        description="train each run as N data-parallel processes on this machine (accelerate "
        "DDP: one per GPU, or gloo on CPU); global batch = batch_size x grad_accum x processes",
    )
    stall_timeout: Annotated[float, Field(gt=0)] | None = Field(
        1800,
        description="with processes > 1: seconds the run's processes may go without progress "
        "(a process started, a step finished) before the run is failed as stalled (a deadlock, "
        "or a process waiting on one that died); the next `whichlora run` retries it. Raise it "
        "if loading the model or one step takes longer; null: wait forever. Never changes "
        "results",
    )
    checkpoint_every: int | Literal["auto"] | None = Field(
        "auto",
        description="save a resumable checkpoint every N optimizer steps; 'auto': every ~5 "
        "minutes once a run is estimated to take over 10; null: never. Never changes results",
    )

    @field_validator("checkpoint_every", mode="before")
    @classmethod
    def _checkpoint_every(cls, value: Any) -> Any:
        if (
            value is None
            or value == "auto"
            or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
        ):
            return value
        raise ValueError(
            f"checkpoint_every must be a whole number of steps >= 1, 'auto' or null, not {value!r}"
        )

    report_to: list[Literal["tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="log every step (loss, lr, grad norm, tokens/s) to TensorBoard "
        "(<study>/tensorboard, pip install 'whichlora[track]') and/or W&B (offline unless "
        "WANDB_MODE or WANDB_API_KEY is set; pip install wandb)",
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        return _check_seeds(seeds)

    @field_validator("sweep_seeds")
    @classmethod
    def _sweep_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        return None if seeds is None else _check_seeds(seeds)

    @field_validator("learning_rates")
    @classmethod
    def _rates(cls, rates: list[float] | None) -> list[float] | None:
        return _distinct_rates(rates)

    @field_validator("report_to")
    @classmethod
    def _trackers(cls, names: list[str]) -> list[str]:
        if len(set(names)) != len(names):
            raise ValueError("report_to must name each tracker once")
        return names


ATLAS_ARTICLES = 30  # the UDHR's articles (data/udhr.py ARTICLES; config sits below data)


class AtlasSpec(Strict):
    """The transfer atlas: language-modelling NLL of the UDHR in hundreds of languages."""

    source: Literal["udhr"] = Field("udhr", description="parallel text scored (udhr only)")
    languages: Literal["all"] | Annotated[int, Field(ge=1)] | list[str] = Field(
        "all",
        description="'all' (every complete UDHR translation, 436), N (the study's own "
        "languages first, then a fixed pseudo-random sample), or a list of codes",
    )
    articles: int = Field(3, description="articles 1..K of the declaration, per language")

    @field_validator("articles")
    @classmethod
    def _articles(cls, articles: int) -> int:
        if not 1 <= articles <= ATLAS_ARTICLES:
            raise ValueError(
                f"articles must be between 1 and {ATLAS_ARTICLES} (the UDHR has "
                f"{ATLAS_ARTICLES} articles), not {articles}"
            )
        return articles

    @field_validator("languages")
    @classmethod
    def _languages(cls, languages: Any) -> Any:
        if isinstance(languages, list) and (not languages or len(set(languages)) != len(languages)):
            raise ValueError("languages must be 'all', a count, or a non-empty list of codes")
        return languages


class EvaluationSpec(Strict):
    languages: list[str] | None = Field(None, description="default: every bundled language")
    source_language: str = Field(
        "en", description="the language whose knowledge retention is judged"
    )
    knowledge: str | None = Field(
        "builtin:knowledge", description="multiple-choice knowledge set scored (null: none)"
    )
    heldout: str | None = Field(
        "builtin:heldout",
        description="held-out instruction pairs: response NLL and generations (null: none)",
    )
    items_per_language: Annotated[int, Field(ge=1)] | None = Field(
        None, description="items scored per language and set (default: all)"
    )
    generation_items: Annotated[int, Field(ge=0)] = Field(
        10, description="held-out items per language answered by generation (chrF, language)"
    )
    max_new_tokens: Annotated[int, Field(ge=1)] = Field(
        48, description="tokens generated per answer"
    )
    batch_size: Annotated[int, Field(ge=1)] = Field(
        16, description="examples per scoring forward (not in any key)"
    )
    merge_adapters: bool = Field(
        True,
        description="score and embed each adapter merged into a fresh base: same function, "
        "base speed (unmerged DoRA and VeRA rebuild weights at every forward)",
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "fp32",
        description="what the base and every run are scored and embedded in: fp32 (the weights "
        "as loaded), bf16, or auto (bf16 on CUDA and on CPUs with AMX/AVX512-BF16, else fp32; "
        "pinned in resolved.yaml when the study opens)",
    )
    harness_tasks: list[str] = Field(
        default_factory=list,
        description="lm-evaluation-harness tasks (pip install whichlora[harness])",
    )
    harness_include_path: str | None = Field(
        None, description="folder of your own lm-eval YAML tasks"
    )
    harness_limit: Annotated[int, Field(ge=1)] | None = Field(
        None, description="examples per harness task (lm-eval's --limit; default: all)"
    )
    atlas: AtlasSpec | None = Field(
        None,
        description="transfer atlas over UDHR languages, e.g. {languages: 100, articles: 1}; "
        "off by default",
    )


class AnalysisSpec(Strict):
    parallel: str = Field(
        "builtin:sentences", description="parallel text: builtin:sentences or udhr"
    )
    sentences_per_language: Annotated[int, Field(ge=4)] = Field(
        60, description="parallel sentences embedded per language"
    )
    pooling: list[Literal["mean", "last"]] = Field(
        default_factory=lambda: ["mean", "last"],
        description="how a sentence's hidden states are pooled: mean over tokens, last token",
    )
    baseline: Annotated[
        str, Field(description="the technique (run label) every other one is judged against")
    ] = "lora"
    alpha: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.05, description="error rate per (family, metric), Holm-corrected over the techniques"
    )
    bootstrap_resamples: Annotated[int, Field(ge=100)] = Field(
        2000, description="resamples behind the report's confidence intervals"
    )
    margins: dict[str, Annotated[float, Field(gt=0)]] = Field(
        default_factory=dict,
        description="margin of practical equivalence per metric, in its own units, e.g. "
        "{nll: 0.02, mc_acc: 0.01, chrf: 1.0}; unset metrics use the defaults in docs/verdicts.md; "
        "cka (default 0.01) is the margin of the per-layer alike test (docs/alike.md)",
    )
    primary_metric: str = Field(
        "nll",
        description="the metric the report's decision table shows for every family; one the "
        "study computes (nll, mc_acc, mc_acc_norm, chrf, fidelity, atlas_nll_token, "
        "atlas_nll_byte, harness:<task>:<metric>), or the study is refused before it runs",
    )


class ExecutorSpec(Strict):
    kind: Literal["local", "ray"] = Field(
        "local",
        description="local: one unit after another on this machine; ray: units as Ray tasks",
    )
    address: str | None = Field(None, description="Ray address; None starts a local Ray")
    cpus_per_run: Annotated[float, Field(gt=0)] = Field(1, description="CPUs per Ray task")
    gpus_per_run: Annotated[float, Field(ge=0)] | None = Field(
        None,
        description="GPUs per Ray task; required when the cluster has GPUs (0 with model.device: "
        "cpu to train on CPUs on purpose)",
    )
    max_retries: Annotated[int, Field(ge=0)] = Field(
        2,
        description="Ray retries of a task whose worker died (killed for memory, node lost); "
        "then the unit is recorded as failed and the study goes on",
    )


class Study(Strict):
    name: str = Field("study", description="names the study folder (./studies/NAME)")
    model: ModelSpec = Field(
        default_factory=ModelSpec,
        description="the base model: its id alone (model: builtin:smollm2-135m) or these keys",
    )
    techniques: list[TechniqueSpec] = Field(
        description="what to compare: names (`whichlora techniques`), or mappings of these keys"
    )
    budget: BudgetSpec = Field(
        default_factory=lambda: BudgetSpec(rank=8),
        description="every technique's size: one of rank, trainable_params, fraction",
    )
    data: DataSpec = Field(default_factory=DataSpec, description="the training data")
    training: TrainingSpec = Field(default_factory=TrainingSpec, description="how every run trains")
    evaluation: EvaluationSpec = Field(
        default_factory=EvaluationSpec,
        description="what the base and every run are scored on, in which languages",
    )
    analysis: AnalysisSpec = Field(
        default_factory=AnalysisSpec, description="representations and verdicts"
    )
    executor: ExecutorSpec = Field(
        default_factory=ExecutorSpec, description="where the units of work run"
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        if not re.match(NAME_PATTERN, name):
            raise ValueError(
                "name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or "
                "digit (it names the study folder, so no path separators)"
            )
        return name

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value

    @field_validator("techniques", mode="before")
    @classmethod
    def _technique_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique_labels(self) -> Study:
        if not self.techniques:
            raise ValueError("techniques: list at least one technique, e.g. [lora, dora]")
        labels = [t.run_label for t in self.techniques]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(
                f"techniques: duplicate run labels {dupes}; give each a distinct `label`"
            )
        if self.training.processes > 1 and self.model.device_map:
            raise ValueError(
                "training.processes > 1 puts a whole copy of the model in each process, "
                "model.device_map splits one copy across GPUs: use one of them"
            )
        gpus = self.executor.gpus_per_run
        if self.executor.kind == "ray" and gpus and gpus < self.training.processes:
            raise ValueError(
                f"training.processes is {self.training.processes} but executor.gpus_per_run is "
                f"{gpus:g}: a run's processes take one GPU each; set gpus_per_run to "
                f"{self.training.processes}"
            )
        if (
            self.budget.rank is None
            and self.budget.trainable_params is None
            and (self.budget.fraction is None)
        ):
            self.budget.rank = 8
        return self


def _format_location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _fix_for(error: dict[str, Any]) -> str:
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        return "remove the key or check its spelling: `whichlora config` lists every setting"
    if kind == "missing":
        return "add the key"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return "give a value of the type the key expects"
    return "change the value as described"


def validation_message(path: str | Path, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = _format_location(error["loc"])
        msg = error["msg"].removeprefix("Value error, ")
        parts.append(f"key '{loc}': {msg} (fix: {_fix_for(error)})")
    return f"Study file {path} is invalid: " + "; ".join(parts) + "."


MERGE_TAG = "tag:yaml.org,2002:merge"


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (plain PyYAML keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found the key '{key}' twice",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _unique_mapping,  # type: ignore[arg-type]
)


def parse_study(data: Any, path: str | Path = "<study>") -> Study:
    if data is None:
        raise WhichloraError(
            f"Study file {path} is empty. Fix: write at least `techniques: [lora]`, or start "
            "from `whichlora init quickstart`."
        )
    if not isinstance(data, dict):
        raise WhichloraError(
            f"Study file {path} must be a YAML mapping of keys (name, model, techniques, ...), "
            f"not {type(data).__name__}. Fix: start from `whichlora init quickstart`."
        )
    try:
        return Study.model_validate(data)
    except ValidationError as exc:
        raise WhichloraError(validation_message(path, exc)) from None


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (a path, or the name of a bundled study)."""
    path = study_path(path)
    if not path.is_file():
        raise WhichloraError(
            f"Study file {path} does not exist. Fix: give the path of a study YAML or the name "
            f"of a bundled study ({', '.join(bundled_studies())}); `whichlora init quickstart` "
            "writes one to start from."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise WhichloraError(
            f"Study file {path} is not UTF-8 text. Fix: save it as UTF-8."
        ) from None
    except OSError as exc:
        raise WhichloraError(
            f"Study file {path} cannot be read ({exc.strerror}). Fix: check its permissions."
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise WhichloraError(
            f"Study file {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}. "
            "Fix: correct the YAML there (indentation, colons, quotes; each key once)."
        ) from None
    return parse_study(data, path)


def dump_study(study: Study) -> str:
    """The resolved study with every default, so a study folder reproduces itself."""
    return yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
