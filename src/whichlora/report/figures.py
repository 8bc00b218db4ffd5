"""Result plots: the transfer/retention trade-off and the training loss curves."""

from __future__ import annotations

import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from whichlora.evaluate.metrics import metrics, tradeoff_metrics
from whichlora.report.style import LINESTYLES, Palette, figure, styled, to_png

_UNIT_WORDS = {"pp": "percentage points"}
# metric -> (sign that turns a change into a gain, scale, display name, unit): the metric
# table's trade-off axes
TRADEOFF_AXES = {
    m.name: (1.0 if m.higher_is_better else -1.0, float(m.scale), m.display,
             _UNIT_WORDS.get(m.delta_unit, m.delta_unit))
    for m in (metrics()[name] for name in tradeoff_metrics())
}  # fmt: skip


@styled
def tradeoff_figure(
    points: pd.DataFrame, palette: Palette, labels: list[str], source: str
) -> bytes:
    """Transfer gain (x) against retention loss (y): the best technique sits bottom right."""
    metrics = [m for m in TRADEOFF_AXES if m in set(points["metric"])]
    fig, axes = figure(5.0 * len(metrics), 4.4, ncols=len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        sign, scale, name, unit = TRADEOFF_AXES[metric]
        frame = points[points["metric"] == metric]
        ax.axhline(0, color="#999999", lw=0.8, zorder=0)
        ax.axvline(0, color="#999999", lw=0.8, zorder=0)
        for label in labels:
            runs = frame[frame["technique"] == label]
            if runs.empty:
                continue
            gain = sign * scale * runs["transfer"]
            loss = -sign * scale * runs["retention"]
            color, marker = palette.color(label), palette.marker(label)
            ax.scatter(gain, loss, color=color, marker=marker, s=28, alpha=0.55, lw=0)
            ax.scatter(
                gain.mean(),
                loss.mean(),
                color=color,
                marker=marker,
                s=130,
                edgecolor="black",
                lw=1.0,
                zorder=3,
                label=f"{label} (mean of {len(runs)})",
            )
            ax.annotate(
                label,
                (gain.mean(), loss.mean()),
                xytext=(7, 6),
                textcoords="offset points",
                fontsize=9,
                color="#222222",
            )
        ax.set_xlabel(f"transfer gain, mean over target languages\n({unit}, → better)")
        ax.set_ylabel(f"retention loss on {source}\n({unit}, ↑ more forgetting)")
        ax.set_title(name)
        ax.margins(0.15)
    handles, names = axes[0][0].get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="o", color="#777777", alpha=0.55))
    names.append("one seed")
    fig.legend(handles, names, loc="outside lower center", ncol=min(4, len(names)), frameon=False)
    return to_png(fig)


def smoothing_window(steps: int) -> int:
    """Steps in the trailing mean drawn over a loss curve (1: none). Per-step losses jump with
    each batch's languages and lengths; the trend is what a reader wants to see."""
    window = min(50, steps // 4)
    return window if window >= 2 else 1


@styled
def loss_figure(
    training: pd.DataFrame, runs: pd.DataFrame, palette: Palette, labels: list[str]
) -> bytes:
    """Loss per optimizer step for every run (thin) and its trailing mean (bold): colour =
    technique, line style = seed."""
    fig, ax = figure(8.5, 4.2)
    seeds = sorted(runs["seed"].unique())
    style = {seed: LINESTYLES[i % len(LINESTYLES)] for i, seed in enumerate(seeds)}
    for run in runs.itertuples():
        steps = training[training["run_id"] == run.run_id].sort_values("step")
        if steps.empty:
            continue
        window = smoothing_window(len(steps))
        color, ls = palette.color(run.label), style[run.seed]
        if window > 1:
            ax.plot(steps["step"], steps["loss"], color=color, ls=ls, lw=0.8, alpha=0.3)
            trend = steps["loss"].rolling(window, min_periods=1).mean()
            ax.plot(steps["step"], trend, color=color, ls=ls, lw=1.8, alpha=0.95)
        else:
            ax.plot(steps["step"], steps["loss"], color=color, ls=ls, lw=1.3, alpha=0.9)
    handles = [Line2D([], [], color=palette.color(lab), lw=2) for lab in labels]
    names = list(labels)
    if len(seeds) > 1:
        handles += [Line2D([], [], color="#444444", ls=style[s]) for s in seeds]
        names += [f"seed {s}" for s in seeds]
    ax.legend(handles, names, loc="upper right", ncol=2 if len(names) > 6 else 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (cross-entropy, nats/token)")
    ax.set_title("Training loss")
    return to_png(fig)


def curve_figure(
    training: pd.DataFrame, runs: pd.DataFrame, palette: Palette, labels: list[str]
) -> bytes:
    """Validation NLL at the steps the runs logged it (training.validate_every): colour =
    technique, line style = seed. Flat at the end: the runs were long enough."""
    fig, ax = figure(8.5, 4.2)
    seeds = sorted(runs["seed"].unique())
    style = {seed: LINESTYLES[i % len(LINESTYLES)] for i, seed in enumerate(seeds)}
    for run in runs.itertuples():
        points = training[(training["run_id"] == run.run_id) & training["validation_nll"].notna()]
        if points.empty:
            continue
        points = points.sort_values("step")
        ax.plot(
            points["step"],
            points["validation_nll"],
            color=palette.color(run.label),
            ls=style[run.seed],
            marker="o",
            ms=3,
            lw=1.4,
        )
    handles = [Line2D([], [], color=palette.color(lab), lw=2) for lab in labels]
    ax.legend(handles, list(labels), loc="upper right", ncol=2 if len(labels) > 6 else 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation NLL (nats/token)")
    ax.set_title("Learning curve")
    return to_png(fig)
