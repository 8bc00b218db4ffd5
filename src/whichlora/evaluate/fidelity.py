"""Language fidelity: did the model answer in the language it was asked in?

Detector choice: py3langid (>= 0.4). Its naive-Bayes model (140 labels) ships inside the wheel
(``py3langid/data/model.npz.xz``, about 4.5 MB installed), loads in about a second with numpy
alone and never touches the network. Version 0.4 covers every study language, Yoruba and
Swahili included (checked on sample sentences in tests/test_fidelity.py). lingua-language-detector
was the fallback for Yoruba, but its wheel is about 96 MB for no coverage we lack, so it is not
used. Known limit: Yoruba written without tone marks is often read as another language, so
fidelity for ``yo`` is a lower bound.

Codes are ISO 639-1 where one exists; dialect labels are folded into their macrolanguage
(Cantonese and Wu into ``zh``, Egyptian and Moroccan Arabic into ``ar``) so a Chinese answer
is not marked unfaithful for being colloquial. Text with no letters is ``und`` (undetermined).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from whichlora.errors import WhichloraError

UNDETERMINED = "und"
STUDY_LANGUAGES = ("en", "de", "fr", "es", "ru", "zh", "ja", "ar", "hi", "tr", "vi", "sw", "yo")
_MACROLANGUAGE = {"yue": "zh", "wuu": "zh", "arz": "ar", "ary": "ar", "uzs": "uz", "zxx": "und"}


@functools.lru_cache(maxsize=1)
def _full_identifier():  # noqa: ANN202 - py3langid.langid.LanguageIdentifier
    """Load once per process: the model takes about a second to decompress."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    if not hasattr(LanguageIdentifier, "from_model_file"):
        raise WhichloraError(
            "The installed py3langid is too old to know Yoruba; run "
            "`pip install -U 'py3langid>=0.4'`."
        )
    return LanguageIdentifier.from_model_file(MODEL_FILE)


def _known_labels() -> set[str]:
    return set(_full_identifier().labels)


def _check_codes(codes: Sequence[str], what: str) -> None:
    unknown = sorted(set(codes) - _known_labels())
    if unknown:
        raise WhichloraError(
            f"{what} {unknown} not known to the language detector; use ISO 639-1 codes such as "
            f"{', '.join(STUDY_LANGUAGES)}."
        )


@functools.lru_cache(maxsize=16)
def _identifier(candidates: tuple[str, ...] | None):  # noqa: ANN202
    """A restricted copy per candidate set, so callers never change each other's detector."""
    if candidates is None:
        return _full_identifier()
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE)
    identifier.set_languages(list(candidates))
    return identifier


def _has_letters(text: str) -> bool:
    return any(ch.isalpha() for ch in text)


def detect_language(texts: list[str], candidates: list[str] | None = None) -> list[str]:
    """ISO 639-1 code per text; ``candidates`` restricts the choice (helps on short texts)."""
    if candidates is not None:
        _check_codes(candidates, "Candidate languages")
    key = None if candidates is None else tuple(sorted(set(candidates)))
    identifier = _identifier(key)
    out = []
    for text in texts:
        if not _has_letters(text):
            out.append(UNDETERMINED)
            continue
        label, _ = identifier.classify(text)
        out.append(_MACROLANGUAGE.get(label, label))
    return out


def fidelity(
    texts: list[str], expected_language: str, candidates: list[str] | None = None
) -> list[bool]:
    """Whether each text is in ``expected_language``; empty or letterless text never is."""
    _check_codes([expected_language], "Expected language")
    if candidates is not None and expected_language not in candidates:
        raise WhichloraError(
            f"Expected language {expected_language!r} is not among the candidates {candidates}; "
            "add it to the candidate list."
        )
    detected = detect_language(texts, candidates)
    return [code == expected_language for code in detected]
