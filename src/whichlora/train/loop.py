"""One training run: (base, technique, data, seed) -> a saved PEFT adapter and its log.

The loop is one function to read top to bottom. What differs per technique is explicit in it:
EVA initialises from the run's own batches before training (CorDA and LoRA-GA before the
adapter is even built), LoRA+ (LoRA-FA, Riemannian) brings its own optimizer, AdaLoRA reallocates
ranks after every optimizer step, and PiSSA/OLoRA/CorDA/LoRA-GA rewrite base weights at init, so
their adapter is converted on save to load on an untouched base.

A long run can resume inside itself: with `checkpoint_every` it saves a checkpoint every N
optimizer steps beside its folder (see `whichlora.train.checkpoint`), and a later call on the same
folder goes on from the last one and ends with exactly the adapter and loss curve of an
uninterrupted run.
"""

from __future__ import annotations

import math
import platform
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Any

from whichlora.data.records import Record
from whichlora.errors import TrainingDiverged, WhichloraError
from whichlora.models.introspect import pad_id as pad_token
from whichlora.models.loading import LoadedModel, load_model
from whichlora.models.precision import resolve_precision
from whichlora.paths import atomic_directory, write_json_atomic
from whichlora.store.names import ADAPTER_DIR, LOG_FILE
from whichlora.techniques.budget import settings_for_request
from whichlora.techniques.registry import get_technique
from whichlora.train.batching import (
    collate,
    collate_packed,
    grouped_batches,
    packed_rows,
    packing_width,
)
from whichlora.train.checkpoint import (
    Checkpointer,
    file_digest,
    remove_own_scratch,
    request_fingerprint,
)
from whichlora.train.compiling import CompilePolicy, compiled_layers
from whichlora.train.curve import validation_nll
from whichlora.train.distributed import SINGLE, World, train_in_processes
from whichlora.train.dropout import use_sparse_dropout
from whichlora.train.loss import (
    batch_losses,
    check_packing,
    head_on_label_positions,
    labelled_tokens,
    real_tokens,
)
from whichlora.train.memory import PeakMemory
from whichlora.train.precision import (
    autocast,
    float32_attention,
    grad_scaler,
    half_frozen_linears,
)
from whichlora.train.prompting import encode_records
from whichlora.train.request import TrainRequest
from whichlora.train.tracking import StepTrackers


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def library_versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    from whichlora.version import __version__

    return {
        "whichlora": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def _default_optimizer(model: Any, lr: float, weight_decay: float) -> Any:
    """AdamW over the trainable parameters, one multi-tensor update per step (`foreach`): the
    same values as the per-parameter loop to the bit, without a few kernels per adapter matrix."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def enable_activation_checkpointing(model: Any) -> None:
    """Non-reentrant checkpointing of every decoder layer (transformers 5 renamed the call)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _linear_schedule(optimizer: Any, warmup: int, total: int) -> Any:
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, warmup, total)


