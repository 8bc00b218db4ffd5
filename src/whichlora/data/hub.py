"""Hugging Face datasets, named by the user as `hub:ID`: the only data path that uses the network.

Known datasets come with ready-made field mappings (Bactrian-X, Aya); any other dataset works with
`data.options.fields` (and `config` / `split` / `revision`). Rows go through the same mapper as
local files, so mappings are tested offline on small local files shaped like each dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from whichlora.data.local import Row
from whichlora.data.options import FieldMap, SourceOptions, parse_options
from whichlora.errors import WhichloraError

BACTRIAN_X_LANGUAGES = (
    "af", "ar", "az", "bn", "cs", "de", "en", "es", "et", "fa", "fi", "fr", "gl", "gu", "he", "hi",
    "hr", "id", "it", "ja", "ka", "kk", "km", "ko", "lt", "lv", "mk", "ml", "mn", "mr", "my", "ne",
    "nl", "pl", "ps", "pt", "ro", "ru", "si", "sl", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk",
    "ur", "vi", "xh", "zh",
)  # fmt: skip


@dataclass(frozen=True)
class HubPreset:
    """How a known dataset maps onto records; `config_per_language` loads one config per code."""

    fields: FieldMap
    config_per_language: bool = False
    languages: tuple[str, ...] | None = None  # the configs a per-language dataset has


_AYA = HubPreset(
    FieldMap(
        instruction=("inputs",),
        input=(),
        output=("targets",),
        language=("language_code", "language"),
        id=("id",),
        task=(),
    )
)
PRESETS: dict[str, HubPreset] = {
    "mbzuai/bactrian-x": HubPreset(
        FieldMap(language=(), task=()),
        config_per_language=True,
        languages=BACTRIAN_X_LANGUAGES,
    ),
    "cohereforai/aya_dataset": _AYA,
    "coherelabs/aya_dataset": _AYA,
}


def preset_for(dataset_id: str) -> HubPreset | None:
    return PRESETS.get(dataset_id.lower())


def hub_rows(
    dataset_id: str, languages: list[str] | None, options: dict[str, Any] | None
) -> tuple[SourceOptions, Iterator[Row], str]:
    """Parsed options, the dataset's rows (lazily loaded) and the prefix for generated ids."""
    preset = preset_for(dataset_id) or HubPreset(FieldMap())
    opts = parse_options(options, base=preset.fields)
    if not preset.config_per_language:
        return opts, _rows(dataset_id, opts.config, opts, None), dataset_id
    if languages is None:
        raise WhichloraError(
            f"hub:{dataset_id} has one config per language; list the languages to load in "
            "data.languages (e.g. [en, de, sw])."
        )
    missing = [code for code in languages if preset.languages and code not in preset.languages]
    if missing:
        raise WhichloraError(
            f"hub:{dataset_id} has no config for {', '.join(missing)}; choose from "
            f"{', '.join(preset.languages or ())}."
        )
    rows = (row for code in languages for row in _rows(dataset_id, code, opts, code))
    return opts, rows, dataset_id


def _rows(
    dataset_id: str, config: str | None, opts: SourceOptions, language: str | None
) -> Iterator[Row]:
    dataset = _load_dataset(dataset_id, config, opts.split, opts.revision)
    label = f"hub:{dataset_id}" + (f" config {config}" if config else "") + f" split {opts.split}"
    for number, values in enumerate(dataset, 1):
        yield Row(f"{label} row {number}", dict(values), file_language=language)


def _load_dataset(dataset_id: str, config: str | None, split: str, revision: str | None) -> Any:
    """datasets.load_dataset with every failure turned into one actionable sentence."""
    import datasets

    try:
        return datasets.load_dataset(dataset_id, name=config, split=split, revision=revision)
    except Exception as exc:  # noqa: BLE001 - network, auth, missing config, bad split...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300].rstrip(".")
        reason = reason.replace(". ", "; ")  # keep the message one sentence
        where = f"hub:{dataset_id}" + (f" (config {config}, split {split})" if config else "")
        raise WhichloraError(
            f"Could not load {where}: {reason}; check the dataset id, config and split, your "
            "network connection (or HF_HUB_OFFLINE and the local Hugging Face cache), and "
            "accept the dataset's terms on the hub if it is gated."
        ) from None
