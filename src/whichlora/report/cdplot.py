"""Critical-difference diagrams (Demšar 2006): average ranks on one axis, techniques whose ranks
differ by less than the Nemenyi critical difference joined by a bar (not distinguishable)."""

from __future__ import annotations

import math
from typing import Any

from whichlora.evaluate.metrics import display_name
from whichlora.report.style import Palette, figure, styled, to_png


def cliques(ranks: dict[str, float], cd: float) -> list[list[str]]:
    """Maximal runs of rank-sorted techniques spanning less than `cd` (groups with no
    significant difference); single techniques are not groups."""
    if not math.isfinite(cd):
        return []
    order = sorted(ranks, key=lambda t: (ranks[t], t))
    spans: list[tuple[int, int]] = []
    for i in range(len(order)):
        j = i
        while j + 1 < len(order) and ranks[order[j + 1]] - ranks[order[i]] < cd:
            j += 1
        if j > i and not any(a <= i and j <= b for a, b in spans):
            spans.append((i, j))
    return [order[a : b + 1] for a, b in spans]


def _draw(ax: Any, ranks: dict[str, float], cd: float, palette: Palette, title: str) -> None:
    order = sorted(ranks, key=lambda t: (ranks[t], t))
    k = len(order)
    lo, hi = 1, max(k, 2)
    ax.set_xlim(lo - 1.6, hi + 1.6)
    half = math.ceil(k / 2)
    depth = 0.5 + 0.35 * half
    ax.set_ylim(-depth - 0.3, 1.25)
    ax.axis("off")
    ax.plot([lo, hi], [0, 0], color="black", lw=1.2)
    for tick in range(lo, hi + 1):
        ax.plot([tick, tick], [0, 0.08], color="black", lw=1)
        ax.text(tick, 0.14, str(tick), ha="center", va="bottom", fontsize=9)
    ax.text((lo + hi) / 2, 0.5, "average rank (1 = best)", ha="center", fontsize=9)
    if math.isfinite(cd):
        ax.plot([lo, lo + cd], [0.95, 0.95], color="black", lw=2)
        for x in (lo, lo + cd):
            ax.plot([x, x], [0.9, 1.0], color="black", lw=1)
        ax.text(lo + cd / 2, 1.03, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for i, name in enumerate(order):
        left = i < half
        y = -0.35 - 0.35 * (i if left else k - 1 - i)
        x_text = lo - 0.35 if left else hi + 0.35
        color = palette.color(name)
        ax.plot([ranks[name], ranks[name], x_text], [0, y, y], color=color, lw=1.6)
        ax.text(
            x_text - 0.05 if left else x_text + 0.05,
            y,
            f"{name} ({ranks[name]:.2f})",
            ha="right" if left else "left",
            va="center",
            fontsize=9,
            color="black",
        )
    for level, group in enumerate(cliques(ranks, cd)):
        y = -0.12 - 0.09 * level
        ax.plot(
            [ranks[group[0]] - 0.03, ranks[group[-1]] + 0.03],
            [y, y],
            color="black",
            lw=3.5,
            solid_capstyle="round",
        )
    ax.set_title(title, fontsize=10, loc="left")


@styled
def cd_figure(rows: list[dict[str, Any]], palette: Palette) -> bytes:
    """One diagram per (family, metric) Friedman test, stacked."""
    heights = [1.4 + 0.3 * math.ceil(len(r["avg_ranks"]) / 2) for r in rows]
    fig, axes = figure(
        7.0, sum(heights), nrows=len(rows), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, row in zip(axes[:, 0], rows, strict=True):
        p = row["p_value"]
        test = f"Friedman p={p:.2g}" if math.isfinite(p) else "Friedman not run"
        metric = display_name(row["metric"])
        _draw(ax, row["avg_ranks"], row["cd"], palette, f"{row['family']} · {metric} — {test}")
    return to_png(fig)
