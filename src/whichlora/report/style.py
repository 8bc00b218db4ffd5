"""One look for every plot: Okabe-Ito colours (safe for colour-blind readers), one colour per
technique across all figures, headless rendering to PNG bytes."""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Iterable
from typing import Any, ParamSpec, TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Okabe & Ito (2008), yellow last because it is faint on white.
OKABE_ITO = [
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#000000",  # black
]
BASE_COLOR = "#7F7F7F"
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]
DPI = 110

RC = {
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "whichlora",
}


class Palette:
    """Colour and marker per technique, fixed by the study's technique order."""

    def __init__(self, names: Iterable[str]) -> None:
        self._index: dict[str, int] = {}
        for name in names:
            self._index.setdefault(name, len(self._index))

    def _slot(self, name: str) -> int:
        return self._index.setdefault(name, len(self._index))

    def color(self, name: str) -> str:
        if name == "base":
            return BASE_COLOR
        return OKABE_ITO[self._slot(name) % len(OKABE_ITO)]

    def marker(self, name: str) -> str:
        # past eight techniques colours repeat, so the marker changes with the cycle
        return MARKERS[(self._slot(name) // len(OKABE_ITO)) % len(MARKERS)]


P = ParamSpec("P")
R = TypeVar("R")


def styled(fn: Callable[P, R]) -> Callable[P, R]:
    """Draw under the report's rc settings without touching the caller's global matplotlib state."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with matplotlib.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper


def figure(width: float, height: float, **kwargs: Any) -> tuple[Figure, Any]:
    """A figure on the Agg canvas, outside pyplot: headless, and no global backend switch or
    figure registry that a caller's notebook would notice. Constrained layout fits labels in one
    pass (`bbox_inches="tight"` would draw twice)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**kwargs)


def to_png(fig: Figure) -> bytes:
    """PNG bytes without a timestamp, so rebuilding a report gives identical files."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
