"""The study file: one YAML validated into typed objects, every default written back.

Unknown keys, wrong types and impossible values are rejected with the file, the key and a fix.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
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

    rank: Annotated[int, Field(ge=1)] | None = None
    trainable_params: Annotated[int, Field(ge=1)] | None = None
    fraction: Annotated[float, Field(gt=0, lt=1)] | None = None
    alpha: Annotated[float, Field(gt=0)] | None = Field(None, description="default: 2 x rank")
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05
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
    name: str
    label: str | None = Field(None, description="run label; defaults to the technique name")
    rank: Annotated[int, Field(ge=1)] | None = None
    trainable_params: Annotated[int, Field(ge=1)] | None = None
    fraction: Annotated[float, Field(gt=0, lt=1)] | None = None
    alpha: Annotated[float, Field(gt=0)] | None = None
    dropout: Annotated[float, Field(ge=0, lt=1)] | None = None
    target_modules: str | list[str] | None = None
    learning_rates: list[Annotated[float, Field(gt=0, lt=1)]] | None = None
    seeds: list[int] | None = Field(
        None, description="this technique's seeds, instead of training.seeds"
    )
    options: dict[str, Any] = Field(default_factory=dict)

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
    items_per_language: Annotated[int, Field(ge=1)] | None = None
    validation_fraction: Annotated[float, Field(ge=0, lt=0.5)] = 0.1
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
    steps: Annotated[int, Field(ge=1)] = 30
    batch_size: Annotated[int, Field(ge=1)] = 8
    grad_accum: Annotated[int, Field(ge=1)] = 1
    learning_rate: Annotated[float, Field(gt=0, lt=1)] = 2e-4
    learning_rates: list[Annotated[float, Field(gt=0, lt=1)]] | None = Field(
        None, description="sweep: best per technique on the validation split"
    )
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    max_length: Annotated[int, Field(ge=16)] = 256
    response_only_loss: bool = True
    seeds: list[int] = Field(default_factory=lambda: [0])
    threads: Annotated[int, Field(ge=1)] | None = None
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
    processes: Annotated[int, Field(ge=1)] = Field(
        1,
        description="train each run as N data-parallel processes on this machine (accelerate "
        "DDP: one per GPU, or gloo on CPU); global batch = batch_size x grad_accum x processes",
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
        if isinstance(languages, list) and (
            not languages or len(set(languages)) != len(languages)
        ):
            raise ValueError("languages must be 'all', a count, or a non-empty list of codes")
        return languages


class EvaluationSpec(Strict):
    languages: list[str] | None = Field(None, description="default: every bundled language")
    source_language: str = "en"
    knowledge: str | None = "builtin:knowledge"
    heldout: str | None = "builtin:heldout"
    items_per_language: Annotated[int, Field(ge=1)] | None = None
    generation_items: Annotated[int, Field(ge=0)] = 10
    max_new_tokens: Annotated[int, Field(ge=1)] = 48
    batch_size: Annotated[int, Field(ge=1)] = 16
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
    harness_limit: Annotated[int, Field(ge=1)] | None = None
    atlas: AtlasSpec | None = Field(
        None,
        description="transfer atlas over UDHR languages, e.g. {languages: 100, articles: 1}; "
        "off by default",
    )


class AnalysisSpec(Strict):
    parallel: str = Field(
        "builtin:sentences", description="parallel text: builtin:sentences or udhr"
    )
    sentences_per_language: Annotated[int, Field(ge=4)] = 60
    pooling: list[Literal["mean", "last"]] = Field(default_factory=lambda: ["mean", "last"])
    baseline: Annotated[
        str, Field(description="the technique label every other technique is compared with")
    ] = "lora"
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.05
    bootstrap_resamples: Annotated[int, Field(ge=100)] = 2000
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
    kind: Literal["local", "ray"] = "local"
    address: str | None = Field(None, description="Ray address; None starts a local Ray")
    cpus_per_run: Annotated[float, Field(gt=0)] = 1
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
    model: ModelSpec = Field(default_factory=ModelSpec)
    techniques: list[TechniqueSpec]
    budget: BudgetSpec = Field(default_factory=lambda: BudgetSpec(rank=8))
    data: DataSpec = Field(default_factory=DataSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    analysis: AnalysisSpec = Field(default_factory=AnalysisSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

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
        return "remove the key or check its spelling against `whichlora run --help` and README"
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
            "from examples/quickstart.yaml."
        )
    if not isinstance(data, dict):
        raise WhichloraError(
            f"Study file {path} must be a YAML mapping of keys (name, model, techniques, ...), "
            f"not {type(data).__name__}. Fix: see examples/quickstart.yaml."
        )
    try:
        return Study.model_validate(data)
    except ValidationError as exc:
        raise WhichloraError(validation_message(path, exc)) from None


def load_study(path: str | Path) -> Study:
    """Read and validate a study file."""
    path = Path(path)
    if not path.is_file():
        raise WhichloraError(
            f"Study file {path} does not exist. Fix: give the path of a study YAML, e.g. "
            "examples/quickstart.yaml."
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
