"""Score one model on the study's evaluation set: knowledge, response likelihood, generation.

Every metric is stored per example (so significance tests can pair runs) and per language. The
same function scores the base model and every tuned run, so they are measured identically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from whichlora.data.records import Record

# What evaluate_model writes from each part of the evaluation set; a study's preflight reads
# these (suite_metrics) to know which metrics it will compute. What each metric is (direction,
# margin, display name, units) is in the metric table, evaluate/metrics.yaml.
KNOWLEDGE_METRICS = ("mc_acc", "mc_acc_norm")  # multiple choice: accuracy, length-normalised
HELDOUT_METRICS = ("nll",)  # reference-response NLL per token
GENERATION_METRICS = ("chrf", "fidelity")  # generated answers: chrF, in the asked language


def suite_metrics(*, knowledge: bool, heldout: bool, generation: bool) -> list[str]:
    """The metrics evaluate_model computes for an evaluation set with these parts."""
    parts = ((knowledge, KNOWLEDGE_METRICS), (heldout, HELDOUT_METRICS),
             (generation, GENERATION_METRICS))  # fmt: skip
    return [metric for present, metrics in parts if present for metric in metrics]


@dataclass
class EvalSet:
    """What every model is scored on; built once per study from the study file."""

    knowledge: dict[str, list[Any]] = field(default_factory=dict)  # language -> KnowledgeItem
    heldout: dict[str, list[Record]] = field(default_factory=dict)
    generation: dict[str, list[Record]] = field(default_factory=dict)
    validation: list[Record] = field(default_factory=list)

    @property
    def languages(self) -> list[str]:
        return sorted(set(self.knowledge) | set(self.heldout))


@dataclass
class EvalResult:
    metrics: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    generations: list[dict[str, Any]] = field(default_factory=list)


def _add(
    result: EvalResult,
    run_id: str,
    split: str,
    language: str,
    metric: str,
    ids: list[str],
    values: list[float],
) -> None:
    if not values:
        return
    for example_id, value in zip(ids, values, strict=True):
        result.examples.append(
            {
                "run_id": run_id,
                "split": split,
                "language": language,
                "metric": metric,
                "example_id": example_id,
                "value": float(value),
            }
        )
    finite = [v for v in values if math.isfinite(v)]
    result.metrics.append(
        {
            "run_id": run_id,
            "split": split,
            "language": language,
            "metric": metric,
            "value": sum(finite) / len(finite) if finite else None,
            "n": len(values),
        }
    )


def _prompt_pairs(tokenizer: Any, records: list[Record]) -> list[tuple[str, str]]:
    from whichlora.train.prompting import split_prompt_response

    return [split_prompt_response(tokenizer, r) for r in records]


def evaluate_model(
    model: Any,
    tokenizer: Any,
    evalset: EvalSet,
    run_id: str,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 48,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Knowledge accuracy, reference-response NLL, and generation chrF + language fidelity."""
    from sacrebleu.metrics import CHRF

    from whichlora.data.knowledge import context, continuations
    from whichlora.evaluate.fidelity import fidelity
    from whichlora.evaluate.scoring import (
        MultipleChoiceItem,
        generate,
        response_nll,
        score_multiple_choice,
    )
    from whichlora.train.prompting import format_prompt, user_message

    result = EvalResult()
    for language, items in sorted(evalset.knowledge.items()):
        mc = [
            MultipleChoiceItem(
                context=context(i), choices=[c.lstrip() for c in continuations(i)], gold=i.answer
            )
            for i in items
        ]
        scores = score_multiple_choice(
            model, tokenizer, mc, batch_size=batch_size, progress=progress
        )
        ids = [i.id for i in items]
        acc, acc_norm = KNOWLEDGE_METRICS
        _add(result, run_id, "test", language, acc, ids, [s.acc for s in scores])
        _add(result, run_id, "test", language, acc_norm, ids, [s.acc_norm for s in scores])

    for language, records in sorted(evalset.heldout.items()):
        nll = response_nll(
            model,
            tokenizer,
            _prompt_pairs(tokenizer, records),
            batch_size=batch_size,
            progress=progress,
        )
        _add(
            result,
            run_id,
            "test",
            language,
            HELDOUT_METRICS[0],
            [r.id for r in records],
            [total / count if count else float("nan") for total, count in nll],
        )

    chrf = CHRF()
    for language, records in sorted(evalset.generation.items()):
        if not records:
            continue
        prompts = [format_prompt(tokenizer, user_message(r)) for r in records]
        texts = generate(
            model,
            tokenizer,
            prompts,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
        )
        ids = [r.id for r in records]
        chrf_name, fidelity_name = GENERATION_METRICS
        _add(
            result,
            run_id,
            "test",
            language,
            chrf_name,
            ids,
            [chrf.sentence_score(t, [r.output]).score for t, r in zip(texts, records, strict=True)],
        )
        _add(
            result,
            run_id,
            "test",
            language,
            fidelity_name,
            ids,
            [float(ok) for ok in fidelity(texts, language)],
        )
        result.generations.extend(
            {"run_id": run_id, "language": language, "example_id": i, "text": t}
            for i, t in zip(ids, texts, strict=True)
        )
    return result


def evaluate_validation(
    model: Any, tokenizer: Any, records: list[Record], run_id: str, batch_size: int = 16
) -> EvalResult:
    """Response NLL on the validation split: what a learning-rate sweep selects on."""
    from whichlora.evaluate.scoring import response_nll

    result = EvalResult()
    by_language: dict[str, list[Record]] = {}
    for record in records:
        by_language.setdefault(record.language, []).append(record)
    for language, group in sorted(by_language.items()):
        nll = response_nll(model, tokenizer, _prompt_pairs(tokenizer, group), batch_size=batch_size)
        _add(
            result,
            run_id,
            "validation",
            language,
            "nll",
            [r.id for r in group],
            [total / count if count else float("nan") for total, count in nll],
        )
    return result
