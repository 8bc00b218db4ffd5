"""KaSA: LoRA in SVD form with trained singular values, on a base whose r smallest singular
components peft drops at init. peft drops them again, identically, whenever the adapter is loaded
on an untouched base, so the adapter is saved as it is (peft cannot convert it to plain LoRA).
The paper trains with two regularisers, which peft exposes for the loop to add."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from whichlora.techniques.methods.lora import lora_config
from whichlora.techniques.options import Knob, Options, option
from whichlora.techniques.technique import AdapterSettings, Technique


class KasaOptions(Options):
    beta: Annotated[float, Field(ge=0, le=1)] = option(
        1e-4, "weight of the L2 penalty on the trained singular values (paper's value)"
    )
    gamma: Annotated[float, Field(ge=0, le=1)] = option(
        1e-3, "weight of the orthogonality penalty on A and B (paper's value)"
    )


def _kasa(settings: AdapterSettings, options: Any) -> Any:
    from peft import KasaConfig

    return lora_config(settings, kasa_config=KasaConfig(beta=options.beta, gamma=options.gamma))


def _kasa_penalty(model: Any) -> Any:
    return model.base_model._get_kasa_loss()


def _below_narrowest(shapes: Any, options: Any) -> Any:
    return range(1, min(min(s) for s in shapes))  # KaSA keeps at least one singular component


KASA = Technique(
    "kasa",
    "LoRA in SVD form with trained singular values, on a base whose r smallest singular "
    "components are dropped at init (trained with the paper's two regularisers).",
    "Wang et al. 2024, KaSA: Knowledge-Aware Singular-Value Adaptation of Large Language "
    "Models, arXiv:2412.06071",
    _kasa,
    options=KasaOptions,
    knob=Knob("rank", _below_narrowest, help="rank of the update; below the narrowest width"),
    penalty=_kasa_penalty,
    rewrites_base_on_load=True,
)
