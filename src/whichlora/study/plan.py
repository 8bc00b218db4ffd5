"""The grid of runs a study asks for, and what each will cost before anything is trained."""

from __future__ import annotations

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
        compile=training.compile,
        processes=training.processes,
        stall_timeout=training.stall_timeout,  # never in a result key: changes nothing
        checkpoint_every=training.checkpoint_every,  # never in a result key: changes nothing
        report_to=tuple(training.report_to),
        run_name=f"{study.name}/{run_id}" if run_id else study.name,
    )


def plan_study(study: Study) -> list[RunSpec]:
    """Techniques x seeds x learning rates, in a stable order (the order runs execute in).

    A technique's own `seeds` replace `training.seeds` for it: e.g. more seeds for the baseline
    and the technique it is compared with, so their seed noise is measured, not assumed."""
    runs = []
    for spec in study.techniques:
        rates = _rates(study, spec)
        for seed in spec.seeds or study.training.seeds:
            for lr in rates:
                run_id = f"{spec.run_label}-s{seed}"
                if len(rates) > 1:
                    run_id += f"-lr{_lr_tag(lr)}"
                runs.append(
                    RunSpec(
                        run_id=run_id,
                        technique=spec.name,
                        label=spec.run_label,
                        seed=seed,
                        learning_rate=lr,
                        sweep=len(rates) > 1,
                        request=train_request(study, spec, seed, lr, run_id),
                    )
                )
    return runs
