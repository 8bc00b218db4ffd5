"""Per-layer sentence representations of parallel text, pooled two ways and cached on disk.

The analysis asks whether tuning pulls languages together inside the model, so every model (the
base and each run) encodes the same parallel sentences; each hidden-state layer is pooled to one
vector per sentence. Forward passes are the expensive part, so results are cached per model in an
.npz keyed by the exact inputs: nothing is computed twice, and any change recomputes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whichlora.errors import WhichloraError
from whichlora.models.flops import add_forward, counting
from whichlora.models.introspect import accepts_logits_to_keep
from whichlora.models.introspect import pad_id as pad_token
from whichlora.models.precision import FP32
from whichlora.models.scoring import run_scoring_model
from whichlora.store import BASE
from whichlora.store.names import ADAPTER_DIR

__all__ = [
    "POOLINGS",
    "Representations",
    "cached_representations",
    "is_cached",
    "layer_representations",
    "representation_key",
    "representations_path",
]

POOLINGS = ("mean", "last")
# Bump when the extraction changes, so old caches are not mistaken for new ones.
REPS_VERSION = 1
STUDY = "study"  # units of the study as a whole: status and gc leave them alone
EMBED = "embed"  # stage of an embedding's cost row: "embed:<run_id>" (seconds, tokens, FLOPs)
MAX_TOKENS = 256


@dataclass
class Representations:
    """Pooled hidden states: pooled[p] has shape (n_layers+1, n_languages*n_per_language, hidden).

    Rows are grouped by language in `languages` order, sentence i of every language at the same
    offset inside its block, so parallel sentences stay aligned.
    """

    languages: list[str]
    n_per_language: int
    pooled: dict[str, np.ndarray]

    @property
    def n_layers(self) -> int:
        """Number of hidden-state layers (embeddings included), i.e. transformer layers + 1."""
        return int(next(iter(self.pooled.values())).shape[0])

    @property
    def labels(self) -> np.ndarray:
        """Language of every row, for probes."""
        return np.repeat(np.asarray(self.languages), self.n_per_language)

    def stacked(self, pooling: str, layer: int) -> np.ndarray:
        """All languages' rows at one layer, (n_languages*n_per_language, hidden)."""
        return self.pooled[pooling][layer]

    def by_language(self, pooling: str, layer: int) -> dict[str, np.ndarray]:
        """One layer split into language -> (n_per_language, hidden), in language order."""
        x = self.stacked(pooling, layer)
        n = self.n_per_language
        return {lang: x[i * n : (i + 1) * n] for i, lang in enumerate(self.languages)}


# --------------------------------------------------------------------------- extraction


def _check_texts(texts: Mapping[str, Sequence[str]]) -> tuple[list[str], int]:
    """Parallel sentences must align by index, so every language needs the same count."""
    if not texts:
        raise WhichloraError("no parallel text given; pass a mapping language -> sentences.")
    counts = {lang: len(sentences) for lang, sentences in texts.items()}
    if len(set(counts.values())) != 1:
        raise WhichloraError(
            f"parallel text must have the same number of sentences per language, got {counts}."
        )
    n = next(iter(counts.values()))
    if n == 0:
        raise WhichloraError("parallel text has no sentences; pass at least one per language.")
    return list(texts), n


def _forward_kwargs(model: Any) -> dict[str, Any]:
    """Skip the full-vocabulary logits where the model allows: only hidden states are needed."""
    return {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}


def _model_device(model: Any) -> Any:
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        import torch

        return torch.device("cpu")


