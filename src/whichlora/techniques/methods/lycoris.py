"""LyCORIS adapters: LoHa (Hadamard product of two low-rank pairs) and LoKr (Kronecker product of
a small matrix and a low-rank one). The study's dropout reaches them as `module_dropout`: the
whole adapter of a layer dropped for a step, as LoRA's dropout removes its update's input
(`rank_dropout`, dropping rank components, is a different regulariser)."""

from __future__ import annotations

from typing import Any

from whichlora.techniques.options import RANK, Knob, up_to_narrowest
from whichlora.techniques.technique import AdapterSettings, Technique


def _loha(settings: AdapterSettings, options: Any) -> Any:
    from peft import LoHaConfig

    return LoHaConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        alpha=settings.lora_alpha,
        module_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


def _lokr(settings: AdapterSettings, options: Any) -> Any:
    from peft import LoKrConfig

    return LoKrConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        alpha=settings.lora_alpha,
        module_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


LOHA = Technique(
    "loha",
    "Low-rank Hadamard product of two LoRA pairs (LyCORIS), higher effective rank.",
    "Hyeon-Woo et al. 2022, FedPara: Low-Rank Hadamard Product for Communication-Efficient "
    "Federated Learning, arXiv:2108.06098",
    _loha,
)

LOKR = Technique(
    "lokr",
    "Kronecker product of a small matrix and a low-rank matrix (LyCORIS).",
    "Yeh et al. 2024, Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to "
    "Model Evaluation, arXiv:2309.14859",
    _lokr,
    # peft stores a Kronecker factor whole once the rank reaches half its width: fewer
    # parameters than the rank below, so the count is not monotonic in the rank.
    knob=Knob("rank", up_to_narrowest, trend="any", help=RANK.help),
)
