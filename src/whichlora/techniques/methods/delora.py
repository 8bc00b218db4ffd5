"""DeLoRA: a LoRA update normalised and given a trained, bounded strength, so its angle and its
strength are learned apart."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from whichlora.techniques.options import Options, option
from whichlora.techniques.technique import AdapterSettings, Technique


class DeloraOptions(Options):
    delora_lambda: Annotated[float, Field(gt=0, le=1000)] = option(
        15.0, "initial bound on the update's Frobenius norm (trained per layer)"
    )


def _delora(settings: AdapterSettings, options: Any) -> Any:
    from peft import DeloraConfig

    return DeloraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        delora_lambda=options.delora_lambda,
        module_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


DELORA = Technique(
    "delora",
    "LoRA whose update is normalised and given a trained bounded strength (angle and "
    "strength decoupled).",
    "Bini et al. 2025, Decoupling Angles and Strength in Low-rank Adaptation, arXiv:2503.18225",
    _delora,
    options=DeloraOptions,
)
