"""Resolve a model reference and load it safely: safetensors only, no remote code unless asked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichlora.errors import WhichloraError
from whichlora.models.builtin import builtin_model_dir


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    path: str


def resolve_model_path(ref: str) -> str:
    """builtin:NAME -> converted cache folder; a local folder -> itself; else a hub id."""
    if ref.startswith("builtin:"):
        return str(builtin_model_dir(ref.removeprefix("builtin:")))
    if ref.startswith("hub:"):
        return ref.removeprefix("hub:")
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise WhichloraError(
                f"Model folder '{ref}' has no config.json. Fix: point `model` at a folder "
                "saved with save_pretrained, or use builtin:smollm2-135m."
            )
        return str(path.resolve())
    if ref.startswith((".", "/", "~")) or ref.count("/") != 1:
        raise WhichloraError(
            f"Model '{ref}' is neither a bundled model, an existing folder nor a hub id "
            "(owner/name). "
            "Fix: use builtin:smollm2-135m, a local folder with config.json, or hub:owner/name."
        )
    return ref


def resolve_device(device: str) -> str:
    """'auto' means the GPU when torch sees one: the same study file runs on a laptop or a node."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WhichloraError(
            f"model.device is '{device}' but torch sees no GPU. Fix: use device: auto or cpu, or "
            "install a CUDA build of torch (see README)."
        )
    return device


def check_weights(path: str, allow_pickle: bool) -> None:
    """Refuse a local folder without safetensors weights unless pickles are explicitly allowed."""
    local = Path(path)
    if local.is_dir() and not allow_pickle and not any(local.glob("*.safetensors")):
        raise WhichloraError(
            f"Model folder '{path}' has no .safetensors weights; pickle-based weights can run code "
            "when loaded. Fix: convert the model to safetensors, or set `allow_pickle: true` under "
            "`model` in the study if you trust the files."
        )


def remote_code_message(ref: str) -> str:
    return (
        f"Model '{ref}' needs its own Python code to load (its config.json has an auto_map); "
        "whichlora runs no model code unless asked. Fix: use a model that transformers supports "
        "natively, or set `trust_remote_code: true` under `model` in the study if you trust "
        "that code."
    )


def load_config(ref: str, trust_remote_code: bool = False) -> Any:
    """The model's config (no weights): what budgets are resolved on before anything runs."""
    from transformers import AutoConfig

    path = resolve_model_path(ref)
    try:
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise WhichloraError(remote_code_message(ref)) from None
        raise WhichloraError(
            f"Model '{ref}' has a config transformers cannot use ({exc}). Fix: point `model` at a "
            "folder saved with save_pretrained, or use builtin:smollm2-135m."
        ) from None
    except OSError as exc:
        raise WhichloraError(
            f"Could not load the config of model '{ref}': {str(exc).rstrip('.')}. Fix: check the "
            "id or folder; hub models need network access (or a filled Hugging Face cache)."
        ) from None


def load_tokenizer(ref: str, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer

    path = resolve_model_path(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        if "trust_remote_code" in str(exc):
            raise WhichloraError(remote_code_message(ref)) from None
        raise WhichloraError(
            f"Could not load the tokenizer of model '{ref}': {exc}. Fix: save the tokenizer next "
            "to the model (tokenizer.save_pretrained) or check the model id."
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    ref: str,
    *,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    device: str = "auto",
    device_map: str | None = None,
) -> LoadedModel:
    """Load a fresh base model. Always fresh: PiSSA/OLoRA mutate base weights in place."""
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(ref)
    check_weights(path, allow_pickle)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path,
            dtype=getattr(torch, dtype),
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            device_map=device_map,
        )
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise WhichloraError(remote_code_message(ref)) from None
    except OSError as exc:
        raise WhichloraError(
            f"Could not load model '{ref}': {exc}. Fix: check the id or folder; hub models need "
            "network access (or a filled Hugging Face cache)."
        ) from exc
    if device_map is None:
        model.to(resolve_device(device))
    model.eval()
    tokenizer = load_tokenizer(ref, trust_remote_code=trust_remote_code)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(model=model, tokenizer=tokenizer, path=path)
