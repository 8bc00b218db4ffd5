"""The report as plain data (sections of text, tables and figures), so HTML and Markdown are
rendered from one source and cannot drift apart."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Text:
    """A paragraph; `kind` is "p", "note" (something missing) or "verdict" (the headline)."""

    text: str
    kind: str = "p"


@dataclass
class Heading:
    text: str


@dataclass
class Table:
    """A displayed table (strings) plus the numbers behind it, exported as CSV and JSON."""

    name: str
    caption: str
    display: pd.DataFrame
    data: pd.DataFrame
    classes: pd.DataFrame | None = None  # per-cell CSS class ("good", "bad"), HTML only
    collapsed: bool = False  # HTML: folded under its caption (long evidence tables)


@dataclass
class Figure:
    name: str
    png: bytes
    caption: str
    alt: str


@dataclass
class Code:
    text: str
    language: str = ""


Block = Text | Heading | Table | Figure | Code


@dataclass
class Section:
    title: str
    anchor: str
    blocks: list[Block] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.blocks.append(Text(text, "note"))

    def text(self, text: str) -> None:
        self.blocks.append(Text(text))


@dataclass
class Document:
    title: str
    subtitle: str
    sections: list[Section] = field(default_factory=list)
    exports: dict[str, pd.DataFrame] = field(default_factory=dict)  # figure data, not displayed

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every table's numbers by export name: displayed tables and figure data."""
        out = dict(self.exports)
        for section in self.sections:
            for block in section.blocks:
                if isinstance(block, Table):
                    out[block.name] = block.data
        return out

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def cell_classes(display: pd.DataFrame, columns: dict[str, Iterable[str]]) -> pd.DataFrame:
    """Per-cell CSS classes for `display`: '' everywhere except the given columns."""
    out = pd.DataFrame("", index=display.index, columns=display.columns, dtype=object)
    for column, values in columns.items():
        out[column] = list(values)
    return out


# ------------------------------------------------------------------------------ formatting
def finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def fmt_num(value: object, digits: int = 3, signed: bool = False) -> str:
    """A number for a table cell; missing values read as an en dash, not 'nan'."""
    if not finite(value):
        return "–"
    number = round(float(value), digits) + 0.0  # type: ignore[arg-type]  # + 0.0: no "-0.0"
    text = f"{number:+.{digits}f}" if signed else f"{number:.{digits}f}"
    return text.replace("-", "−")


def fmt_ci(value: object, low: object, high: object, digits: int = 3, signed: bool = True) -> str:
    """'+0.050 [−0.010, +0.110]'; the interval is left out when it could not be computed."""
    main = fmt_num(value, digits, signed)
    if not (finite(low) and finite(high)):
        return main
    return f"{main} [{fmt_num(low, digits, signed)}, {fmt_num(high, digits, signed)}]"


def fmt_int(value: object) -> str:
    return f"{int(round(float(value))):,}" if finite(value) else "–"  # type: ignore[arg-type]


def fmt_bytes(value: object) -> str:
    if not finite(value):
        return "–"
    size = float(value)  # type: ignore[arg-type]
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"
