"""Regional compilation (`training.compile`): torch.compile on each repeated decoder block.

A step on a small model is mostly element-wise work between the matmuls (norms, rotary
embeddings, activations, the adapters' dropout and scaling, autocast's casts); compiled, each
block's chain of them runs as a few fused kernels. Only the decoder block is compiled -- every
layer is the same code, so the block is compiled once and reused by all of them -- while the
embedding, the mask, the LM head and the loss stay eager.

Compiling costs time up front (minutes on a 2-core CPU, seconds once the compile cache under
`WHICHLORA_CACHE` holds the block), so `auto` decides from the run's own first steps: it compiles
only when the rest of the run, at the speed measured so far, is long enough that the saving pays
the compilation back. A short run (the quickstart) never compiles.

The results equal eager ones within bf16 rounding (tests/test_compile.py): dropout draws its
masks with eager's generator (`fallback_random`), so the same seed gives the same masks.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from whichlora.paths import cache_dir

AUTO = "auto"
AUTO_MEASURED_STEPS = 3  # eager steps timed before `auto` decides
# What compiling the block costs (a cold cache, 2 CPU cores: BENCHMARKS.md, long runs) and the
# share of a step it saves; `auto` compiles when the saving over the remaining steps exceeds
# the cost with margin.
COMPILE_SECONDS = {"cpu": 240.0, "cuda": 90.0}
STEP_SAVING = 0.25
MARGIN = 2.0
RECOMPILE_LIMIT = 32


def repeated_blocks(model: Any) -> list[Any]:
    """The model's repeated decoder blocks: the modules whose class transformers names as not
    to be split across devices (`_no_split_modules`, e.g. LlamaDecoderLayer)."""
    from whichlora.models.introspect import unwrap_peft

    base = unwrap_peft(model)
    names = set(getattr(base, "_no_split_modules", None) or ())
    return [m for m in base.modules() if type(m).__name__ in names]


def can_compile(device_type: str) -> bool:
    """Whether torch.compile has what it needs here: a C++ compiler on CPU, Triton on CUDA."""
    if device_type == "cpu":
        return any(
            shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if c
        )
    if device_type == "cuda":
        from torch.utils._triton import has_triton

        return bool(has_triton())
    return False


class CompilePolicy:
    """When a run compiles: before its first step (`True`), never (`False`), or, for `auto`,
    after its first `AUTO_MEASURED_STEPS` eager steps if the remaining steps at their measured
    speed save more than compiling costs."""

    def __init__(
        self, setting: bool | str, total_steps: int, device_type: str, checkpointing: bool
    ) -> None:
        self.setting = setting
        self.total_steps = total_steps
        self.device_type = device_type
        self.decided = setting is False or (
            setting == AUTO and (checkpointing or not can_compile(device_type))
        )
        self.compiled = False

    def due(self, step: int, done: int, seconds: float) -> bool:
        """True once, when the blocks are to be compiled before optimizer step `step` (0-based);
        `done` steps of this attempt took `seconds`."""
        if self.decided:
            return False
        if self.setting is True:
            self.decided = self.compiled = True
            return True
        if done < AUTO_MEASURED_STEPS:
            return False
        self.decided = True
        saving = (self.total_steps - step) * seconds / done * STEP_SAVING
        self.compiled = saving > MARGIN * COMPILE_SECONDS.get(self.device_type, 240.0)
        return self.compiled


@contextmanager
def eager_layers(model: Any) -> Iterator[None]:
    """Run the repeated blocks eager while the context lasts (compiled again after): for the
    occasional forward of another kind, which would otherwise compile the blocks again."""
    blocks = repeated_blocks(model)
    kept = [block._compiled_call_impl for block in blocks]
    for block in blocks:
        block._compiled_call_impl = None
    try:
        yield
    finally:
        for block, compiled in zip(blocks, kept, strict=True):
            block._compiled_call_impl = compiled


@contextmanager
def compiled_layers(model: Any, static_shapes: bool = False) -> Iterator[int]:
    """Compile every repeated block in place while the context lasts (yields how many); undone
    after, so the model handed back is the eager one. A batch's rows and length vary from step
    to step, so the block is compiled for any shape at once; packed rows keep one shape all run
    (`static_shapes`: compiled for it, dynamic only where shapes differ between the layers).

    The process's compiled frames are cleared on entry and exit: each run compiles for its own
    technique's layers (from the on-disk cache under WHICHLORA_CACHE when it holds them, unless
    TORCHINDUCTOR_CACHE_DIR says where), and a study's earlier runs never use up the recompile
    limit (past it torch would quietly run the block eager)."""
    import torch._dynamo
    import torch._inductor.config as inductor

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir() / "inductor"))
    blocks = repeated_blocks(model)
    kept = inductor.fallback_random, torch._dynamo.config.recompile_limit
    inductor.fallback_random = True  # dropout masks from eager's generator: same seed, same masks
    # the first block's input needs no gradient, the others' do; shapes may turn dynamic once
    torch._dynamo.config.recompile_limit = max(kept[1], RECOMPILE_LIMIT)
    torch._dynamo.reset()
    try:
        for block in blocks:
            block.compile(dynamic=None if static_shapes else True)
        yield len(blocks)
    finally:
        for block in blocks:
            block._compiled_call_impl = None
        inductor.fallback_random, torch._dynamo.config.recompile_limit = kept
        torch._dynamo.reset()
