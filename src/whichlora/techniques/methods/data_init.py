"""LoRA initialised from the run's own training batches: EVA after the adapter is built (SVD of
the activations), CorDA and LoRA-GA before it (covariance-oriented SVD of W; SVD of the full
weights' gradient), rewriting the base to match. The batches come in the order the run's seed
gives them, and the time they take is part of the run's cost."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import Field

from whichlora.techniques.methods.lora import lora_config
from whichlora.techniques.options import Options, option
from whichlora.techniques.technique import AdapterSettings, Technique


class EvaOptions(Options):
    rho: Annotated[float, Field(ge=1, le=4)] = option(
        1.0,
        "rank redistribution: a layer may take up to rank x rho (1: every layer keeps the rank, "
        "so the budget's count holds exactly)",
    )
    tau: Annotated[float, Field(ge=0, le=1)] = option(
        0.99, "cosine similarity at which the incremental SVD stops early"
    )


def _eva(settings: AdapterSettings, options: Any) -> Any:
    from peft import EvaConfig

    return lora_config(
        settings,
        init_lora_weights="eva",
        eva_config=EvaConfig(rho=options.rho, tau=options.tau),
    )


def _eva_prepare(model: Any, batches: Iterable[dict[str, Any]], options: Any) -> None:
    from peft.tuners.lora.eva import initialize_lora_eva_weights

    # peft reads batches until every layer's components converge (tau): the run's own
    # training batches in their seeded order, as many as that takes.
    initialize_lora_eva_weights(model, dataloader=_Endless(batches), show_progress_bar=False)


class _Endless:
    """An endless batch stream peft's EVA accepts as a dataloader (it asks for a length)."""

    def __init__(self, batches: Iterable[dict[str, Any]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return 1  # never empty; peft cycles it until convergence

    def __iter__(self) -> Any:
        return iter(self.batches)


def _resolve_targets(model: Any, config: Any) -> None:
    """Turn 'all-linear' into the layer names peft would pick: CorDA's and LoRA-GA's
    preprocessing runs before get_peft_model, which is where peft resolves the shorthand."""
    from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

    _maybe_include_all_linear_layers(config, model)


class CordaOptions(Options):
    corda_method: Literal["ipm", "kpm"] = option(
        "ipm",
        "'ipm' (instruction-previewed: adapt the directions the data uses most) or 'kpm' "
        "(knowledge-preserved: adapt the least used, keeping what the base knows)",
    )
    batches: Annotated[int, Field(ge=1, le=4096)] = option(
        16,
        "training batches whose activations build each layer's covariance (peft suggests "
        "about hidden size / tokens per example x 128 examples)",
    )


def _corda(settings: AdapterSettings, options: Any) -> Any:
    from peft.tuners.lora.config import CordaConfig

    return lora_config(
        settings,
        init_lora_weights="corda",
        corda_config=CordaConfig(corda_method=options.corda_method),
    )


def _corda_preprocess(
    model: Any, config: Any, batches: Iterable[dict[str, Any]], options: Any
) -> None:
    from peft.tuners.lora.corda import preprocess_corda

    _resolve_targets(model, config)
    stream = iter(batches)

    def run_model() -> None:
        # peft's covariance hook takes one example at a time (it squeezes a batch of one), so
        # each row runs alone, unpadded: padding would enter the covariance.
        for _ in range(options.batches):
            batch = next(stream)
            for ids, mask in zip(batch["input_ids"], batch["attention_mask"], strict=True):
                model(input_ids=ids[: int(mask.sum())].unsqueeze(0))

    preprocess_corda(model, config, run_model=run_model)


class LoraGaOptions(Options):
    direction: Literal["ArBr", "A2rBr", "ArB2r", "random"] = option(
        "ArB2r", "which singular vectors of the gradient go to A and to B"
    )
    scale: Literal["stable", "weight_svd", "gd_scale", "unit"] = option(
        "stable", "how the initial A and B are scaled"
    )
    stable_gamma: Annotated[int, Field(ge=1, le=1024)] = option(16, "gamma of the 'stable' scaling")
    batches: Annotated[int, Field(ge=1, le=4096)] = option(
        8, "training batches whose full-weight gradients are averaged before the SVD"
    )


def _loraga(settings: AdapterSettings, options: Any) -> Any:
    from peft import LoraGAConfig

    return lora_config(
        settings,
        init_lora_weights="lora_ga",
        lora_ga_config=LoraGAConfig(
            direction=options.direction, scale=options.scale, stable_gamma=options.stable_gamma
        ),
    )


def _loraga_preprocess(
    model: Any, config: Any, batches: Iterable[dict[str, Any]], options: Any
) -> None:
    from peft import preprocess_loraga

    _resolve_targets(model, config)
    stream = iter(batches)

    def train_step() -> None:
        # peft keeps gradients only on the targeted weights and averages them over these calls.
        for _ in range(options.batches):
            model(**next(stream)).loss.backward()

    with warnings.catch_warnings():
        # torch notes that the first layers' hooks fire on output gradients only (the inputs
        # need none); peft's hooks only count calls, which is what they are for.
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        preprocess_loraga(model, config, train_step=train_step)


EVA = Technique(
    "eva",
    "LoRA whose A is initialised from the SVD of the run's own training activations.",
    "Paischer et al. 2024, One Initialization to Rule them All: Fine-tuning via Explained "
    "Variance Adaptation, arXiv:2410.07170",
    _eva,
    options=EvaOptions,
    prepare=_eva_prepare,
)

CORDA = Technique(
    "corda",
    "LoRA initialised from a context-oriented SVD of W times the covariance of the run's "
    "own training activations; the base keeps the residual.",
    "Yang et al. 2024, CorDA: Context-Oriented Decomposition Adaptation of Large Language "
    "Models for Task-Aware Parameter-Efficient Fine-tuning, arXiv:2406.05223",
    _corda,
    options=CordaOptions,
    preprocess=_corda_preprocess,
    rewrites_base=True,
)

LORAGA = Technique(
    "loraga",
    "LoRA initialised from the SVD of the full weights' gradient on the run's own training "
    "batches, so its first step follows full fine-tuning; the base is shifted to match.",
    "Wang et al. 2024, LoRA-GA: Low-Rank Adaptation with Gradient Approximation, arXiv:2407.05000",
    _loraga,
    options=LoraGaOptions,
    preprocess=_loraga_preprocess,
    rewrites_base=True,
)
