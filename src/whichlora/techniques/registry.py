"""The technique registry: the single list the CLI, docs and tests read.

An entry says how to build its peft config from the run's settings and its typed options, which
integer sets its capacity (the knob a budget solves), and calls out what differs in training: an
optimizer of its own (LoRA+, LoRA-FA, Riemannian), a data-driven initialisation before training
(EVA) or before the adapter is built (CorDA, LoRA-GA), a hook after each optimizer step
(AdaLoRA), or a base model rewritten at init (PiSSA, OLoRA, CorDA, LoRA-GA) that needs conversion
when saved. Nothing here reimplements an adapter.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from whichlora.errors import WhichloraError
from whichlora.techniques.options import (
    RANK,
    Knob,
    NoOptions,
    Options,
    common_divisors,
    multiples_up_to_narrowest,
    parse_options,
    up_to,
    up_to_narrowest,
    up_to_smallest_matrix,
)


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


@dataclass(frozen=True)
class Technique:
    name: str
    description: str
    paper: str
    builder: ConfigBuilder
    options: type[Options] = NoOptions
    knob: Knob = RANK
    make_optimizer: OptimizerFactory | None = None
    prepare: Prepare | None = None  # data-driven init (EVA), timed as part of the run
    preprocess: Preprocess | None = None  # data-driven, before the adapter (CorDA, LoRA-GA)
    after_optimizer_step: StepHook | None = None
    penalty: Penalty | None = None  # KaSA: its regularisers, added to each batch's objective
    rewrites_base: bool = False  # PiSSA/OLoRA/CorDA/LoRA-GA: fresh base to compare, convert on save
    # KaSA: peft truncates the base at init and again, identically, whenever the adapter is loaded
    # on an untouched base, so the adapter is saved as it is (peft cannot convert it to LoRA).
    rewrites_base_on_load: bool = False
    can_merge: bool = True  # False: the evaluator scores the adapter unmerged
    uses_rank: bool = True  # False: the run's rank does not reach the config (FourierFT, C3A)

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


def _opt(default: Any, description: str, **bounds: Any) -> Any:
    return Field(default, description=description, **bounds)


# --------------------------------------------------------------------------- LoRA and its kin


def _lora(settings: AdapterSettings, options: Any = None, **kwargs: Any) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        **kwargs,
    )


class PissaOptions(Options):
    init: Literal["pissa", "pissa_niter_2", "pissa_niter_4", "pissa_niter_8", "pissa_niter_16"] = (
        _opt("pissa_niter_4", "SVD: exact ('pissa') or fast randomised with N subspace iterations")
    )


class LoraPlusOptions(Options):
    loraplus_lr_ratio: Annotated[float, Field(gt=0, le=1024)] = _opt(
        16.0, "learning rate of B over that of A"
    )


def _loraplus_optimizer(model: Any, lr: float, weight_decay: float, options: dict[str, Any]) -> Any:
    import torch
    from peft.optimizers import create_loraplus_optimizer

    opts = parse_options("loraplus", LoraPlusOptions, options)
    return create_loraplus_optimizer(
        model=model,
        optimizer_cls=torch.optim.AdamW,
        lr=lr,
        loraplus_lr_ratio=float(opts.loraplus_lr_ratio),
        # peft drops plain `weight_decay` for LoRA+ groups; it must be passed under this name.
        loraplus_weight_decay=weight_decay,
        weight_decay=weight_decay,
    )


def _lorafa_optimizer(model: Any, lr: float, weight_decay: float, options: dict[str, Any]) -> Any:
    from peft.optimizers import create_lorafa_optimizer

    config = model.peft_config["default"]
    # peft freezes every lora_A here: only B (and nothing else) is updated from now on.
    return create_lorafa_optimizer(
        model=model,
        r=config.r,
        lora_alpha=config.lora_alpha,
        lr=lr,
        weight_decay=weight_decay,
        use_rslora=config.use_rslora,
    )


class RiemannianOptions(Options):
    reg: Annotated[float, Field(gt=0, le=1)] = _opt(
        1e-2, "damping added to the r x r preconditioner before it is inverted"
    )


def _riemannian_optimizer(
    model: Any, lr: float, weight_decay: float, options: dict[str, Any]
) -> Any:
    import torch
    from peft.optimizers import create_riemannian_optimizer

    opts = parse_options("riemannian", RiemannianOptions, options)
    return create_riemannian_optimizer(
        model, torch.optim.AdamW, lr=lr, reg=opts.reg, weight_decay=weight_decay
    )


class EvaOptions(Options):
    rho: Annotated[float, Field(ge=1, le=4)] = _opt(
        1.0,
        "rank redistribution: a layer may take up to rank x rho (1: every layer keeps the rank, "
        "so the budget's count holds exactly)",
    )
    tau: Annotated[float, Field(ge=0, le=1)] = _opt(
        0.99, "cosine similarity at which the incremental SVD stops early"
    )


def _eva(settings: AdapterSettings, options: Any) -> Any:
    from peft import EvaConfig

    return _lora(
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
    corda_method: Literal["ipm", "kpm"] = _opt(
        "ipm",
        "'ipm' (instruction-previewed: adapt the directions the data uses most) or 'kpm' "
        "(knowledge-preserved: adapt the least used, keeping what the base knows)",
    )
    batches: Annotated[int, Field(ge=1, le=4096)] = _opt(
        16,
        "training batches whose activations build each layer's covariance (peft suggests "
        "about hidden size / tokens per example x 128 examples)",
    )


def _corda(settings: AdapterSettings, options: Any) -> Any:
    from peft.tuners.lora.config import CordaConfig

    return _lora(
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
    direction: Literal["ArBr", "A2rBr", "ArB2r", "random"] = _opt(
        "ArB2r", "which singular vectors of the gradient go to A and to B"
    )
    scale: Literal["stable", "weight_svd", "gd_scale", "unit"] = _opt(
        "stable", "how the initial A and B are scaled"
    )
    stable_gamma: Annotated[int, Field(ge=1, le=1024)] = _opt(16, "gamma of the 'stable' scaling")
    batches: Annotated[int, Field(ge=1, le=4096)] = _opt(
        8, "training batches whose full-weight gradients are averaged before the SVD"
    )


def _loraga(settings: AdapterSettings, options: Any) -> Any:
    from peft import LoraGAConfig

    return _lora(
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


class KasaOptions(Options):
    beta: Annotated[float, Field(ge=0, le=1)] = _opt(
        1e-4, "weight of the L2 penalty on the trained singular values (paper's value)"
    )
    gamma: Annotated[float, Field(ge=0, le=1)] = _opt(
        1e-3, "weight of the orthogonality penalty on A and B (paper's value)"
    )


def _kasa(settings: AdapterSettings, options: Any) -> Any:
    from peft import KasaConfig

    return _lora(settings, kasa_config=KasaConfig(beta=options.beta, gamma=options.gamma))


def _kasa_penalty(model: Any) -> Any:
    # The paper trains with both regularisers; peft exposes them for the loop to add.
    return model.base_model._get_kasa_loss()


def _below_narrowest(shapes: Any, options: Any) -> Any:
    return range(1, min(min(s) for s in shapes))  # KaSA keeps at least one singular component


# Llama-style names (q/k/v/o, gate/up/down): peft's guideline for which factor is block-diagonal.
BD_A = ["o_proj", "down_proj"]
BD_B = ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"]


class BdLoraOptions(Options):
    nblocks: Annotated[int, Field(ge=1, le=64)] = _opt(
        2, "blocks per block-diagonal factor (the serving shard count); the rank is a multiple"
    )


def _bdlora(settings: AdapterSettings, options: Any) -> Any:
    from peft import BdLoraConfig

    return _lora(
        settings,
        use_bdlora=BdLoraConfig(
            target_modules_bd_a=BD_A,
            target_modules_bd_b=BD_B,
            nblocks=options.nblocks,
            match_strict=False,  # layers outside the Llama names stay plain LoRA
        ),
    )


def _bdlora_ranks(shapes: Any, options: Any) -> Any:
    return multiples_up_to_narrowest(options.nblocks)(shapes, options)


# --------------------------------------------------------------------------- other adapters


class VeraOptions(Options):
    d_initial: Annotated[float, Field(gt=0, le=10)] = _opt(
        0.1, "initial value of the trained scaling vector d"
    )


def _vera(settings: AdapterSettings, options: Any) -> Any:
    from peft import VeraConfig

    return VeraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        vera_dropout=settings.dropout,
        target_modules=settings.target_modules,
        d_initial=options.d_initial,
        save_projection=True,  # the adapter then loads without regenerating the random bases
    )


def _pvera(settings: AdapterSettings, options: Any) -> Any:
    from peft import PveraConfig

    return PveraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        pvera_dropout=settings.dropout,
        target_modules=settings.target_modules,
        d_initial=options.d_initial,
        save_projection=True,
    )


class AdaLoraOptions(Options):
    init_r: Annotated[int, Field(ge=1, le=4096)] | None = _opt(
        None, "rank every layer starts with before pruning (default: 1.5 x the target rank)"
    )
    tinit: Annotated[int, Field(ge=0)] | None = _opt(
        None, "warm-up steps before pruning (default: a tenth of the run)"
    )
    tfinal: Annotated[int, Field(ge=0)] | None = _opt(
        None, "final steps with the allocation frozen (default: a fifth of the run)"
    )
    deltaT: Annotated[int, Field(ge=1)] = _opt(1, "steps between two reallocations")
    orth_reg_weight: Annotated[float, Field(ge=0)] = _opt(
        0.5, "weight of the orthogonality penalty on P and Q"
    )


def _adalora(settings: AdapterSettings, options: Any) -> Any:
    from peft import AdaLoraConfig

    total = settings.total_steps
    # Paper schedule shape: warm up, prune ranks in the middle, then freeze the allocation.
    tinit = options.tinit if options.tinit is not None else max(1, total // 10)
    tfinal = options.tfinal if options.tfinal is not None else max(1, total // 5)
    if tinit >= total - tfinal:
        if options.tinit is not None or options.tfinal is not None:
            raise WhichloraError(
                f"AdaLoRA options tinit={tinit} and tfinal={tfinal} leave no rank-budgeting phase "
                f"in {total} steps. Fix: make tinit + tfinal smaller than training.steps."
            )
        tinit, tfinal = 0, 0  # runs too short for the default schedule: allocate every step
    init_r = options.init_r or max(settings.rank + 1, (3 * settings.rank) // 2)
    return AdaLoraConfig(
        task_type="CAUSAL_LM",
        init_r=init_r,
        target_r=settings.rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        total_step=total,
        tinit=tinit,
        tfinal=tfinal,
        deltaT=options.deltaT,
        orth_reg_weight=options.orth_reg_weight,
    )


def _adalora_allocate(model: Any, global_step: int) -> None:
    # Must run after optimizer.step() and before zero_grad(): it reads the gradients.
    model.base_model.update_and_allocate(global_step)


def _loha(settings: AdapterSettings, options: Any) -> Any:
    from peft import LoHaConfig

    # module_dropout drops the whole adapter of a layer for a step, like LoRA's dropout removes
    # its update's input; rank_dropout (rank components) is a different regulariser.
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


class VbLoraOptions(Options):
    num_vectors: Annotated[int, Field(ge=2, le=65536)] = _opt(
        256, "vectors in the shared bank (the capacity knob a budget solves)"
    )
    vector_length: Annotated[int, Field(ge=1, le=4096)] = _opt(
        32, "length of each bank vector; must divide every targeted layer's width"
    )
    topk: Annotated[int, Field(ge=1, le=16)] = _opt(2, "bank vectors mixed per sub-vector")


def _vblora(settings: AdapterSettings, options: Any) -> Any:
    from peft import VBLoRAConfig

    return VBLoRAConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        num_vectors=options.num_vectors,
        vector_length=options.vector_length,
        topk=options.topk,
        vblora_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


def _randlora(settings: AdapterSettings, options: Any) -> Any:
    from peft import RandLoraConfig

    return RandLoraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        randlora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        save_projection=True,  # loads without regenerating the random bases
    )


def _hira(settings: AdapterSettings, options: Any) -> Any:
    from peft import HiraConfig

    return HiraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        hira_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


def _shira(settings: AdapterSettings, options: Any) -> Any:
    from peft import ShiraConfig

    # The mask is drawn from the run's seeded torch RNG (seed_everything before the adapter).
    return ShiraConfig(
        task_type="CAUSAL_LM", r=settings.rank, target_modules=settings.target_modules
    )


class MissOptions(Options):
    variant: Literal["default", "bat", "mini"] = _opt(
        "default", "MiSS ('default'), its Bat variant, or the mini variant (mini_r)"
    )
    mini_r: Annotated[int, Field(ge=1, le=4096)] = _opt(
        1, "mini variant: shard rows shared; must divide the out width"
    )


def _miss(settings: AdapterSettings, options: Any) -> Any:
    from peft import MissConfig

    return MissConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        miss_dropout=settings.dropout,
        mini_r=options.mini_r,
        init_weights=True if options.variant == "default" else options.variant,
        target_modules=settings.target_modules,
    )


class DeloraOptions(Options):
    delora_lambda: Annotated[float, Field(gt=0, le=1000)] = _opt(
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


class GraloraOptions(Options):
    gralora_k: Annotated[int, Field(ge=1, le=16)] = _opt(
        2, "blocks per side (k x k sub-blocks); the rank is a multiple of k"
    )


def _gralora(settings: AdapterSettings, options: Any) -> Any:
    from peft import GraloraConfig

    return GraloraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        alpha=settings.lora_alpha,
        gralora_k=options.gralora_k,
        gralora_dropout=settings.dropout,
        target_modules=settings.target_modules,
    )


def _gralora_ranks(shapes: Any, options: Any) -> Any:
    return multiples_up_to_narrowest(options.gralora_k)(shapes, options)


class TinyLoraOptions(Options):
    u: Annotated[int, Field(ge=1, le=65536)] = _opt(
        64, "trained vector length per layer (the capacity knob a budget solves)"
    )


def _tinylora(settings: AdapterSettings, options: Any) -> Any:
    from peft import TinyLoraConfig

    return TinyLoraConfig(
        task_type="CAUSAL_LM",
        r=settings.rank,
        u=options.u,
        tinylora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        save_projection=True,
    )


class C3aOptions(Options):
    block_size: Annotated[int, Field(ge=1, le=65536)] = _opt(
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
    n_frequency: Annotated[int, Field(ge=1)] = _opt(
        1000, "spectral coefficients trained per layer (the capacity knob a budget solves)"
    )
    scaling: Annotated[float, Field(gt=0, le=10000)] = _opt(
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
    n_frequency: Annotated[int, Field(ge=1)] = _opt(
        1000,
        "wavelet coefficients trained per layer (the capacity knob a budget solves; peft's "
        "2592 is sized for SDXL, 1000 is FourierFT's default here)",
    )
    scaling: Annotated[float, Field(gt=0, le=10000)] = _opt(
        25.0, "scale of the reconstructed update, like LoRA's alpha"
    )
    wavelet_family: Literal["db1", "db2", "db3", "sym2", "sym3", "coif1"] = _opt(
        "db1", "wavelet of the inverse transform (db1: Haar, the shortest filter)"
    )
    use_idwt: bool = _opt(
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


_ENTRIES = [
    Technique(
        "lora",
        "Low-rank update BA added to frozen weights, scaled by alpha/r (the baseline).",
        "Hu et al. 2021, LoRA: Low-Rank Adaptation of Large Language Models, arXiv:2106.09685",
        _lora,
    ),
    Technique(
        "rslora",
        "LoRA scaled by alpha/sqrt(r), so higher ranks keep learning instead of collapsing.",
        "Kalajdzievski 2023, A Rank Stabilization Scaling Factor for Fine-Tuning with LoRA, "
        "arXiv:2312.03732",
        lambda s, o: _lora(s, use_rslora=True),
    ),
    Technique(
        "dora",
        "Weight-decomposed LoRA: a trained magnitude vector times a LoRA-updated direction.",
        "Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation, arXiv:2402.09353",
        lambda s, o: _lora(s, use_dora=True),
    ),
    Technique(
        "vera",
        "Frozen shared random low-rank matrices; only per-layer scaling vectors are trained.",
        "Kopiczko et al. 2024, VeRA: Vector-based Random Matrix Adaptation, arXiv:2310.11454",
        _vera,
        options=VeraOptions,
    ),
    Technique(
        "adalora",
        "SVD-form LoRA whose rank budget is reallocated across layers during training.",
        "Zhang et al. 2023, AdaLoRA: Adaptive Budget Allocation for Parameter-Efficient "
        "Fine-Tuning, arXiv:2303.10512",
        _adalora,
        options=AdaLoraOptions,
        after_optimizer_step=_adalora_allocate,
    ),
    Technique(
        "pissa",
        "LoRA initialised from the principal singular vectors of W; the residual stays frozen.",
        "Meng et al. 2024, PiSSA: Principal Singular Values and Singular Vectors Adaptation, "
        "arXiv:2404.02948",
        lambda s, o: _lora(s, init_lora_weights=o.init),
        options=PissaOptions,
        rewrites_base=True,
    ),
    Technique(
        "olora",
        "LoRA initialised from a QR decomposition of W (orthonormal A), base shifted to match.",
        "Büyükakyüz 2024, OLoRA: Orthonormal Low-Rank Adaptation of Large Language Models, "
        "arXiv:2406.01775",
        lambda s, o: _lora(s, init_lora_weights="olora"),
        rewrites_base=True,
    ),
    Technique(
        "loraplus",
        "LoRA with a higher learning rate for B than for A (ratio 16 by default).",
        "Hayou et al. 2024, LoRA+: Efficient Low Rank Adaptation of Large Models, arXiv:2402.12354",
        _lora,
        options=LoraPlusOptions,
        make_optimizer=_loraplus_optimizer,
    ),
    Technique(
        "loha",
        "Low-rank Hadamard product of two LoRA pairs (LyCORIS), higher effective rank.",
        "Hyeon-Woo et al. 2022, FedPara: Low-Rank Hadamard Product for Communication-Efficient "
        "Federated Learning, arXiv:2108.06098",
        _loha,
    ),
    Technique(
        "lokr",
        "Kronecker product of a small matrix and a low-rank matrix (LyCORIS).",
        "Yeh et al. 2024, Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to "
        "Model Evaluation, arXiv:2309.14859",
        _lokr,
        # peft stores a Kronecker factor whole once the rank reaches half its width: fewer
        # parameters than the rank below, so the count is not monotonic in the rank.
        knob=Knob("rank", up_to_narrowest, trend="any", help=RANK.help),
    ),
    Technique(
        "orthogonal",
        "LoRA with A and B drawn from halves of one random orthogonal matrix (B is not zero: "
        "the adapter starts slightly off the base).",
        "Datta 2024, Rethinking LoRA initialisation (orthogonal initialisation), "
        "https://datta0.github.io/posts/rethink-lora-init/ (peft init_lora_weights='orthogonal')",
        lambda s, o: _lora(s, init_lora_weights="orthogonal"),
        knob=Knob("rank", multiples_up_to_narrowest(2), help="rank of the update; even"),
    ),
    Technique(
        "eva",
        "LoRA whose A is initialised from the SVD of the run's own training activations.",
        "Paischer et al. 2024, One Initialization to Rule them All: Fine-tuning via Explained "
        "Variance Adaptation, arXiv:2410.07170",
        _eva,
        options=EvaOptions,
        prepare=_eva_prepare,
    ),
    Technique(
        "corda",
        "LoRA initialised from a context-oriented SVD of W times the covariance of the run's "
        "own training activations; the base keeps the residual.",
        "Yang et al. 2024, CorDA: Context-Oriented Decomposition Adaptation of Large Language "
        "Models for Task-Aware Parameter-Efficient Fine-tuning, arXiv:2406.05223",
        _corda,
        options=CordaOptions,
        preprocess=_corda_preprocess,
        rewrites_base=True,
    ),
    Technique(
        "loraga",
        "LoRA initialised from the SVD of the full weights' gradient on the run's own training "
        "batches, so its first step follows full fine-tuning; the base is shifted to match.",
        "Wang et al. 2024, LoRA-GA: Low-Rank Adaptation with Gradient Approximation, "
        "arXiv:2407.05000",
        _loraga,
        options=LoraGaOptions,
        preprocess=_loraga_preprocess,
        rewrites_base=True,
    ),
    Technique(
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
    ),
    Technique(
        "lorafa",
        "LoRA with A frozen at its random init; only B is trained, by peft's LoRA-FA optimizer "
        "(the count includes the frozen A, which the optimizer never updates).",
        "Zhang et al. 2023, LoRA-FA: Memory-efficient Low-rank Adaptation for Large Language "
        "Models Fine-tuning, arXiv:2308.03303",
        _lora,
        make_optimizer=_lorafa_optimizer,
    ),
    Technique(
        "riemannian",
        "LoRA trained with an r x r Riemannian preconditioner on A's and B's gradients.",
        "Zhang & Pilanci 2024, Riemannian Preconditioned LoRA for Fine-Tuning Foundation "
        "Models, arXiv:2402.02347",
        _lora,
        options=RiemannianOptions,
        make_optimizer=_riemannian_optimizer,
    ),
    Technique(
        "bdlora",
        "LoRA with one factor block-diagonal per layer (A for o/down, B for q/k/v/gate/up), "
        "so tensor-parallel serving needs no extra communication.",
        "Wang et al. 2025, Block-Diagonal LoRA for Eliminating Communication Overhead in Tensor "
        "Parallel LoRA Serving (peft BdLoraConfig)",
        _bdlora,
        options=BdLoraOptions,
        knob=Knob("rank", _bdlora_ranks, help="rank of the update; a multiple of nblocks"),
    ),
    Technique(
        "pvera",
        "VeRA with a probabilistic (sampled) scaling of the shared random bases.",
        "Fein-Ashley et al. 2025, PVeRA: Probabilistic Vector-Based Random Matrix Adaptation, "
        "arXiv:2512.07703",
        _pvera,
        options=VeraOptions,
    ),
    Technique(
        "vblora",
        "Every low-rank factor is a top-k mix of vectors from one shared, trained vector bank.",
        "Li et al. 2024, VB-LoRA: Extreme Parameter Efficient Fine-Tuning with Vector Banks, "
        "arXiv:2405.15179",
        _vblora,
        options=VbLoraOptions,
        knob=Knob(
            "num_vectors",
            lambda shapes, o: range(max(2, o.topk), 65537),
            help="vectors in the shared bank",
        ),
    ),
    Technique(
        "randlora",
        "Full-rank update from many frozen random low-rank bases; only their diagonal "
        "scalings are trained (a larger r means fewer bases, so fewer parameters).",
        "Albert et al. 2025, RandLoRA: Full-rank parameter-efficient fine-tuning of large "
        "models, arXiv:2502.00987",
        _randlora,
        # Fewer, larger bases as r rises, but peft rounds the basis count up per layer, so the
        # count falls only roughly: every rank is counted.
        knob=Knob("rank", up_to_narrowest, trend="any", help="rank of each random basis"),
    ),
    Technique(
        "hira",
        "Hadamard product of W with a low-rank BA: a high-rank update from LoRA's parameters.",
        "Huang et al. 2025, HiRA: Parameter-Efficient Hadamard High-Rank Adaptation for Large "
        "Language Models, ICLR 2025, https://openreview.net/forum?id=TwJrTz9cRS",
        _hira,
    ),
    Technique(
        "shira",
        "Sparse high-rank adapter: a fixed random mask of W's entries is trained, as many as "
        "LoRA at rank r would train.",
        "Bhardwaj et al. 2024, Sparse High Rank Adapters, arXiv:2406.13175",
        _shira,
        knob=Knob(
            "rank",
            lambda shapes, _: range(1, min(i * o // (i + o) for i, o in shapes) + 1),
            help="sparsity given as the LoRA rank of equal count",
        ),
    ),
    Technique(
        "miss",
        "Matrix shard sharing: one small trained shard is expanded over each weight (ex-Bone).",
        "Kang & Yin 2024, MiSS: Balancing LoRA Performance and Efficiency with Simple Shard "
        "Sharing, arXiv:2409.15371",
        _miss,
        options=MissOptions,
        knob=Knob("rank", up_to_narrowest, help="shard size; must divide the in width"),
    ),
    Technique(
        "delora",
        "LoRA whose update is normalised and given a trained bounded strength (angle and "
        "strength decoupled).",
        "Bini et al. 2025, Decoupling Angles and Strength in Low-rank Adaptation, arXiv:2503.18225",
        _delora,
        options=DeloraOptions,
    ),
    Technique(
        "gralora",
        "Granular LoRA: the weight is split into k x k blocks, each with its own small LoRA.",
        "Jung et al. 2025, GraLoRA: Granular Low-Rank Adaptation for Parameter-Efficient "
        "Fine-Tuning, arXiv:2505.20355",
        _gralora,
        options=GraloraOptions,
        knob=Knob("rank", _gralora_ranks, help="total rank; a multiple of gralora_k"),
    ),
    Technique(
        "tinylora",
        "A tiny trained vector per layer projected through fixed random tensors onto a "
        "truncated SVD of W.",
        "Morris et al. 2026, Learning to Reason in 13 Parameters, arXiv:2602.04118",
        _tinylora,
        options=TinyLoraOptions,
        knob=Knob("u", up_to(65536), help="trained vector length per layer"),
    ),
    Technique(
        "c3a",
        "Circular-convolution adapter: block-circulant updates computed by FFT.",
        "Chen et al. 2024, Parameter-Efficient Fine-Tuning via Circular Convolution, "
        "arXiv:2407.19342",
        _c3a,
        options=C3aOptions,
        knob=Knob("block_size", common_divisors, trend="falls", help="circulant block size"),
        uses_rank=False,
    ),
    Technique(
        "fourierft",
        "A few trained spectral coefficients per layer, turned into the update by inverse DFT.",
        "Gao et al. 2024, Parameter-Efficient Fine-Tuning with Discrete Fourier Transform, "
        "arXiv:2405.03003",
        _fourierft,
        options=FourierOptions,
        knob=Knob("n_frequency", up_to_smallest_matrix, help="spectral coefficients per layer"),
        uses_rank=False,
    ),
    Technique(
        "waveft",
        "A few trained wavelet coefficients per layer at random positions, turned into the "
        "update by an inverse discrete wavelet transform.",
        "Bilican et al. 2025, Exploring Sparsity for Parameter Efficient Fine Tuning Using "
        "Wavelets, arXiv:2505.12532",
        _waveft,
        options=WaveFtOptions,
        knob=Knob("n_frequency", up_to_smallest_matrix, help="wavelet coefficients per layer"),
        uses_rank=False,
    ),
]

REGISTRY: dict[str, Technique] = {t.name: t for t in _ENTRIES}


def get_technique(name: str) -> Technique:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WhichloraError(
            f"Unknown technique '{name}'. Fix: use one of {', '.join(REGISTRY)} "
            "(`whichlora techniques` lists them)."
        ) from None
