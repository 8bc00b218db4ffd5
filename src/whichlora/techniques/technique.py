"""What a technique is: the fields a registry entry fills and the hooks training calls.

An entry says how to build its peft config from the run's settings and its typed options, which
integer sets its capacity (the knob a budget solves), and what differs when it trains: an
optimizer of its own, a data-driven initialisation before training or before the adapter is
built, a hook after each optimizer step (and the state that hook keeps, for checkpoints), a
penalty added to the objective, a base model rewritten at init. The training loop, the budget
counter and the report call these fields; none of them asks for a technique by name. Nothing
here reimplements an adapter: every config comes from peft.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from whichlora.techniques.options import RANK, Knob, NoOptions, Options, parse_options


@dataclass(frozen=True)
class AdapterSettings:
    """What a run asks of its adapter; `options` holds technique-specific knobs."""

    rank: int = 8
    alpha: float | None = None  # None: 2 x rank, the common LoRA default
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    total_steps: int = 100  # the run's schedule, for techniques that plan by it (AdaLoRA)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank


ConfigBuilder = Callable[[AdapterSettings, Any], Any]  # (settings, the technique's typed options)
OptimizerFactory = Callable[[Any, float, float, dict[str, Any]], Any]
StepHook = Callable[[Any, int], None]  # (model, optimizer steps taken so far, from 1)
Penalty = Callable[[Any], Any]  # (peft model) -> a term added to the objective (not the curve)
# (peft model, an endless seeded stream of the run's own training batches, typed options)
Prepare = Callable[[Any, Iterable[dict[str, Any]], Any], None]
# (base model before the adapter, the peft config it will get, the same batch stream, options)
Preprocess = Callable[[Any, Any, Iterable[dict[str, Any]], Any], None]
ModelHook = Callable[[Any], Any]  # (peft model) -> anything; called for its effect
ConfigHook = Callable[[Any], None]  # (peft config) -> None; changes the config in place


@dataclass(frozen=True)
class StepState:
    """State a technique's step hook keeps between optimizer steps, outside the parameters and
    the optimizer: a checkpoint saves it so a resumed run goes on exactly where it stopped."""

    save: Callable[[Any], Any]  # (peft model) -> tensors and plain containers
    restore: Callable[[Any, Any], None]  # (peft model, what `save` returned)


@dataclass(frozen=True)
class Technique:
    name: str
    description: str
    paper: str
    builder: ConfigBuilder
    options: type[Options] = NoOptions
    knob: Knob = RANK
    make_optimizer: OptimizerFactory | None = None
    prepare: Prepare | None = None  # data-driven init after the adapter, timed as part of the run
    preprocess: Preprocess | None = None  # data-driven init before the adapter exists
    after_build: ModelHook | None = None  # once the adapter is built, before anything else
    after_optimizer_step: StepHook | None = None
    step_state: StepState | None = None  # what `after_optimizer_step` keeps between steps
    penalty: Penalty | None = None  # regularisers added to each batch's objective
    # Changes a config needs before it can be built on the meta device to count its parameters
    # (same shapes; e.g. a random mask drawn with an op the meta device lacks).
    meta_config: ConfigHook | None = None
    rewrites_base: bool = False  # base rewritten at init: fresh base to compare, convert on save
    # peft rewrites the base at init and again, identically, whenever the adapter is loaded on an
    # untouched base, so the adapter is saved as it is (peft cannot convert it to LoRA).
    rewrites_base_on_load: bool = False
    uses_rank: bool = True  # False: the run's rank does not reach the config
    # The report shows its time per step and peak memory as ratios to the baseline technique's:
    # for the techniques whose cost readers ask about.
    cost_next_to_baseline: bool = False

    @property
    def option_names(self) -> tuple[str, ...]:
        return tuple(self.options.model_fields)

    def parse_options(self, values: dict[str, Any]) -> Any:
        return parse_options(self.name, self.options, values)

    def build_config(self, settings: AdapterSettings) -> Any:
        return self.builder(settings, self.parse_options(settings.options))

    def knob_value(self, settings: AdapterSettings) -> int:
        if self.knob.name == "rank":
            return settings.rank
        return int(getattr(self.parse_options(settings.options), self.knob.name))