def train_adapter(
    request: TrainRequest,
    records: list[Record],
    out_dir: Path,
    *,
    loaded: LoadedModel | None = None,
    on_step: Callable[[int, float], None] | None = None,
    world: World | None = None,
    validation: Sequence[Record] = (),
) -> dict[str, Any]:
    """Train and save `out_dir/adapter` plus `out_dir/train_log.json`; return the log.

    `loaded` must be a freshly loaded base: the adapter is injected into it in place.
    The output folder appears whole or not at all.

    With `request.checkpoint_every`, a checkpoint is saved beside `out_dir` every N optimizer
    steps; a call after a kill resumes from the last one (calling `on_step` for the restored
    steps first, so progress counts from 0) and ends exactly as an uninterrupted run. The
    checkpoint is removed once the adapter is saved.

    With `request.processes` > 1 the run is started as that many processes (train/distributed.py,
    each one calls this with its `world`); only the first writes anything.

    With `request.validate_every`, the mean NLL of the `validation` records is logged with
    every N-th step and the last (train/curve.py): the learning curve.
    """
    import torch
    from peft import get_peft_model

    if request.processes > 1 and world is None:
        return train_in_processes(
            request, records, out_dir, on_step, train_adapter, validation=validation
        )
    world = world or SINGLE
    memory = PeakMemory()  # this run's own peaks, not the process's so far (train/memory.py)
    if request.threads:
        torch.set_num_threads(request.threads)
    technique = get_technique(request.technique)
    report_to = request.report_to if world.main else ()
    tracking = StepTrackers(report_to, out_dir, request.run_name, request.__dict__)
    seed_everything(request.seed)
    base = loaded or load_model(
        request.model,
        dtype=request.dtype,
        trust_remote_code=request.trust_remote_code,
        allow_pickle=request.allow_pickle,
        device=world.device(request.device),
        device_map=request.device_map,
    )
    model, tokenizer = base.model, base.tokenizer
    examples = encode_records(tokenizer, records, request.max_length, request.response_only_loss)
    if not examples:
        raise WhichloraError(
            "No training example has a response left after truncation. Fix: raise "
            "training.max_length or check the data source."
        )
    settings, budget = settings_for_request(model.config, technique, request)
    if world.main:
        remove_own_scratch(out_dir)  # what a killed attempt left: only its checkpoint is kept
    checkpoints = Checkpointer(
        out_dir,
        request.checkpoint_every,
        request.steps,
        lambda: request_fingerprint(request, examples, library_versions()),
        technique.step_state,
    )
    seed_everything(request.seed)  # adapter init draws from the RNG: same seed, same init
    if request.gradient_checkpointing:
        # Non-reentrant checkpointing: gradients reach the adapter although the frozen embedding
        # output does not require grad (no `enable_input_require_grads` needed), and dropout
        # masks are replayed in the recomputation (RNG state preserved): same gradients.
        enable_activation_checkpointing(model)
    pad_id = pad_token(tokenizer)
    curve_examples = (
        encode_records(tokenizer, list(validation), request.max_length, request.response_only_loss)
        if request.validate_every and world.main
        else []
    )
    global_batch = request.batch_size * world.size  # per micro-batch, over the processes
    output = atomic_directory(out_dir) if world.main else nullcontext(None)
    with output as scratch, tracking, ExitStack() as training_only:
        config = technique.build_config(settings)
        prepare_seconds = 0.0
        if technique.preprocess is not None:
            # Data-driven init before the adapter exists (CorDA, LoRA-GA): statistics of the base
            # on this run's own training batches, in the order its seed gives them; timed. Every
            # process computes the same init from the whole global batches.
            prepare_start = time.perf_counter()
            base_device = next(model.parameters()).device
            stream = grouped_batches(examples, global_batch, request.seed)
            technique.preprocess(
                model,
                config,
                ({k: v.to(base_device) for k, v in collate(b, pad_id).items()} for b in stream),
                technique.parse_options(settings.options),
            )
            prepare_seconds = time.perf_counter() - prepare_start
            seed_everything(request.seed)  # the adapter's init draws the same as without it
        model = get_peft_model(model, config)
        if technique.after_build is not None:  # DoRA: its weight norm without full-size copies
            technique.after_build(model)
        if request.sparse_dropout:  # same masks in law, ~p as many random numbers (dropout.py)
            use_sparse_dropout(model)
        device = next(p.device for p in model.parameters() if p.requires_grad)
        precision = resolve_precision(request.precision, device.type)
        scaler = grad_scaler(precision, device.type)  # fp16 only; passes through otherwise
        # bf16 on CPU: attention in float32 for the steps (train/precision.py), undone after
        training_only.enter_context(float32_attention(model, precision, device.type))
        if technique.prepare is not None:
            # Data-driven init (EVA): statistics from this run's own training batches, in the
            # order its seed gives them; the time is part of the run's cost. Every process
            # computes the same init from the whole global batches.
            prepare_start = time.perf_counter()
            stream = grouped_batches(examples, global_batch, request.seed)
            technique.prepare(
                model,
                ({k: v.to(device) for k, v in collate(b, pad_id).items()} for b in stream),
                technique.parse_options(settings.options),
            )
            prepare_seconds += time.perf_counter() - prepare_start
        if technique.rewrites_base:
            # Keep the initial adapter so the trained one can be converted to plain LoRA form
            # that applies to the untouched base (PEFT's conversion on save). The initial copy
            # must say init=True; the live config keeps the technique's init for the log.
            # Other processes save theirs aside, only for its digest (same init everywhere).
            initial = scratch / "initial" if world.main else Path(tempfile.mkdtemp()) / "initial"
            config = model.peft_config["default"]
            init, config.init_lora_weights = config.init_lora_weights, True
            model.save_pretrained(initial)
            config.init_lora_weights = init
            # A checkpoint continues this init only: same initial adapter, same rewritten base.
            checkpoints.initial_digest = file_digest(initial / "adapter_model.safetensors")
            if not world.main:
                shutil.rmtree(initial.parent)
        model.train()
        model.config.use_cache = False  # a KV cache is built and thrown away at every step
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

        # Per-technique optimizer: LoRA+ scales B's learning rate; others use plain AdamW.
        if technique.make_optimizer is not None:
            optimizer = technique.make_optimizer(
                model, request.learning_rate, request.weight_decay, settings.options
            )
        else:
            optimizer = _default_optimizer(model, request.learning_rate, request.weight_decay)
        warmup = round(request.warmup_ratio * request.steps)
        scheduler = _linear_schedule(optimizer, warmup, request.steps)
        if request.packing:  # rows of whole examples side by side (train/batching.py)
            check_packing(model)
            width = packing_width(examples)
            batches: Any = packed_rows(examples, global_batch, request.seed)
        else:
            batches = grouped_batches(examples, global_batch, request.seed)

        def tensors(share: list[Any]) -> dict[str, Any]:
            if request.packing:
                return collate_packed(share, pad_id, width)
            return collate(share, pad_id)

        # bf16/fp16: the frozen linear weights cast once, not at every forward (same results)
        training_only.enter_context(half_frozen_linears(model, precision))
        label_positions_only = head_on_label_positions(model)
        forward = world.wrap(model)  # DDP across processes (accelerate); the model alone
        compiling = CompilePolicy(
            request.compile, request.steps, device.type, request.gradient_checkpointing
        )

        steps: list[dict[str, Any]] = []
        first, wall_before = 0, 0.0
        resumed = checkpoints.restore(model, optimizer, scheduler, scaler)  # last: sets RNGs
        if resumed is not None:
            first, wall_before, steps = resumed.step, resumed.wall_seconds, resumed.rows
            for _ in range(first * request.grad_accum):  # the data order goes on where it was
                next(batches)
            if on_step is not None:  # the restored steps too: progress counts from step 1
                for row in steps:
                    on_step(row["step"], row["loss"])
        tokens_seen = sum(row["tokens"] for row in steps)
        started = time.perf_counter()
        for step in range(first, request.steps):
            if compiling.due(step, step - first, time.perf_counter() - started):
                # the decoder blocks compiled from here on (train/compiling.py); undone after
                training_only.enter_context(compiled_layers(model, request.packing))
            step_start = time.perf_counter()
            lr_now = optimizer.param_groups[0]["lr"]
            # The step's loss is the sum of token losses over its whole global batch (every
            # micro-batch, every process) divided by the labelled tokens in it: each labelled
            # token weighs the same, however the sequences fall into micro-batches.
            micro = [world.shard(next(batches)) for _ in range(request.grad_accum)]
            batches_now = [tensors(share) for share, _ in micro]
            labelled = [  # counted on the host batches: no device sync
                labelled_tokens(b) if real else 0
                for b, (_, real) in zip(batches_now, micro, strict=True)
            ]
            (global_labelled,) = world.sum([float(sum(labelled))])
            step_tokens = sum(real_tokens(share) for share, real in micro if real)
            losses = []  # (objective, cross-entropy) of each micro-batch, weighted, on device
            for index, cpu_batch in enumerate(batches_now):
                batch = {k: v.to(device) for k, v in cpu_batch.items()}
                weight = world.token_weight(labelled[index], int(global_labelled))
                with world.no_sync(forward, last=index == len(micro) - 1):
                    with autocast(precision, device.type):
                        objective, cross_entropy = batch_losses(
                            model, batch, label_positions_only, forward
                        )
                        if technique.penalty is not None:  # KaSA's regularisers: objective only
                            objective = objective + technique.penalty(model)
                    scaler.scale(objective * weight).backward()
                share = labelled[index] / global_labelled
                losses.append(torch.stack([objective.detach(), cross_entropy]).double() * share)
            scaler.unscale_(optimizer)  # fp16: clip and AdaLoRA see true gradients
            norm = torch.nn.utils.clip_grad_norm_(
                [p for p in model.parameters() if p.requires_grad], request.max_grad_norm
            )
            # the step's one host sync: its losses and gradient norm read together
            total_objective, total_loss, grad_norm = torch.cat(
                [sum(losses).cpu(), norm.reshape(1).double().cpu()]
            ).tolist()
            total_objective, total_loss, tokens = world.sum(
                [total_objective, total_loss, float(step_tokens)]
            )
            step_tokens = int(tokens)
            for value in (total_objective, total_loss):
                if not math.isfinite(value):
                    if world.main:
                        checkpoints.remove()  # a final outcome: a retry would diverge again
                    raise TrainingDiverged(f"loss became {value} at step {step + 1}")
            scaler.step(optimizer)  # fp16: skipped when a gradient overflowed
            scaler.update()
            # AdaLoRA: reallocate the rank budget; reads gradients, so before zero_grad. It gets
            # the optimizer steps taken so far (1..steps): AdaLoRA fixes the final allocation at
            # global step total_step - tfinal, which a 0-based count never reaches if tfinal is 0.
            if technique.after_optimizer_step is not None:
                technique.after_optimizer_step(model, step + 1)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            tokens_seen += step_tokens
            steps.append(
                {
                    "step": step + 1,
                    "loss": total_loss,  # cross-entropy: comparable across techniques
                    "objective": total_objective,  # what the optimizer minimised
                    "lr": lr_now,
                    "grad_norm": grad_norm,
                    "tokens": step_tokens,
                    "labelled": int(global_labelled),
                    "seconds": time.perf_counter() - step_start,
                }
            )
            if curve_examples and (
                (step + 1) % request.validate_every == 0 or step + 1 == request.steps
            ):  # the learning curve (train/curve.py), outside the step's own seconds
                steps[-1]["validation_nll"] = validation_nll(
                    model, curve_examples, pad_id, request.batch_size, precision
                )
            attempt = time.perf_counter() - started
            if world.main and checkpoints.due(step + 1, attempt):
                checkpoints.save(
                    step + 1, model, optimizer, scheduler, steps, wall_before + attempt, scaler
                )
            tracking.log(steps[-1])  # a no-op outside the first process
            if on_step is not None:
                on_step(step + 1, total_loss)
        wall = wall_before + time.perf_counter() - started + prepare_seconds
        training_only.close()  # the model saved and handed back is as it was loaded

        if not world.main:
            return {}  # the first process saves the adapter and the log
        model.eval()
        adapter_dir = scratch / ADAPTER_DIR
        if technique.rewrites_base:
            model.save_pretrained(
                adapter_dir, path_initial_model_for_weight_conversion=str(scratch / "initial")
            )
            shutil.rmtree(scratch / "initial")
        else:
            model.save_pretrained(adapter_dir)
        adapter_bytes = sum(f.stat().st_size for f in adapter_dir.rglob("*") if f.is_file())
        log = {
            "technique": request.technique,
            "seed": request.seed,
            "request": {**request.__dict__, "precision": precision},
            "budget": {**budget, "trainable_params_measured": trainable},
            "adapter_config": model.peft_config["default"].to_dict(),
            "steps": steps,
            "summary": {
                "steps": request.steps,
                "examples": len(examples),
                "first_loss": steps[0]["loss"],
                "final_loss": steps[-1]["loss"],
                # single steps jump with each batch's languages and lengths: the trend is the
                # mean over the first and last quarter of the steps
                "start_loss": _mean_loss(steps[: max(1, len(steps) // 4)]),
                "end_loss": _mean_loss(steps[-max(1, len(steps) // 4) :]),
                "wall_seconds": wall,  # includes a data-driven init's prepare_seconds
                "prepare_seconds": prepare_seconds,
                "seconds_per_step": wall / request.steps,
                "tokens_per_second": tokens_seen / wall if wall > 0 else 0.0,
                **memory.read(),  # peak_rss_mb, peak_gpu_mb
                "adapter_bytes": adapter_bytes,
                "threads": torch.get_num_threads(),
                "processes": world.size,
                "global_batch": global_batch * request.grad_accum,
                "compiled": compiling.compiled,
            },
            "versions": library_versions(),
        }
        write_json_atomic(scratch / LOG_FILE, _jsonable(log))
    checkpoints.remove()  # the adapter is saved: nothing to resume any more
    return log


def _mean_loss(steps: list[dict[str, Any]]) -> float:
    return sum(s["loss"] for s in steps) / len(steps)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
