"""The transfer atlas section: what each technique did to the UDHR languages it never saw,
against how related they are to the training languages.

Transfer here is the change in nats per byte against the base model (negative = the technique
made the language more predictable), per language the mean over its articles and the technique's
seeds. The trends are ordinary least squares over languages with t intervals; the slope
difference against the baseline is the slope of the per-language paired difference (technique
minus baseline), so what both share cancels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from whichlora.evaluate.atlas import NLL_BYTE, NLL_TOKEN
from whichlora.report.document import (
    Document,
    Figure,
    Heading,
    Section,
    Table,
    fmt_ci,
    fmt_int,
    fmt_num,
)
from whichlora.report.inputs import ReportInputs
from whichlora.report.style import OKABE_ITO, figure, styled, to_png
from whichlora.store import BASE

SHARED, OTHER = OKABE_ITO[0], OKABE_ITO[5]  # blue / vermillion: safe for colour-blind readers
TOP = 10
MIN_FAMILY = 3  # smaller families are pooled as "other families" in the table
X_LABEL = "URIEL+ distance to the nearest training language (mean of genetic, syntactic, geo)"


def _relatedness(inputs: ReportInputs, languages: list[str]) -> pd.DataFrame:
    from whichlora.data.atlas import atlas_metadata
    from whichlora.data.relatedness import relatedness
    from whichlora.data.udhr import udhr_available, udhr_languages

    meta: dict[str, dict[str, str]] = {lang: {} for lang in languages}
    trained = {lang: {} for lang in inputs.study.data.trained_languages}
    if udhr_available():
        chosen = udhr_languages(complete_only=False)
        known = {lang: chosen[lang] for lang in [*languages, *trained] if lang in chosen}
        found = atlas_metadata(known)
        meta = {lang: found.get(lang, {}) for lang in languages}
        trained = {lang: found.get(lang, {}) for lang in trained}
    return relatedness(meta, trained)


def atlas_table(inputs: ReportInputs) -> pd.DataFrame:
    """One row per (technique, language): relatedness, base and tuned NLL per byte, deltas."""
    frame = inputs.atlas
    runs = inputs.runs.set_index("run_id")
    per_lang = frame.groupby(["run_id", "language", "metric"])["value"].mean().unstack("metric")
    per_lang = per_lang.reset_index()
    base = per_lang[per_lang["run_id"] == BASE].set_index("language")
    tuned = per_lang[per_lang["run_id"].isin(runs.index)].copy()
    tuned["technique"] = tuned["run_id"].map(runs["label"])
    for metric in (NLL_BYTE, NLL_TOKEN):
        tuned[f"delta_{metric}"] = tuned[metric] - tuned["language"].map(base[metric])
    grouped = tuned.groupby(["technique", "language"])
    out = grouped[[NLL_BYTE, f"delta_{NLL_BYTE}", f"delta_{NLL_TOKEN}"]].mean()
    out["n_seeds"] = grouped["run_id"].nunique()
    out = out.reset_index().rename(columns={NLL_BYTE: "nll_byte"})
    out["base_nll_byte"] = out["language"].map(base[NLL_BYTE])
    out = out.rename(
        columns={f"delta_{NLL_BYTE}": "delta_nll_byte", f"delta_{NLL_TOKEN}": "delta_nll_token"}
    )
    rel = _relatedness(inputs, sorted(set(frame["language"])))
    trained = set(inputs.study.data.trained_languages)
    rel["group"] = [
        "source" if lang == inputs.source else "seen" if lang in trained else "unseen"
        for lang in rel["language"]
    ]
    merged = rel.merge(out, on="language", how="right")
    order = {label: i for i, label in enumerate(inputs.labels)}
    merged = merged.sort_values(
        ["technique", "language"], key=lambda s: s.map(order) if s.name == "technique" else s
    )
    first = ["technique", "language", "name", "group"]
    rest = [c for c in merged.columns if c not in first]
    return merged[first + rest].reset_index(drop=True)


def fit_line(x: np.ndarray, y: np.ndarray, alpha: float = 0.05) -> dict[str, Any]:
    """OLS y = a + b x: slope with its t interval, and a function for the mean's band."""
    n = len(x)
    out: dict[str, Any] = {"n": n, "slope": math.nan, "low": math.nan, "high": math.nan}
    if n < 3 or np.ptp(x) == 0:
        return out
    fit = stats.linregress(x, y)
    t = stats.t.ppf(1 - alpha / 2, n - 2)
    resid = y - (fit.intercept + fit.slope * x)
    s = math.sqrt(float(resid @ resid) / (n - 2))
    sxx = float(((x - x.mean()) ** 2).sum())

    def band(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mid = fit.intercept + fit.slope * grid
        half = t * s * np.sqrt(1 / n + (grid - x.mean()) ** 2 / sxx)
        return mid, mid - half, mid + half

    out.update(
        slope=float(fit.slope),
        low=float(fit.slope - t * fit.stderr),
        high=float(fit.slope + t * fit.stderr),
        band=band,
    )
    return out


def mean_ci(values: pd.Series, alpha: float = 0.05) -> tuple[float, float, float]:
    v = values.dropna().to_numpy(dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, math.nan
    if len(v) < 2:
        return float(v.mean()), math.nan, math.nan
    half = stats.t.ppf(1 - alpha / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean() - half), float(v.mean() + half)


@styled
def atlas_figure(table: pd.DataFrame, labels: list[str], alpha: float) -> bytes:
    """Delta NLL per byte against distance, one panel per technique, colour = script match."""
    cols = min(3, len(labels))
    rows = math.ceil(len(labels) / cols)
    fig, axes = figure(
        4.6 * cols, 3.8 * rows, nrows=rows, ncols=cols, squeeze=False, sharex=True, sharey=True
    )
    placed = table.dropna(subset=["distance", "delta_nll_byte"])
    for ax in axes.flat[len(labels) :]:
        ax.set_visible(False)
    for ax, label in zip(axes.flat, labels, strict=False):
        sub = placed[placed["technique"] == label]
        ax.axhline(0, color="#999999", lw=0.8, zorder=0)
        for shared, color, name in ((True, SHARED, "shares"), (False, OTHER, "no")):
            part = sub[sub["script_shared"] == shared]
            ax.scatter(
                part["distance"],
                part["delta_nll_byte"],
                s=16,
                color=color,
                alpha=0.7,
                lw=0,
                marker="o" if shared else "^",
                label=f"{name} training script ({len(part)})",
            )
        fit = fit_line(sub["distance"].to_numpy(float), sub["delta_nll_byte"].to_numpy(float))
        if "band" in fit:
            grid = np.linspace(sub["distance"].min(), sub["distance"].max(), 50)
            mid, low, high = fit["band"](grid)
            ax.plot(grid, mid, color="black", lw=1.4)
            ax.fill_between(grid, low, high, color="black", alpha=0.15, lw=0)
        ax.set_title(f"{label}: slope {_sig(fit['slope'], fit['low'], fit['high'])}")
        ax.set_xlabel("distance to nearest training language")
        ax.set_ylabel("Δ nats/byte vs base (↓ better)")
        ax.legend(loc="best", frameon=False, fontsize=8)
    return to_png(fig)


def _sig(value: float, low: float, high: float) -> str:
    """Three significant digits: atlas deltas are small numbers of nats per byte."""
    if not math.isfinite(value):
        return "–"
    text = f"{value:+.3g}"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{low:+.3g}, {high:+.3g}]"
    return text.replace("-", "−")


def _group_table(table: pd.DataFrame, labels: list[str], alpha: float) -> pd.DataFrame:
    rows = []
    families = table.drop_duplicates("language")["family"].value_counts()
    big = set(families[families >= MIN_FAMILY].index)
    keyed = table.assign(
        family_group=table["family"].where(table["family"].isin(big), "other families")
    )
    for kind, column in (("family", "family_group"), ("script", "script")):
        sizes = keyed.drop_duplicates("language")[column].value_counts()
        for value in sizes.index:
            row: dict[str, Any] = {"by": kind, "group": value, "languages": int(sizes[value])}
            for label in labels:
                sub = keyed[(keyed["technique"] == label) & (keyed[column] == value)]
                mean, low, high = mean_ci(sub["delta_nll_byte"], alpha)
                row[label], row[f"{label}_low"], row[f"{label}_high"] = mean, low, high
            rows.append(row)
    return pd.DataFrame(rows)


def _slopes(table: pd.DataFrame, labels: list[str], baseline: str, alpha: float) -> pd.DataFrame:
    placed = table.dropna(subset=["distance", "delta_nll_byte"])
    wide = placed.pivot_table(index="language", columns="technique", values="delta_nll_byte")
    distance = placed.drop_duplicates("language").set_index("language")["distance"]
    rows = []
    for label in labels:
        if label not in wide:
            continue
        own = wide[label].dropna()
        fit = fit_line(distance[own.index].to_numpy(float), own.to_numpy(float), alpha)
        row = {"technique": label, "languages": fit["n"], "slope": fit["slope"]}
        row.update(slope_low=fit["low"], slope_high=fit["high"])
        diff = {"difference": math.nan, "difference_low": math.nan, "difference_high": math.nan}
        if label != baseline and baseline in wide:
            paired = (wide[label] - wide[baseline]).dropna()
            d = fit_line(distance[paired.index].to_numpy(float), paired.to_numpy(float), alpha)
            diff = {
                "difference": d["slope"],
                "difference_low": d["low"],
                "difference_high": d["high"],
            }
        rows.append({**row, **diff})
    return pd.DataFrame(rows)


def _slope_word(row: pd.Series) -> str:
    low, high = row["difference_low"], row["difference_high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    if low > 0:
        return "hurts distant languages more than the baseline"
    if high < 0:
        return "helps distant languages more than the baseline"
    return "no clear difference"


def _verdict_rows(inputs: ReportInputs) -> pd.DataFrame:
    import json

    v = inputs.verdicts
    if v.empty:
        return pd.DataFrame()
    v = v[v["metric"] == NLL_BYTE]
    rows = []
    for record in v.to_dict("records"):
        payload = json.loads(record["payload"])
        rows.append(
            {
                "technique": inputs.label_of(str(record["technique"])),
                "family": record["family"],
                "verdict": record["verdict"],
                "vs baseline (nats/byte)": fmt_ci(
                    payload.get("estimate"), payload.get("ci_low"), payload.get("ci_high"), 4
                ),
                "languages": fmt_int(payload.get("n_languages")),
            }
        )
    return pd.DataFrame(rows)


def atlas_section(inputs: ReportInputs, doc: Document) -> Section:
    section = Section("Transfer atlas: languages never trained on", "atlas")
    if inputs.study.evaluation.atlas is None:
        section.note("No atlas in this study: set evaluation.atlas (see docs/atlas.md).")
        return section
    if inputs.atlas.empty or BASE not in set(inputs.atlas["run_id"]) or inputs.runs.empty:
        section.note("No atlas scores of the base and a run yet: run `whichlora evaluate`.")
        return section
    table = atlas_table(inputs)
    labels = [label for label in inputs.labels if label in set(table["technique"])]
    unseen = table[table["group"] == "unseen"]
    n_lang = unseen["language"].nunique()
    unknown = unseen[~unseen["known"].astype(bool)]["language"].unique()
    k = inputs.study.evaluation.atlas.articles
    section.text(
        f"NLL per UTF-8 byte of UDHR {'article 1' if k == 1 else f'articles 1–{k}'} in "
        f"{table['language'].nunique()} languages ({n_lang} never trained on), against the base "
        "model. Negative = the technique made the language more predictable. Below: the "
        f"{n_lang} unseen languages; every language is in tables/atlas.csv."
        + (
            f" {len(unknown)} without URIEL+ data ({', '.join(sorted(unknown)[:10])}) are kept "
            "in the tables, left out of the distance plot and slopes."
            if len(unknown)
            else ""
        )
    )
    section.blocks.append(
        Figure(
            "atlas_distance",
            atlas_figure(unseen, labels, inputs.alpha),
            "Change in nats per byte against the base per unseen language, by distance to the "
            "nearest training language; blue circles share a training language's script, "
            "vermillion triangles do not; line = least-squares trend, band = its 95% interval.",
            "Scatter plots of transfer against linguistic distance, one per technique",
        )
    )
    verdicts = _verdict_rows(inputs)
    if not verdicts.empty:
        section.blocks.append(
            Table(
                "atlas_verdicts",
                "The verdict on nats per byte (see Decision), per language family of the study.",
                verdicts,
                verdicts,
            )
        )
    section.blocks.append(Heading("By language family and by script"))
    groups = _group_table(unseen, labels, inputs.alpha)
    display = groups[["by", "group", "languages"]].copy()
    for label in labels:
        display[label] = [
            fmt_ci(r[label], r[f"{label}_low"], r[f"{label}_high"], 4)
            for r in groups.to_dict("records")
        ]
    display["languages"] = display["languages"].map(str)
    section.blocks.append(
        Table(
            "atlas_groups",
            f"Mean change in nats per byte with its 95% t interval over languages; families "
            f"with fewer than {MIN_FAMILY} atlas languages pooled.",
            display,
            groups,
        )
    )
    section.blocks.append(Heading(f"The {TOP} most helped and most hurt languages"))
    for label in labels:
        sub = unseen[unseen["technique"] == label].dropna(subset=["delta_nll_byte"])
        helped = sub[sub["delta_nll_byte"] < 0].nsmallest(TOP, "delta_nll_byte")
        hurt = sub[sub["delta_nll_byte"] > 0].nlargest(TOP, "delta_nll_byte")
        if helped.empty and hurt.empty:
            continue
        rows = []
        for i in range(max(len(helped), len(hurt))):
            row: dict[str, str] = {"rank": str(i + 1)}
            for name, part in (("helped", helped), ("hurt", hurt)):
                if i < len(part):
                    r = part.iloc[i]
                    row[name] = f"{r['name']} ({r['language']}, {r['script']})"
                    row[f"{name} Δ"] = fmt_num(r["delta_nll_byte"], 4, signed=True)
            rows.append(row)
        shown = pd.DataFrame(rows).fillna("")  # fewer hurt than helped: blank, not 'nan'
        section.blocks.append(
            Table(f"atlas_extremes_{label}", f"{label}: Δ nats per byte.", shown, shown)
        )
    section.blocks.append(Heading("Does transfer fall off with distance differently?"))
    slopes = _slopes(unseen, labels, inputs.baseline, inputs.alpha)
    if not slopes.empty:
        shown = pd.DataFrame(
            {
                "technique": slopes["technique"],
                "languages": slopes["languages"].map(str),
                "slope (Δ nats/byte per unit distance)": [
                    _sig(r["slope"], r["slope_low"], r["slope_high"])
                    for r in slopes.to_dict("records")
                ],
                f"slope − {inputs.baseline}'s": [
                    _sig(r["difference"], r["difference_low"], r["difference_high"])
                    for r in slopes.to_dict("records")
                ],
                "reading": [_slope_word(r) for _, r in slopes.iterrows()],
            }
        )
        section.blocks.append(
            Table(
                "atlas_slopes",
                "Slope of the trend per technique, and of the per-language difference from "
                "the baseline (95% t intervals over languages; languages are not independent "
                "draws, so read these as descriptive).",
                shown,
                slopes,
            )
        )
    doc.exports["atlas"] = table  # tables/atlas.csv: every (technique, language)
    return section


def atlas_cost_table(inputs: ReportInputs) -> Table | None:
    cost = inputs.atlas_cost
    if cost.empty:
        return None
    runs = inputs.runs.set_index("run_id")["label"]
    display = pd.DataFrame(
        {
            "model": [r if r == BASE else f"{r} ({runs.get(r, r)})" for r in cost["run_id"]],
            "seconds": cost["seconds"].map(lambda v: fmt_num(v, 1)),
            "tokens scored": cost["tokens"].map(fmt_int),
            "tokens / s": [
                fmt_int(t / s) if s and math.isfinite(s) and s > 0 else "–"
                for t, s in zip(cost["tokens"], cost["seconds"], strict=True)
            ],
        }
    )
    return Table(
        "atlas_cost",
        "Transfer atlas scoring per model (evaluation.atlas): seconds of the atlas unit and "
        "tokens scored.",
        display,
        cost,
    )
