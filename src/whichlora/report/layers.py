"""Layer-wise plots of what tuning did inside the model: language similarity per layer beside the
base, how far each layer drifted from the base (CKA), and whether each technique's layers stay
alike LoRA's (the alike table, analyze/alike.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import matplotlib.lines
import numpy as np
import pandas as pd

from whichlora.report.inputs import BASE, ReportInputs
from whichlora.report.style import BASE_COLOR, figure, styled, to_png

CKA_TITLES = {"cka_base": "linear CKA", "cka_base_unbiased": "unbiased CKA"}
CKA_YLABELS = dict.fromkeys(CKA_TITLES, "CKA with base (1 = unchanged)")
ALIGNMENT_TITLES = {
    "retrieval_to_source": "translation retrieval",
    "probe": "language-ID probe",
    "probe_selectivity": "probe selectivity",
}
ALIGNMENT_YLABELS = {
    "retrieval_to_source": "retrieval accuracy to {source} (share)",
    "probe": "language-ID probe accuracy (share)",
    "probe_selectivity": "probe − control-task accuracy",
}
# Below this many parallel sentences per language the control task's labels (one per sentence)
# are too few to learn across translations: measured on SmolLM2-135M, its accuracy stayed at
# chance (0.10-0.23 for 5 languages) with 6 sentences and rose to 0.23-0.31 with 60 (docs/alike.md).
MIN_CONTROL_SENTENCES = 30
ALIKE_ORDER = ("alike", "cannot tell", "differs")
ALIKE_COLORS = {"alike": "#009E73", "cannot tell": "#BBBBBB", "differs": "#D55E00"}
ALIKE_SYMBOLS = {"alike": "=", "cannot tell": "?", "differs": "≠"}
ALIKE_COLUMNS = [
    "technique", "baseline", "pooling", "layer", "verdict", "estimate", "ci_low", "ci_high",
    "margin", "cross", "floor_baseline", "floor_technique", "baseline_drift", "seed_se",
    "sentence_se", "df", "p_alike", "p_alike_holm", "p_differs", "p_differs_holm", "n_seeds",
    "n_sentences", "n_languages", "more_seeds", "note",
]  # fmt: skip


def choose_pooling(analysis: pd.DataFrame) -> str | None:
    """Mean pooling when there is a choice: it summarises a sentence, not its last token."""
    poolings = sorted(set(analysis["pooling"]))
    if not poolings:
        return None
    return "mean" if "mean" in poolings else poolings[0]


def labelled(inputs: ReportInputs, measure: str, pooling: str) -> pd.DataFrame:
    """Rows of one measure with a `technique` column (label, or 'base')."""
    a = inputs.analysis
    frame = a[(a["measure"] == measure) & (a["pooling"] == pooling)].copy()
    names = {**dict(zip(inputs.runs["run_id"], inputs.runs["label"], strict=True)), BASE: BASE}
    frame["technique"] = frame["run_id"].map(names)
    return frame.dropna(subset=["technique", "value"])


def similarity_maps(inputs: ReportInputs, pooling: str) -> pd.DataFrame:
    """sim_to_source as technique, layer, language, value (mean over seeds); source left out."""
    frame = labelled(inputs, "sim_to_source", pooling)
    frame = frame[frame["language"] != inputs.source]
    out = frame.groupby(["technique", "layer", "language"], as_index=False)["value"].mean()
    return out


def _language_order(inputs: ReportInputs, present: set[str]) -> tuple[list[str], int]:
    seen = [lang for lang in inputs.seen if lang in present]
    rest = sorted(present - set(seen))
    return seen + rest, len(seen)


@styled
def heatmap_figure(maps: pd.DataFrame, inputs: ReportInputs, difference: bool) -> bytes:
    """Layer x language panels: base then each technique, or each technique minus the base."""
    languages, n_seen = _language_order(inputs, set(maps["language"]))
    names = [lab for lab in inputs.labels if lab in set(maps["technique"])]
    if not difference:
        names = [BASE, *names] if BASE in set(maps["technique"]) else names
    grids = {
        name: maps[maps["technique"] == name]
        .pivot(index="layer", columns="language", values="value")
        .reindex(columns=languages)
        for name in names
    }
    if difference:
        base = (
            maps[maps["technique"] == BASE]
            .pivot(index="layer", columns="language", values="value")
            .reindex(columns=languages)
        )
        grids = {n: g - base.reindex(g.index) for n, g in grids.items()}
    values = np.concatenate([g.to_numpy(dtype=float).ravel() for g in grids.values()])
    values = values[np.isfinite(values)]
    if difference:
        span = float(np.abs(values).max()) if values.size else 0.0
        vmin, vmax, cmap = -(span or 1.0), span or 1.0, "PuOr_r"
    else:
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        vmin, vmax, cmap = low, high if high > low else low + 1e-6, "cividis"
    ncols = min(len(grids), 4)
    nrows = math.ceil(len(grids) / ncols)
    fig, axes = figure(
        2.6 * ncols + 1.0, 3.6 * nrows, nrows=nrows, ncols=ncols, squeeze=False, sharey=True
    )
    image = None
    for ax, (name, grid) in zip(axes.ravel(), grids.items(), strict=False):
        image = ax.imshow(
            grid.to_numpy(dtype=float),
            aspect="auto",
            origin="lower",
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            interpolation="nearest",
        )
        ax.set_xticks(range(len(languages)), languages, rotation=90 if len(languages) > 8 else 0)
        ticks = list(range(0, len(grid.index), max(1, len(grid.index) // 8)))
        ax.set_yticks(ticks, [str(grid.index[i]) for i in ticks])
        if 0 < n_seen < len(languages):
            ax.axvline(n_seen - 0.5, color="white", lw=2)
        ax.set_title(name if not difference else f"{name} − base")
        ax.set_xlabel("language (seen | unseen)" if 0 < n_seen < len(languages) else "language")
        ax.grid(False)
    for ax in axes.ravel()[len(grids) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("layer (0 = embeddings)")
    what = "change in cosine similarity" if difference else "cosine similarity"
    fig.colorbar(image, ax=axes.ravel().tolist(), label=f"{what} to {inputs.source}", shrink=1.0)
    return to_png(fig)


def layer_lines(inputs: ReportInputs, pooling: str, measures: Iterable[str]) -> pd.DataFrame:
    """Per technique (and base), measure and layer: mean over target languages, then the mean,
    min and max over seeds (the band shows how much seeds disagree)."""
    parts = []
    for measure in measures:
        frame = labelled(inputs, measure, pooling)
        frame = frame[frame["language"] != inputs.source]
        if frame.empty:
            continue
        per_run = frame.groupby(["technique", "run_id", "layer"], as_index=False)["value"].mean()
        stats = per_run.groupby(["technique", "layer"])["value"].agg(["mean", "min", "max"])
        parts.append(stats.reset_index().assign(measure=measure))
    columns = ["measure", "technique", "layer", "mean", "min", "max"]
    return pd.concat(parts)[columns] if parts else pd.DataFrame(columns=columns)


@styled
def lines_figure(
    lines: pd.DataFrame, inputs: ReportInputs, titles: dict[str, str], ylabel: dict[str, str]
) -> bytes:
    """One panel per measure, one line per technique (seed range shaded), base dashed grey."""
    measures = [m for m in titles if m in set(lines["measure"])]
    fig, axes = figure(4.6 * len(measures), 3.8, ncols=len(measures), squeeze=False)
    for ax, measure in zip(axes[0], measures, strict=True):
        frame = lines[lines["measure"] == measure]
        for name in [BASE, *inputs.labels]:
            curve = frame[frame["technique"] == name].sort_values("layer")
            if curve.empty:
                continue
            is_base = name == BASE
            color = BASE_COLOR if is_base else inputs.palette.color(name)
            ax.plot(
                curve["layer"],
                curve["mean"],
                color=color,
                ls="--" if is_base else "-",
                marker=None if is_base else inputs.palette.marker(name),
                ms=3.5,
                lw=1.6,
                label=name,
            )
            if (curve["max"] > curve["min"]).any():
                ax.fill_between(
                    curve["layer"], curve["min"], curve["max"], color=color, alpha=0.15, lw=0
                )
        ax.set_title(titles[measure])
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(ylabel[measure].format(source=inputs.source))
        ax.legend(fontsize=8)
    return to_png(fig)


# --------------------------------------------------------------------------- alike LoRA


def alike_frame(inputs: ReportInputs, pooling: str) -> pd.DataFrame:
    """The alike table of one pooling, a column per number of the payload, techniques in study
    order and layers ascending."""
    stored = inputs.alike
    if stored.empty:
        return pd.DataFrame(columns=ALIKE_COLUMNS)
    stored = stored[stored["pooling"] == pooling]
    frame = pd.DataFrame([json.loads(text) for text in stored["payload"]])
    if frame.empty:
        return pd.DataFrame(columns=ALIKE_COLUMNS)
    frame = frame.reindex(columns=ALIKE_COLUMNS)
    order = {name: i for i, name in enumerate(inputs.labels)}
    frame = frame[frame["technique"].isin(order)]
    frame = frame.assign(_order=frame["technique"].map(order)).sort_values(["_order", "layer"])
    return frame.drop(columns="_order").reset_index(drop=True)


def alike_strip(frame: pd.DataFrame) -> str:
    """One symbol per layer in layer order: = alike, ≠ differs, ? cannot tell."""
    return "".join(ALIKE_SYMBOLS.get(str(v), "?") for v in frame.sort_values("layer")["verdict"])


@styled
def alike_figure(frame: pd.DataFrame, inputs: ReportInputs) -> bytes:
    """Per technique: the verdict strip over layers, then the excess distance to LoRA beyond
    LoRA's seed floor with its 90% interval, the margin dashed."""
    names = list(dict.fromkeys(frame["technique"]))
    fig, axes = figure(7.5, 0.5 + 2.1 * len(names), nrows=len(names), squeeze=False, sharex=True)
    for ax, name in zip(axes[:, 0], names, strict=True):
        rows = frame[frame["technique"] == name].sort_values("layer")
        layers = rows["layer"].to_numpy(dtype=float)
        est = rows["estimate"].to_numpy(dtype=float)
        low = rows["ci_low"].to_numpy(dtype=float)
        high = rows["ci_high"].to_numpy(dtype=float)
        margin = float(rows["margin"].iloc[0])
        ax.axhline(0.0, color=BASE_COLOR, lw=1)
        ax.axhline(margin, color=BASE_COLOR, lw=1, ls="--")
        for verdict in ALIKE_ORDER:
            pick = (rows["verdict"] == verdict).to_numpy() & np.isfinite(est)
            if not pick.any():
                continue
            ax.errorbar(
                layers[pick],
                est[pick],
                yerr=[est[pick] - low[pick], high[pick] - est[pick]],
                fmt="o",
                ms=3.5,
                lw=1,
                color=ALIKE_COLORS[verdict],
                label=verdict,
            )
        top = np.nanmax([margin * 1.6, *high[np.isfinite(high)]]) if len(high) else margin
        bottom = np.nanmin([-margin * 0.3, *low[np.isfinite(low)]]) if len(low) else 0.0
        top *= 1.1  # the strip sits above the highest interval
        ax.scatter(
            layers,
            np.full(len(layers), top),
            marker="s",
            s=28,
            c=[ALIKE_COLORS.get(str(v), "#BBBBBB") for v in rows["verdict"]],
            clip_on=False,
        )
        ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.08 * (top - bottom))
        ax.set_title(f"{name} vs {inputs.baseline}", loc="left")
        ax.set_ylabel("excess 1 − CKA")
    handles = [
        matplotlib.lines.Line2D([], [], color=ALIKE_COLORS[v], marker="s", ls="", label=v)
        for v in ALIKE_ORDER
    ]
    axes[0, 0].legend(handles=handles, fontsize=8, loc="upper left", ncols=3, frameon=False,
                      bbox_to_anchor=(0.35, 1.22))  # fmt: skip
    axes[-1, 0].set_xlabel("layer (0 = embeddings)")
    return to_png(fig)

