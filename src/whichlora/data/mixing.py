"""Turn loaded records into the training and validation sets of one run.

The split is made per item id, not per record: every translation of an item lands on the same
side, so a validation item is unseen in every language (otherwise its English twin would leak it).
Everything is a pure function of the records and the seed: same inputs, same sets, any machine.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

from whichlora.data.languages import require_language
from whichlora.data.records import Record
from whichlora.errors import WhichloraError

log = logging.getLogger("whichlora.data")


def build_training_set(
    records: Sequence[Record],
    languages: Sequence[str],
    items_per_language: int | None = None,
    seed: int = 0,
    validation_fraction: float = 0.1,
    target_ratio: Mapping[str, float] | None = None,
    exclude_ids: Iterable[str] | None = None,
    source_language: str = "en",
) -> tuple[list[Record], list[Record]]:
    """(train, validation) for `languages`; see the module docstring for the guarantees.

    items_per_language caps the training items of each language (validation keeps the same
    proportion). target_ratio {"sw": 0.01} adds round(0.01 x the source-language training count)
    items of sw (at least one), whether or not sw is also in `languages`.
    """
    langs = _codes(languages, "data.languages")
    if not langs:
        raise WhichloraError("data.languages is empty; list at least one training language.")
    ratios = _ratios(target_ratio)
    if not 0 <= validation_fraction < 1:
        raise WhichloraError(
            f"validation_fraction must be at least 0 and below 1, not {validation_fraction}; "
            "use e.g. 0.1."
        )
    if items_per_language is not None and items_per_language < 1:
        raise WhichloraError(
            f"items_per_language must be at least 1, not {items_per_language}; raise it or "
            "remove it to use every item."
        )
    order_langs = langs + [code for code in ratios if code not in langs]
    excluded = set(exclude_ids or ())
    kept = dedupe(r for r in records if r.language in order_langs and r.id not in excluded)
    missing = [code for code in order_langs if not any(r.language == code for r in kept)]
    if missing:
        raise WhichloraError(
            f"The training data has no items in {', '.join(missing)}; remove them from the "
            "study's languages or use a data source that has them."
        )

    rank = _id_order(kept, seed)
    n_validation = _validation_size(len(rank), validation_fraction)
    train_by: dict[str, list[Record]] = {code: [] for code in order_langs}
    val_by: dict[str, list[Record]] = {code: [] for code in order_langs}
    for record in sorted(kept, key=lambda r: rank[r.id]):
        side = val_by if rank[record.id] < n_validation else train_by
        side[record.language].append(record)

    quotas = _quotas(train_by, langs, ratios, items_per_language, source_language)
    train: list[Record] = []
    validation: list[Record] = []
    for code in order_langs:
        quota = quotas.get(code)
        if quota is not None and quota > len(train_by[code]):
            log.warning(
                "only %d training items in %s, fewer than the %d asked for",
                len(train_by[code]),
                code,
                quota,
            )
        train += train_by[code][:quota]
        validation += val_by[code][: _validation_quota(quota, validation_fraction)]
    position = {code: i for i, code in enumerate(order_langs)}
    train.sort(key=lambda r: (rank[r.id], position[r.language]))
    validation.sort(key=lambda r: (rank[r.id], position[r.language]))
    return train, validation


def normalize_text(text: str) -> str:
    """The form two texts must share to count as duplicates (case, width, spacing ignored)."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).casefold()).strip()


def dedupe(records: Iterable[Record]) -> list[Record]:
    """First of each (language, id) and of each (language, instruction, input, output)."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for record in records:
        by_id = ("id", record.language, record.id)
        by_text = (
            record.language,
            normalize_text(record.instruction),
            normalize_text(record.input),
            normalize_text(record.output),
        )
        if by_id in seen or by_text in seen:
            continue
        seen.update((by_id, by_text))
        kept.append(record)
    return kept


def _codes(languages: Iterable[str], where: str) -> list[str]:
    codes: list[str] = []
    for value in languages:
        code = require_language(value, where)
        if code not in codes:
            codes.append(code)
    return codes


def _ratios(target_ratio: Mapping[str, float] | None) -> dict[str, float]:
    ratios: dict[str, float] = {}
    for key, value in (target_ratio or {}).items():
        code = require_language(key, "target_ratio")
        if isinstance(value, bool) or not isinstance(value, int | float):
            value = math.nan
        if not 0 < value <= 100:
            raise WhichloraError(
                f"target_ratio for {key} is {value!r}, but it must be a fraction above 0 (e.g. "
                "0.01 for one item per hundred source-language items); fix the value."
            )
        ratios[code] = float(value)
    return ratios


def _stable_hash(seed: int, item_id: str) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _id_order(records: Iterable[Record], seed: int) -> dict[str, int]:
    """A seeded shuffle of the item ids (independent of record order and of PYTHONHASHSEED)."""
    ids = sorted({r.id for r in records})
    ordered = sorted(ids, key=lambda item_id: (_stable_hash(seed, item_id), item_id))
    return {item_id: i for i, item_id in enumerate(ordered)}


def _validation_size(n_ids: int, fraction: float) -> int:
    if fraction <= 0 or n_ids < 2:
        return 0
    return min(n_ids - 1, max(1, round(fraction * n_ids)))


def _quotas(
    train_by: dict[str, list[Record]],
    langs: list[str],
    ratios: dict[str, float],
    items_per_language: int | None,
    source_language: str,
) -> dict[str, int | None]:
    quotas: dict[str, int | None] = {code: items_per_language for code in langs}
    if not ratios:
        return quotas
    source = require_language(source_language, "evaluation.source_language")
    if source not in langs or source in ratios:
        raise WhichloraError(
            f"target_ratio is relative to the source language '{source}', which is not a "
            "training language here; add it to data.languages or change "
            "evaluation.source_language."
        )
    n_source = len(train_by[source][:items_per_language])
    for code, ratio in ratios.items():
        quotas[code] = max(1, math.floor(ratio * n_source + 0.5))
    return quotas


def _validation_quota(train_quota: int | None, fraction: float) -> int | None:
    """Keep validation in proportion to a capped training set (None: every validation item)."""
    if train_quota is None:
        return None
    if fraction <= 0:
        return 0
    return max(1, math.floor(train_quota * fraction / (1 - fraction) + 0.5))
