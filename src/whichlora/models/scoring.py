"""The model that evaluation and embedding score: a fresh base, plus a run's adapter.

Evaluation and embedding both score the base and every run, so the loader lives here, beneath
both stages. `ScoringModels` reads the base from disk once per process and hands out copies: each
run's adapter is merged into its own copy in memory (never into the kept base, since PiSSA and
OLoRA rewrite base weights), so a copy is the same function as a base loaded fresh from disk.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from whichlora.models.precision import FP32, scoring_dtype
from whichlora.store.names import ADAPTER_DIR, BASE


def _load_base(spec: Any, device: str | None = None) -> Any:
    from whichlora.models.loading import load_model

    return load_model(
        spec.id,
        dtype=spec.dtype,
        trust_remote_code=spec.trust_remote_code,
        allow_pickle=spec.allow_pickle,
        device=device or spec.device,
        device_map=spec.device_map,
    )


def _with_adapter(model: Any, adapter_dir: Path | None, merge: bool) -> Any:
    """`model` with the adapter in `adapter_dir` applied (merged into the weights when `merge`).

    Merging computes the same function up to float rounding (~1e-6 relative in float32) and
    makes every technique score at the base model's speed: unmerged, DoRA renormalises its
    weights and VeRA rebuilds its scaled matrices at every forward (BENCHMARKS.md times DoRA's
    evaluation both ways). The merge runs in the weights' own dtype, before any cast to
    the scoring precision, so bf16 scoring rounds the merged weights once."""
    if adapter_dir is None:
        return model
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, adapter_dir)
    if merge:
        model = model.merge_and_unload()
    return model


def _contiguous_input(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    if args and hasattr(args[0], "is_contiguous") and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


def fold_head_matmul(model: Any) -> None:
    """Hand the LM head a contiguous input, so its matmul is one GEMM.

    transformers slices the hidden states before the head (`logits_to_keep`: the scored suffix,
    or the last position in generation); `torch.matmul` folds such a 3-D slice into one GEMM
    only when an operand requires grad, otherwise it runs a batched matmul that first copies the
    head's weight once per row (49152 x 576 for SmolLM2-135M). A run's merged weights are frozen
    by PEFT while the base's are not, which made every run score at under half the base's
    speed (1.26 s against 0.58 s for a 10 x 208-token forward): copying the small slice instead
    costs microseconds and is the same arithmetic."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_whichlora_folds", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._whichlora_folds = True


def _to_precision(model: Any, spec: Any, precision: str) -> Any:
    import torch

    dtype = scoring_dtype(precision, spec.dtype)
    if dtype != spec.dtype:
        model = model.to(getattr(torch, dtype))
    model.eval()
    fold_head_matmul(model)
    return model


def load_scoring_model(
    spec: Any, adapter_dir: Path | None, merge: bool, precision: str = FP32
) -> tuple[Any, Any]:
    """A base freshly loaded from disk (never `disable_adapter()`: PiSSA/OLoRA rewrite base
    weights), plus the adapter in `adapter_dir` when given, merged when `merge`, in `precision`
    (fp32: as loaded; bf16: cast after merging).

    `spec` is the study's model section (id, dtype, trust_remote_code, allow_pickle, device,
    device_map). Studies use `ScoringModels`, which reads the base from disk only once."""
    loaded = _load_base(spec)
    model = _with_adapter(loaded.model, adapter_dir, merge)
    return _to_precision(model, spec, precision), loaded.tokenizer


class ScoringModels:
    """The base read from disk once; `get` hands out a copy of it, with a run's adapter.

    The kept base sits on the CPU and is handed out itself for the base model (scoring only
    reads weights); each run gets a copy, merged, then moved to the study's device. A copy spares
    reading the weights again, which pays where they are not in the page cache (models larger
    than it, slow disks); BENCHMARKS.md has the timings. Models spread over several devices
    (`device_map`) cannot be copied whole: those are loaded fresh for every model.
    """

    def __init__(self, spec: Any, merge: bool, precision: str) -> None:
        self.spec, self.merge, self.precision = spec, merge, precision
        self._base: Any = None
        self._scored_base: Any = None
        self.loads = 0  # reads from disk: what a benchmark or test can count

    def matches(self, spec: Any, merge: bool, precision: str) -> bool:
        return (self.spec, self.merge, self.precision) == (spec, merge, precision)

    def get(self, adapter_dir: Path | None) -> tuple[Any, Any]:
        """(model, tokenizer): the base (adapter_dir None) or base + that adapter."""
        from whichlora.models.loading import resolve_device

        if self.spec.device_map is not None:
            self.loads += 1
            return load_scoring_model(self.spec, adapter_dir, self.merge, self.precision)
        if self._base is None:
            self._base = _load_base(self.spec, device="cpu")
            self.loads += 1
        device = resolve_device(self.spec.device)
        if adapter_dir is None and device == "cpu":
            # Scoring only reads weights: the kept base itself is handed out, no copy (in bf16
            # one cast copy, made once: `.to` casts in place and the kept base must stay fp32).
            if self._scored_base is None:
                cast = scoring_dtype(self.precision, self.spec.dtype) != self.spec.dtype
                base = copy.deepcopy(self._base.model) if cast else self._base.model
                self._scored_base = _to_precision(base, self.spec, self.precision)
            return self._scored_base, self._base.tokenizer
        model = _with_adapter(copy.deepcopy(self._base.model), adapter_dir, self.merge)
        model = _to_precision(model, self.spec, self.precision)
        if device != "cpu":
            model = model.to(device)
        return model, self._base.tokenizer

    def release(self) -> None:
        self._base = self._scored_base = None


_SHARED: list[ScoringModels] = []  # at most one: the study this process is scoring


def shared_scoring_models(spec: Any, merge: bool, precision: str) -> ScoringModels:
    """This process's `ScoringModels` for these settings (a new one when they change): what the
    evaluation and the embedding of one study share."""
    if not (_SHARED and _SHARED[0].matches(spec, merge, precision)):
        release_scoring_models()
        _SHARED.append(ScoringModels(spec, merge, precision))
    return _SHARED[0]


def release_scoring_models() -> None:
    """Free the kept base (its memory) once a study is done with scoring."""
    while _SHARED:
        _SHARED.pop().release()


def run_scoring_model(ctx: Any, run_id: str) -> tuple[Any, Any]:
    """The (model, tokenizer) a study scores and embeds `run_id` as: a copy of the base (read from
    disk once per process), plus the run's adapter from its folder, in the study's pinned
    precision. Evaluation and embedding share it, so a run's vectors come from the very model
    its scores came from."""
    adapter = None if run_id == BASE else ctx.run_dir(run_id) / ADAPTER_DIR
    spec = ctx.study.evaluation
    models = shared_scoring_models(ctx.study.model, spec.merge_adapters, spec.precision)
    return models.get(adapter)
