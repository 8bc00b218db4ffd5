"""Speed and peak GPU memory of LoRA and DoRA on real architectures, on a machine with no network.

Time and memory do not depend on the weights' values, so the models are randomly initialised from
the architectures' configs written out below (SmolLM2-135M, and a 1B-class Llama shape as in
Llama-3.2-1B): nothing is downloaded. Each case trains a few steps as whichlora trains on a GPU:
base in bfloat16, adapter float32 (PEFT keeps it so), forward under bf16 autocast
(`whichlora.train.precision`), AdamW, with and without non-reentrant gradient checkpointing.
Prints ONE JSON line: per model x technique x checkpointing, steps/s and tokens/s over the timed
steps (after a warm-up step) and the peak allocated GPU memory of that case alone
(`torch.cuda.reset_peak_memory_stats` before it).

Needs only torch, transformers and peft (and `PYTHONPATH=src`):

    scripts/gpu_check.sh                            # CUDA machine
    WHICHLORA_GPU_CHECK_TINY=1 scripts/gpu_check.sh  # tiny shapes on CPU: checks the script
    WHICHLORA_GPU_CHECK_STEPS=10 WHICHLORA_GPU_CHECK_BATCH=4 WHICHLORA_GPU_CHECK_SEQ=1024 ...
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Any

ARCHITECTURES: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M's config.json
    "smollm2-135m": {
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "tie_word_embeddings": True,
        "rope_theta": 100000.0,
    },
    # a Llama-3.2-1B shape
    "llama-1b": {
        "hidden_size": 2048,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
    },
}
TINY = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 512,
}
TECHNIQUES = ("lora", "dora")
RANK = 8


def _setting(name: str, default: int) -> int:
    return int(os.environ.get(f"WHICHLORA_GPU_CHECK_{name}", default))


def build_model(shape: dict[str, Any], device: str, dtype: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(max_position_embeddings=4096, **shape)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in bf16 on the device: no float32 copy in the peak
    try:
        with torch.device(device):
            return LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)


def measure(
    shape: dict[str, Any],
    technique: str,
    checkpointing: bool,
    *,
    device: str,
    precision: str,
    batch: int,
    seq: int,
    steps: int,
) -> dict[str, Any]:
    """One case: build, train `steps` + 1 steps, time the last `steps`."""
    import torch
    from peft import LoraConfig, get_peft_model

    from whichlora.train.precision import autocast, compute_dtype

    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = build_model(shape, device, compute_dtype(precision))
    if checkpointing:
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    config = LoraConfig(
        r=RANK,
        lora_alpha=2 * RANK,
        lora_dropout=0.05,
        target_modules="all-linear",
        use_dora=technique == "dora",
    )
    model = get_peft_model(model, config)
    model.train()
    model.config.use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape["vocab_size"], (batch, seq), generator=generator).to(device)

    def step() -> float:
        with autocast(precision, torch.device(device).type):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()  # warm-up: kernels chosen, optimizer state allocated
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "technique": technique,
        "gradient_checkpointing": checkpointing,
        "trainable_params": sum(p.numel() for p in params),
        "steps_per_s": round(steps / seconds, 4),
        "tokens_per_s": round(steps * batch * seq / seconds, 1),
        "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
        "final_loss": round(loss, 4),
    }
    return result  # the model and optimizer are freed with this frame


def run(tiny: bool) -> dict[str, Any]:
    import peft
    import torch
    import transformers

    device = "cpu" if tiny else "cuda"
    precision = "bf16"
    batch = _setting("BATCH", 2 if tiny else 8)
    seq = _setting("SEQ", 32 if tiny else 512)
    steps = _setting("STEPS", 2 if tiny else 5)
    shapes = {name: {**shape, **TINY} if tiny else shape for name, shape in ARCHITECTURES.items()}
    results = []
    for name, shape in shapes.items():
        for technique in TECHNIQUES:
            for checkpointing in (False, True):
                try:
                    case = measure(
                        shape,
                        technique,
                        checkpointing,
                        device=device,
                        precision=precision,
                        batch=batch,
                        seq=seq,
                        steps=steps,
                    )
                except torch.cuda.OutOfMemoryError:
                    gc.collect()
                    torch.cuda.empty_cache()
                    case = {
                        "technique": technique,
                        "gradient_checkpointing": checkpointing,
                        "error": "out of GPU memory",
                    }
                results.append({"model": name, **case})
                gc.collect()
    return {
        "check": "whichlora gpu_check",
        "tiny": tiny,
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
        "precision": precision,
        "batch": batch,
        "seq": seq,
        "timed_steps": steps,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "cuda": torch.version.cuda,
        },
        "results": results,
    }


def main() -> int:
    tiny = os.environ.get("WHICHLORA_GPU_CHECK_TINY", "") not in ("", "0")
    try:
        import torch
    except ImportError:
        print(
            "gpu_check: torch is not installed; install torch, transformers and peft.",
            file=sys.stderr,
        )
        return 2
    if not tiny and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA GPU is visible to torch (torch.cuda.is_available() is False; "
            f"torch {torch.__version__}, CUDA build: {torch.version.cuda}). Run it on a machine "
            "with a CUDA GPU and a CUDA build of torch, or set WHICHLORA_GPU_CHECK_TINY=1 to "
            "check the script itself on CPU with tiny shapes.",
            file=sys.stderr,
        )
        return 2
    print(json.dumps(run(tiny)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
