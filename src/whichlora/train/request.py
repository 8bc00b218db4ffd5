"""What one training run is asked to do: plain values, so a request travels to another process
or a Ray task, and its fields (less those that never change a result) key the run's unit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TrainRequest:
    """Everything one run needs; plain values so it travels to another process or a Ray task."""

    model: str = "builtin:smollm2-135m"
    technique: str = "lora"
    seed: int = 0
    steps: int = 30
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 256
    response_only_loss: bool = True
    rank: int | None = 8
    trainable_params: int | None = None
    fraction: float | None = None
    alpha: float | None = None
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    options: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    trust_remote_code: bool = False
    allow_pickle: bool = False
    device: str = "auto"
    device_map: str | None = None
    threads: int | None = None
    # A study's "auto" is resolved and pinned when it opens (models/precision.py); a request built
    # by hand trains in float32 unless it says otherwise ("auto" then resolves on the device).
    precision: str = "fp32"
    # Recompute activations in backward instead of storing them: less memory, same gradients
    # (tested), about a third more compute. Never changes a result: not in a key.
    gradient_checkpointing: bool = False
    # Pack whole examples side by side into rows as wide as the longest example, `batch_size`
    # rows per micro-batch (train/batching.py): little padding, more examples per step. Changes
    # which examples share a step, so it is in the train key (unless off, as every earlier run).
    packing: bool = False
    # Adapter dropout masks drawn by the gaps between dropped positions (train/dropout.py): the
    # same distribution from ~p as many random numbers, other masks for the same seed. Keyed
    # when on.
    sparse_dropout: bool = False
    # Every N optimizer steps (and after the last) the mean response NLL of the study's
    # validation examples is logged with the step: the run's learning curve. Evaluated in eval
    # mode with no random draws, so it never changes what is trained: in no key.
    validate_every: int | None = None
    # Regional torch.compile of the decoder blocks (train/compiling.py): True, False or "auto"
    # (only when the run's measured steps say it pays). Same results within bf16 rounding: not
    # in a key.
    compile: bool | str = "auto"
    # N data-parallel processes (train/distributed.py): global batch = batch_size x grad_accum x N.
    processes: int = 1
    # With processes > 1: seconds without progress before the run fails as stalled
    # (train/distributed.py); None waits forever. Never changes a result: in no key.
    stall_timeout: float | None = 1800.0
    # Never changes a result: keys of finished work and checkpoint fingerprints exclude it.
    # N (every N optimizer steps), "auto" (every ~5 minutes once a run is estimated to take
    # longer than 10) or None (never).
    checkpoint_every: int | str | None = "auto"
    report_to: tuple[str, ...] = ()  # loggers of every step (train/tracking.py); results unchanged
    run_name: str = ""  # the run's name in those loggers, `<study>/<run_id>`
