"""Score one model on the transfer atlas: the NLL of each UDHR article in each atlas language.

Per example (one article of one language) two numbers are stored: nats per token (the model's
own unit) and nats per UTF-8 byte (comparable across languages and scripts, which a tokenizer
splits into very different numbers of tokens). The texts run through the shared scoring engine
(evaluate/scoring.py) from the BOS token, sorted by length and batched; each text gets its own
row, since texts that share only a BOS gain nothing from packing. A text longer than the model's
window is scored in whitespace-split pieces that each fit, each from the BOS (the only case where
a token is scored without all of its left context; the pieces' NLLs, tokens and bytes add up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from whichlora.data.atlas import AtlasText
from whichlora.evaluate.suite import EvalResult

ATLAS_PREFIX = "atlas_"
NLL_TOKEN = "atlas_nll_token"  # nats per token
NLL_BYTE = "atlas_nll_byte"  # nats per UTF-8 byte
ATLAS_METRICS = (NLL_TOKEN, NLL_BYTE)  # the per-example metrics score_atlas writes
TOKENS = "atlas_tokens"  # per language: tokens scored (metrics table only; the cost table)
BYTES = "atlas_bytes"


def _pieces(tokenizer: Any, text: str, limit: int) -> list[str]:
    """`text` cut at whitespace (or mid-text, when it has none) into pieces of at most `limit`
    tokens; the cuts keep every character, so the pieces' bytes add up to the text's."""
    if len(text) <= 1 or len(tokenizer.encode(text, add_special_tokens=False)) <= limit:
        return [text]
    mid = len(text) // 2
    cut = text.rfind(" ", 1, mid + 1)
    if cut <= 0:
        cut = text.find(" ", mid)
    if cut <= 0:
        cut = mid
    return _pieces(tokenizer, text[:cut], limit) + _pieces(tokenizer, text[cut:], limit)


def score_atlas(
    model: Any, tokenizer: Any, texts: Sequence[AtlasText], run_id: str, batch_size: int = 16
) -> tuple[EvalResult, int]:
    """(per-example and per-language rows, tokens scored) for one model."""
    from whichlora.evaluate.scoring import context_window, response_nll

    limit = max(1, context_window(model, tokenizer) - 1)
    owners: list[int] = []
    pairs: list[tuple[str, str]] = []
    for index, item in enumerate(texts):
        for piece in _pieces(tokenizer, item.text, limit):
            owners.append(index)
            pairs.append(("", piece))
    scored = response_nll(model, tokenizer, pairs, batch_size=batch_size, pack=False)
    nll = [0.0] * len(texts)
    tokens = [0] * len(texts)
    for index, (total, count) in zip(owners, scored, strict=True):
        nll[index] += total
        tokens[index] += count
    result = EvalResult()
    per_language: dict[str, list[tuple[float, float]]] = {}
    for index, item in enumerate(texts):
        n_bytes = len(item.text.encode("utf-8"))
        per_token = nll[index] / tokens[index] if tokens[index] else float("nan")
        per_byte = nll[index] / n_bytes if n_bytes else float("nan")
        result.examples.append(_row(run_id, item.language, NLL_TOKEN, per_token, item.example_id))
        result.examples.append(_row(run_id, item.language, NLL_BYTE, per_byte, item.example_id))
        per_language.setdefault(item.language, []).append((tokens[index], n_bytes))
    means: dict[tuple[str, str], list[float]] = {}
    for row in result.examples:
        means.setdefault((row["language"], row["metric"]), []).append(row["value"])
    for language, counts in per_language.items():
        values = {
            NLL_TOKEN: _mean(means[(language, NLL_TOKEN)]),
            NLL_BYTE: _mean(means[(language, NLL_BYTE)]),
            TOKENS: float(sum(t for t, _ in counts)),
            BYTES: float(sum(b for _, b in counts)),
        }
        for metric, value in values.items():
            result.metrics.append(
                {
                    "run_id": run_id,
                    "split": "test",
                    "language": language,
                    "metric": metric,
                    "value": value,
                    "n": len(counts),
                }
            )
    return result, sum(tokens)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else None


def _row(run_id: str, language: str, metric: str, value: float, example_id: str) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "split": "test",
        "language": language,
        "metric": metric,
        "example_id": example_id,
        "value": float(value),
    }
