"""The study's data, built once per process and identically everywhere (seeded, no randomness
outside the seed): training and validation records, and the evaluation set."""

from __future__ import annotations

from whichlora.config.study import Study
from whichlora.data.languages import evaluation_languages
from whichlora.data.records import Record
from whichlora.errors import WhichloraError
from whichlora.evaluate.suite import EvalSet

__all__ = ["evaluation_languages", "evaluation_set", "training_data"]


def training_data(study: Study) -> tuple[list[Record], list[Record]]:
    """(train, validation): validation items are held out by id, in every language."""
    from whichlora.data.mixing import build_training_set
    from whichlora.data.sources import load_instructions

    data = study.data
    from whichlora.data.languages import require_language

    targets = [require_language(k, "data.target_ratio") for k in data.target_ratio or {}]
    languages = list(dict.fromkeys([*data.languages, *targets]))
    records = load_instructions(data.source, languages, data.options)
    if study.evaluation.heldout and study.evaluation.heldout == data.source:
        raise WhichloraError(
            f"data.source and evaluation.heldout are the same ({data.source}): evaluation items "
            "would be trained on. Fix: evaluate on a different source (e.g. builtin:heldout)."
        )
    return build_training_set(
        records,
        languages=data.languages,
        items_per_language=data.items_per_language,
        seed=data.split_seed,
        validation_fraction=data.validation_fraction,
        target_ratio=data.target_ratio,
        source_language=study.evaluation.source_language,
    )


def evaluation_set(study: Study, validation: list[Record]) -> EvalSet:
    from whichlora.data.knowledge import load_knowledge
    from whichlora.data.sources import load_instructions

    spec = study.evaluation
    langs = evaluation_languages(study)
    cap = spec.items_per_language
    evalset = EvalSet(validation=validation)
    if spec.knowledge:
        knowledge = load_knowledge(spec.knowledge, langs)
        evalset.knowledge = {
            lang: items[:cap] if cap else items for lang, items in knowledge.items()
        }
    if spec.heldout:
        heldout = load_instructions(spec.heldout, langs, {})
        by_lang: dict[str, list[Record]] = {}
        for record in heldout:
            by_lang.setdefault(record.language, []).append(record)
        for lang, records in by_lang.items():
            records.sort(key=lambda r: r.id)
            evalset.heldout[lang] = records[:cap] if cap else records
            evalset.generation[lang] = records[: spec.generation_items]
    return evalset
