"""The grid of runs a study asks for, and what each will cost before anything is trained."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from whichlora.config.study import Study, TechniqueSpec
from whichlora.models.precision import resolve_precision
from whichlora.train.request import TrainRequest


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    technique: str
    label: str
    seed: int
    learning_rate: float
    sweep: bool  # part of a learning-rate sweep: the best rate per technique is kept
    request: TrainRequest

    def as_row(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "technique": self.technique,
            "label": self.label,
            "seed": self.seed,
            "learning_rate": self.learning_rate,
            "sweep": self.sweep,
        }


def _rates(study: Study, spec: TechniqueSpec) -> list[float]:
    return spec.learning_rates or study.training.learning_rates or [study.training.learning_rate]


def _lr_tag(lr: float) -> str:
    """Three significant digits: distinct rates in a sweep get distinct run folders."""
    return f"{lr:.3g}"


def train_request(
    study: Study, spec: TechniqueSpec, seed: int, lr: float, run_id: str = ""
) -> TrainRequest:
    budget, training = study.budget, study.training
    sized = any(x is not None for x in (spec.rank, spec.trainable_params, spec.fraction))
    source = spec if sized else budget
    return TrainRequest(
        model=study.model.id,
        technique=spec.name,
        seed=seed,
        steps=training.steps,
        batch_size=training.batch_size,
        grad_accum=training.grad_accum,
        learning_rate=lr,
        warmup_ratio=training.warmup_ratio,
        weight_decay=training.weight_decay,
        max_grad_norm=training.max_grad_norm,
        max_length=training.max_length,
        response_only_loss=training.response_only_loss,
        rank=source.rank,
        trainable_params=source.trainable_params,
        fraction=source.fraction,
        alpha=spec.alpha if spec.alpha is not None else budget.alpha,
        dropout=spec.dropout if spec.dropout is not None else budget.dropout,
        target_modules=spec.target_modules or budget.target_modules,
        options=dict(spec.options),
        dtype=study.model.dtype,
        trust_remote_code=study.model.trust_remote_code,
        allow_pickle=study.model.allow_pickle,
        device=study.model.device,
        device_map=study.model.device_map,
        threads=training.threads,
        precision=resolve_precision(
            training.precision,
            study.model.device,
            study.executor.gpus_per_run,
            model_dtype=study.model.dtype,
        ),
        gradient_checkpointing=training.gradient_checkpointing,
        packing=training.packing,
        sparse_dropout=training.sparse_dropout,
        validate_every=training.validate_every,  # never in a result key: a curve beside it
        compile=training.compile,
        processes=training.processes,
        stall_timeout=training.stall_timeout,  # never in a result key: changes nothing
        checkpoint_every=training.checkpoint_every,  # never in a result key: changes nothing
        report_to=tuple(training.report_to),
        run_name=f"{study.name}/{run_id}" if run_id else study.name,
    )


def plan_study(study: Study, chosen: Mapping[str, float] | None = None) -> list[RunSpec]:
    """Techniques x seeds x learning rates, in a stable order (the order runs execute in).

    A technique's own `seeds` replace `training.seeds` for it: e.g. more seeds for the baseline
    and the technique it is compared with, so their seed noise is measured, not assumed.

    With `training.sweep_seeds`, a technique's rates are swept on those seeds only; its other
    seeds run at the rate its sweep chose (`chosen`, per run label, once the sweep is
    validated), so a sweep of R rates and S seeds costs R + S - 1 runs, not R x S."""
    runs = []
    for spec in study.techniques:
        rates = _rates(study, spec)
        seeds = list(spec.seeds or study.training.seeds)
        sweep_seeds = _sweep_seeds(study, rates, seeds)
        for seed in seeds + [s for s in sweep_seeds if s not in seeds]:
            if seed in sweep_seeds:
                todo = [(lr, len(rates) > 1) for lr in rates]
            elif chosen is not None and spec.run_label in chosen:
                todo = [(chosen[spec.run_label], False)]
            else:  # waits for its technique's sweep
                continue
            for lr, sweep in todo:
                run_id = f"{spec.run_label}-s{seed}" + (f"-lr{_lr_tag(lr)}" if sweep else "")
                runs.append(
                    RunSpec(
                        run_id=run_id,
                        technique=spec.name,
                        label=spec.run_label,
                        seed=seed,
                        learning_rate=lr,
                        sweep=sweep,
                        request=train_request(study, spec, seed, lr, run_id),
                    )
                )
    return runs


def _sweep_seeds(study: Study, rates: list[float], seeds: list[int]) -> list[int]:
    if len(rates) > 1 and study.training.sweep_seeds is not None:
        return list(study.training.sweep_seeds)
    return seeds


def waiting_for_sweep(study: Study, chosen: Mapping[str, float]) -> list[str]:
    """`<label>-s<seed>` of the runs that start once their technique's sweep has chosen."""
    waiting = []
    for spec in study.techniques:
        rates = _rates(study, spec)
        seeds = list(spec.seeds or study.training.seeds)
        sweep_seeds = _sweep_seeds(study, rates, seeds)
        if spec.run_label not in chosen:
            waiting += [f"{spec.run_label}-s{s}" for s in seeds if s not in sweep_seeds]
    return waiting
