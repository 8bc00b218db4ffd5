"""Adapters trained in a transform domain, with no rank: C3A (block-circulant updates by FFT),
FourierFT (spectral coefficients through an inverse DFT) and WaveFT (wavelet coefficients through
an inverse wavelet transform). Their capacity knob is their own option, not the run's rank, and
none takes a dropout."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from whichlora.techniques.options import (
    Knob,
    Options,
    common_divisors,
    option,
    up_to_smallest_matrix,
)
from whichlora.techniques.technique import AdapterSettings, Technique


class C3aOptions(Options):
    block_size: Annotated[int, Field(ge=1, le=65536)] = option(
        32,
        "circulant block size; must divide every targeted layer's width. Smaller blocks train "
        "more parameters (the capacity knob a budget solves)",
    )


def _c3a(settings: AdapterSettings, options: Any) -> Any:
    from peft import C3AConfig

    return C3AConfig(
        task_type="CAUSAL_LM",
        block_size=options.block_size,
        target_modules=settings.target_modules,
    )


class FourierOptions(Options):
    n_frequency: Annotated[int, Field(ge=1)] = option(
        1000, "spectral coefficients trained per layer (the capacity knob a budget solves)"
    )
    scaling: Annotated[float, Field(gt=0, le=10000)] = option(
        150.0, "scale of the inverse-DFT update, like LoRA's alpha"
    )


def _fourierft(settings: AdapterSettings, options: Any) -> Any:
    from peft import FourierFTConfig

    return FourierFTConfig(
        task_type="CAUSAL_LM",
        n_frequency=options.n_frequency,
        scaling=options.scaling,
        target_modules=settings.target_modules,
    )


class WaveFtOptions(Options):
    n_frequency: Annotated[int, Field(ge=1)] = option(
        1000,
        "wavelet coefficients trained per layer (the capacity knob a budget solves; peft's "
        "2592 is sized for SDXL, 1000 is FourierFT's default here)",
    )
    scaling: Annotated[float, Field(gt=0, le=10000)] = option(
        25.0, "scale of the reconstructed update, like LoRA's alpha"
    )
    wavelet_family: Literal["db1", "db2", "db3", "sym2", "sym3", "coif1"] = option(
        "db1", "wavelet of the inverse transform (db1: Haar, the shortest filter)"
    )
    use_idwt: bool = option(
        True, "rebuild the update by inverse wavelet transform (False: a sparse update)"
    )


def _waveft(settings: AdapterSettings, options: Any) -> Any:
    from peft import WaveFTConfig

    # The coefficients' positions come from peft's fixed seed (random_loc_seed), not the run's.
    return WaveFTConfig(
        task_type="CAUSAL_LM",
        n_frequency=options.n_frequency,
        scaling=options.scaling,
        wavelet_family=options.wavelet_family,
        use_idwt=options.use_idwt,
        target_modules=settings.target_modules,
    )


C3A = Technique(
    "c3a",
    "Circular-convolution adapter: block-circulant updates computed by FFT.",
    "Chen et al. 2024, Parameter-Efficient Fine-Tuning via Circular Convolution, arXiv:2407.19342",
    _c3a,
    options=C3aOptions,
    knob=Knob("block_size", common_divisors, trend="falls", help="circulant block size"),
    uses_rank=False,
)

FOURIERFT = Technique(
    "fourierft",
    "A few trained spectral coefficients per layer, turned into the update by inverse DFT.",
    "Gao et al. 2024, Parameter-Efficient Fine-Tuning with Discrete Fourier Transform, "
    "arXiv:2405.03003",
    _fourierft,
    options=FourierOptions,
    knob=Knob("n_frequency", up_to_smallest_matrix, help="spectral coefficients per layer"),
    uses_rank=False,
)

WAVEFT = Technique(
    "waveft",
    "A few trained wavelet coefficients per layer at random positions, turned into the "
    "update by an inverse discrete wavelet transform.",
    "Bilican et al. 2025, Exploring Sparsity for Parameter Efficient Fine Tuning Using "
    "Wavelets, arXiv:2505.12532",
    _waveft,
    options=WaveFtOptions,
    knob=Knob("n_frequency", up_to_smallest_matrix, help="wavelet coefficients per layer"),
    uses_rank=False,
)