def layer_representations(
    model: Any,
    tokenizer: Any,
    texts: Mapping[str, Sequence[str]],
    batch_size: int = 16,
    poolings: Sequence[str] = POOLINGS,
    *,
    max_tokens: int = MAX_TOKENS,
    on_batch: Callable[[int], None] | None = None,
) -> Representations:
    """Encode parallel sentences and pool every hidden-state layer (embeddings included).

    "mean" averages over real tokens, "last" takes the last real token. Batches are right-padded
    (pads sit after every real token, so a causal model's real states do not see them) and sorted
    by length, so little compute goes to padding. Works for plain and PEFT-wrapped models.
    """
    import torch

    unknown = sorted(set(poolings) - set(POOLINGS))
    if unknown or not poolings:
        raise WhichloraError(f"poolings must be among {list(POOLINGS)}, got {list(poolings)}.")
    if batch_size < 1:
        raise WhichloraError(f"batch_size must be at least 1, got {batch_size}.")
    languages, n = _check_texts(texts)
    flat = [s for lang in languages for s in texts[lang]]
    ids: list[list[int]] = tokenizer(flat, truncation=True, max_length=max_tokens)["input_ids"]
    empty = [flat[i] for i, seq in enumerate(ids) if not seq]
    if empty:
        raise WhichloraError(f"{len(empty)} sentence(s) encode to no tokens, e.g. {empty[0]!r}.")
    pad_id = pad_token(tokenizer)
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    device = _model_device(model)
    kwargs = _forward_kwargs(model)
    pooled: dict[str, np.ndarray] = {}
    was_training = bool(getattr(model, "training", False))
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                lengths = torch.tensor([len(ids[i]) for i in idx])
                width = int(lengths.max())
                input_ids = torch.full((len(idx), width), int(pad_id), dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                    mask[row, : len(ids[i])] = 1
                add_forward(model, int(lengths.sum()), 0)  # hidden states only: no head
                out = model(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    output_hidden_states=True,
                    use_cache=False,
                    return_dict=True,
                    **kwargs,
                )
                states = out.hidden_states  # L+1 tensors (b, T, H), maybe on several devices
                if not pooled:
                    shape = (len(states), len(flat), states[0].shape[-1])
                    pooled = {p: np.empty(shape, dtype=np.float32) for p in poolings}
                for layer, h in enumerate(states):
                    h = h.float()  # pool on the model's device, move only (b, H) back
                    if "mean" in pooled:
                        m = mask.to(h.device)[:, :, None].to(h.dtype)
                        mean = (h * m).sum(dim=1) / m.sum(dim=1)
                        pooled["mean"][layer, idx] = mean.cpu().numpy()
                    if "last" in pooled:
                        rows = torch.arange(len(idx), device=h.device)
                        last = h[rows, (lengths - 1).to(h.device)]
                        pooled["last"][layer, idx] = last.cpu().numpy()
                if on_batch is not None:
                    on_batch(len(idx))
    finally:
        if was_training:
            model.train()
    return Representations(languages=languages, n_per_language=n, pooled=pooled)


# --------------------------------------------------------------------------- cache


def representations_path(study_dir: Path, run_id: str) -> Path:
    return Path(study_dir) / "analysis" / "reps" / f"{run_id}.npz"


def _adapter_digest(folder: Path) -> str:
    """Hash of the adapter files, so a retrained run never reuses the old run's vectors."""
    digest = hashlib.sha256()
    if not folder.is_dir():
        return "missing"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _precision_key(study: Any) -> dict[str, str]:
    """bf16 vectors are other vectors; fp32 adds nothing, so caches from before stay valid."""
    precision = getattr(study.evaluation, "precision", FP32)
    return {} if precision == FP32 else {"precision": precision}


def representation_key(ctx: Any, run_id: str, texts: Mapping[str, Sequence[str]]) -> str:
    """Hash of everything the vectors depend on: texts, model reference, adapter, extractor."""
    spec = ctx.study.model
    adapter = "" if run_id == BASE else _adapter_digest(ctx.run_dir(run_id) / ADAPTER_DIR)
    payload = {
        "version": REPS_VERSION,
        "max_tokens": MAX_TOKENS,
        "model": spec.id,
        "dtype": spec.dtype,
        "run": run_id,
        "adapter": adapter,
        "merged": bool(ctx.study.evaluation.merge_adapters),
        **_precision_key(ctx.study),
        "languages": list(texts),
        "texts": {lang: list(sentences) for lang, sentences in texts.items()},
    }
    text = json.dumps(payload, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _load_npz(path: Path, key: str) -> Representations | None:
    """The cached vectors if the file exists, is readable and matches `key`; else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            pooled = {p: data[p] for p in POOLINGS if p in data.files}
            return Representations(
                languages=[str(x) for x in data["languages"]],
                n_per_language=int(data["n_per_language"]),
                pooled=pooled,
            )
    except (OSError, ValueError, KeyError):  # truncated or foreign file: recompute
        return None


def _save_npz(path: Path, key: str, reps: Representations) -> None:
    """Temp file + rename: a reader (or a resumed study) sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(
                handle,
                key=np.asarray(key),
                languages=np.asarray(reps.languages),
                n_per_language=np.asarray(reps.n_per_language),
                **reps.pooled,
            )
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; study folders are shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_cached(ctx: Any, run_id: str, texts: Mapping[str, Sequence[str]]) -> bool:
    """Whether `run_id`'s vectors for `texts` are on disk (and current): nothing to compute."""
    path = representations_path(ctx.study_dir, run_id)
    return _load_npz(path, representation_key(ctx, run_id, texts)) is not None


def cached_representations(
    ctx: Any,
    run_id: str,
    texts: Mapping[str, Sequence[str]],
    *,
    batch_size: int = 16,
    loader: Callable[[Any, str], tuple[Any, Any]] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Representations:
    """Both poolings of `run_id` ('base' or a run) from the cache, computing them on a miss.

    The model is loaded (a copy of the base plus the run's adapter, via `loader`, default the
    process's shared ScoringModels) only on a miss, and freed before returning. The study's
    evaluation passes the model it has just scored, so the analysis usually finds a hit.
    """
    path = representations_path(ctx.study_dir, run_id)
    key = representation_key(ctx, run_id, texts)
    cached = _load_npz(path, key)
    if cached is not None:
        return cached
    if loader is None:
        loader = run_scoring_model
    model, tokenizer = loader(ctx, run_id)
    started = time.perf_counter()
    try:
        with counting() as work:
            reps = layer_representations(
                model, tokenizer, texts, batch_size=batch_size, poolings=POOLINGS, on_batch=on_batch
            )
    finally:
        del model
    store = getattr(ctx, "store", None)
    if store is not None:  # before the file: a kill between the two recomputes, never loses it
        store.finish_unit(
            STUDY,
            f"{EMBED}:{run_id}",
            seconds=time.perf_counter() - started,
            key=key[:24],
            tokens=work.tokens,
            flops=work.flops,
        )
    _save_npz(path, key, reps)
    return reps
