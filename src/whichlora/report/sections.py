"""The report's sections on results, in the order a reader needs them: verdict, per-language
changes, the trade-off, the ranking. Each says what is missing instead of failing."""

from __future__ import annotations

import math

import pandas as pd

from whichlora.evaluate.metrics import display_name
from whichlora.report.cdplot import cd_figure
from whichlora.report.decision import (
    FAMILY_TITLES,
    VERDICT_CLASS,
    decision_table,
    margin_text,
    primary_metric,
    recommendation,
    verdict_frame,
)
from whichlora.report.deltas import base_table
from whichlora.report.document import (
    Block,
    Figure,
    Heading,
    Section,
    Table,
    Text,
    cell_classes,
    fmt_num,
)
from whichlora.report.familiar import comparisons, familiar_text, friedman_rows
from whichlora.report.figures import TRADEOFF_AXES, tradeoff_figure
from whichlora.report.inputs import ReportInputs
from whichlora.report.tables import (
    SHOWN_METRICS,
    base_scores_table,
    delta_cell,
    delta_display,
    fidelity_table,
)

CI_NOTE = (
    "Change against the base model, mean over seeds, with a 95% bootstrap interval over examples "
    "(all seeds of an example resampled together). Blue / orange cells: the interval lies wholly "
    "on the better / worse side of zero for this language alone. These intervals answer 'did "
    "tuning change this language?' and count item noise only; the verdicts in the Decision "
    "section answer 'does this technique differ from the baseline?' and also count seed noise, "
    "so an interval here can exclude zero where the verdict stays inconclusive."
)


def _seeds(inputs: ReportInputs) -> int:
    return int(inputs.runs.groupby("label")["seed"].nunique().max()) if len(inputs.runs) else 0


def verdict_section(inputs: ReportInputs, points: pd.DataFrame) -> Section:
    """The decision first (one row per technique, a sentence that follows from it, the trade-off
    plot); every comparison and the familiar rank-test view below, collapsed."""
    section = Section("Decision", "verdict")
    frame = verdict_frame(inputs)
    primary = primary_metric(inputs, frame)
    if frame.empty or primary is None:
        section.blocks.append(Text(_no_verdict(inputs), "verdict"))
    else:
        section.blocks.append(decision_table(inputs, frame, primary))
        advice = recommendation(inputs, frame, primary)
        evidence = _evidence(frame)
        section.blocks.append(Text(f"{advice} {evidence}".strip(), "verdict"))
    if not points.empty:
        section.blocks.append(_tradeoff_figure(inputs, points))
    leaders = _descriptive(points)
    if leaders:
        section.text(leaders)
    if not frame.empty:
        section.blocks.append(every_comparison_table(frame))
    section.blocks.extend(_familiar_view(inputs))
    return section


def _no_verdict(inputs: ReportInputs) -> str:
    if len(inputs.labels) < 2:
        return (
            "Nothing to decide yet: a verdict needs the baseline and at least one other technique "
            f"with evaluated runs ({len(inputs.labels)} so far)."
        )
    if inputs.baseline not in inputs.labels:
        return (
            f"No verdict: the baseline {inputs.baseline} has no evaluated run. Fix: set "
            "analysis.baseline to one of " + ", ".join(inputs.labels) + "."
        )
    return (
        "No verdict yet: run `whichlora analyze` (or `whichlora run`) to compare the techniques "
        f"with {inputs.baseline}."
    )


def _evidence(frame: pd.DataFrame) -> str:
    from whichlora.analyze.verdicts import evidence_sentence

    return evidence_sentence(frame)


def _tradeoff_figure(inputs: ReportInputs, points: pd.DataFrame) -> Figure:
    return Figure(
        "tradeoff",
        tradeoff_figure(points, inputs.palette, inputs.labels, inputs.source),
        "Each small point is one seed; the large outlined marker is the technique's mean. "
        f"x: mean change against the base over the {len(inputs.targets)} target languages, "
        "signed so that right is better; y: change on the source language "
        f"{inputs.source}, signed so that up is forgetting. Best: bottom right.",
        "Scatter of transfer gain against retention loss per technique and seed",
    )


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def every_comparison_table(frame: pd.DataFrame) -> Table:
    """All verdicts, every family and metric, with the numbers behind each word."""
    display = pd.DataFrame(
        {
            "family": frame["family"].map(lambda f: FAMILY_TITLES.get(f, f)),
            "metric": frame["metric"].map(display_name),
            "technique": frame["technique"],
            "verdict": frame["verdict"],
            "Δ vs baseline [95% CI]": [
                "–"
                if not math.isfinite(r.estimate)
                else delta_cell(str(r.metric), r.estimate, r.ci_low, r.ci_high)
                for r in frame.itertuples()
            ],
            "margin": [margin_text(str(r.metric), r.margin) for r in frame.itertuples()],
            "p diff (Holm)": frame["p_difference_holm"].map(_p),
            "p equiv (Holm)": frame["p_equivalence_holm"].map(_p),
            "seeds": frame.get("n_seeds", pd.Series(dtype=object)).map(_count),
            "seed variance": frame.get("seed_variance", pd.Series(dtype=object)).fillna("–"),
            "P(better/equiv/worse)": [
                "–"
                if not math.isfinite(r.p_bayes_better)
                else f"{r.p_bayes_better:.2f} / {r.p_bayes_equivalent:.2f} / {r.p_bayes_worse:.2f}"
                for r in frame.itertuples()
            ],
            "more seeds needed": frame.get("more_seeds", pd.Series(dtype=object)).map(_count),
            "note": frame.get("note", pd.Series(dtype=object)).fillna(""),
        }
    )
    tones = [VERDICT_CLASS.get(str(v), "") for v in frame["verdict"]]
    return Table(
        "verdicts",
        f"Every comparison with the baseline ({len(frame)} rows): verdict, estimate and 95% "
        "interval, margin of equivalence, Holm-corrected p-values of the difference and of the "
        "equivalence (TOST) tests, seeds paired, how seed variance was estimated, the Bayesian "
        "signed-rank view over languages, and the extra seeds that would settle an inconclusive "
        "comparison at 80% power.",
        display,
        frame,
        cell_classes(display, {"verdict": tones}),
        collapsed=True,
    )


def _count(value: object) -> str:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"
    return str(int(number)) if math.isfinite(number) else "–"


def _familiar_view(inputs: ReportInputs) -> list[Block]:
    """The rank tests reviewers know (Wilcoxon over seed x language cells, Holm), kept as a
    second opinion: they ignore item-level evidence, so they are not the verdict."""
    table = comparisons(inputs)
    if table.empty:
        return []
    rows = []
    for r in table.itertuples():
        mark = f"{r.direction} *" if r.significant else "n.s."
        rows.append(
            {
                "family": r.family,
                "metric": display_name(r.metric),
                "technique": r.technique,
                "vs": r.baseline,
                "cells": fmt_num(r.n_pairs, 0),
                "Δ vs baseline [95% item bootstrap]": delta_cell(
                    r.metric, r.mean_diff, r.ci_low, r.ci_high
                ),
                "Holm p": fmt_num(r.p_holm, 3),
                "effect r": fmt_num(r.rank_biserial, 2, signed=True),
                "result": mark,
            }
        )
    display = pd.DataFrame(rows)
    results = [
        ("good" if r.direction == "better" else "bad") if r.significant else ""
        for r in table.itertuples()
    ]
    return [
        Table(
            "significance",
            "The familiar view, not the verdict: a Wilcoxon signed-rank test over paired "
            "(seed × language) cell means, Holm-corrected, beside an interval that resamples "
            "items only (it ignores seed noise, so it can exclude zero where the verdict does "
            "not). " + familiar_text(inputs, table, _seeds(inputs)),
            display,
            table,
            cell_classes(display, {"result": results}),
            collapsed=True,
        )
    ]


def _tidy(value: float) -> float:
    """Means of identical scores differ from 0 by summation noise (1e-15): that is no change."""
    return 0.0 if abs(value) < 1e-9 else float(value)


def _transfer_phrase(gain: pd.Series, unit: str) -> str:
    """Best mean change on target languages, worded for its sign (a loss is not a gain)."""
    best, value = gain.idxmax(), _tidy(gain.max())
    if value > 0:
        return f"{best} gained most on target languages ({value:+.3g} {unit})"
    if value == 0:
        return f"no technique gained on target languages ({best}: {value:+.3g} {unit})"
    return f"every technique lost on target languages, {best} least ({value:+.3g} {unit})"


def _retention_phrase(loss: pd.Series, unit: str) -> str:
    """Smallest mean retention loss on the source, worded for its sign."""
    best, value = loss.idxmin(), _tidy(loss.min())
    if value > 0:
        return f"{best} forgot least on the source ({-value:+.3g} {unit})"
    return f"{best} did best on the source, with no loss ({_tidy(-value):+.3g} {unit})"


def _descriptive(points: pd.DataFrame) -> str:
    """Which technique looks best on average: useful orientation, flagged as not a test."""
    if points.empty or points["technique"].nunique() < 2:
        return ""
    parts = []
    for metric, (sign, scale, name, unit) in TRADEOFF_AXES.items():
        means = points[points["metric"] == metric].groupby("technique")[["transfer", "retention"]]
        means = means.mean()
        if means.empty:
            continue
        gain, loss = sign * scale * means["transfer"], -sign * scale * means["retention"]
        unit = "pp" if unit == "percentage points" else unit
        parts.append(
            f"on {name}, {_transfer_phrase(gain, unit)} and {_retention_phrase(loss, unit)}"
        )
    return (
        "Descriptively (means, not a significance claim): " + "; ".join(parts) + "."
        if parts
        else ""
    )


def language_section(inputs: ReportInputs, deltas: pd.DataFrame) -> Section:
    section = Section("Per-language transfer and retention", "languages")
    if inputs.metrics.empty:
        section.note("No evaluation results yet: run `whichlora evaluate`.")
        return section
    if deltas.empty:
        missing = "the base model" if "base" not in set(inputs.metrics["run_id"]) else "any run"
        section.note(f"No changes against the base can be computed: {missing} has no scores yet.")
    section.text(CI_NOTE)
    parts = [
        (
            "seen",
            "Seen target languages (in the training data)",
            ["language", "technique"],
            "Transfer to languages the adapters were trained on.",
        ),
        (
            "unseen",
            "Unseen target languages (never trained on)",
            ["language", "technique"],
            "Zero-shot transfer to languages absent from the training data.",
        ),
        (
            "source",
            f"Retention on the source language ({inputs.source})",
            ["technique"],
            "What the model already knew: accuracy and NLL on the source language measure "
            "retention (a drop in accuracy or a rise in NLL is forgetting).",
        ),
    ]
    for group, title, keys, caption in parts:
        section.blocks.append(Heading(title))
        rows = deltas[deltas["group"] == group]
        table = delta_display(rows, keys, f"{group}_languages", caption)
        if table is None:
            languages = {"seen": inputs.seen, "unseen": inputs.unseen}.get(group, [inputs.source])
            why = "none were evaluated" if not languages else "no run has scores there yet"
            section.note(f"Nothing to show: {why}.")
        else:
            section.blocks.append(table)
    base = base_table(inputs)
    section.blocks.append(Heading("Language fidelity"))
    fidelity = fidelity_table(deltas, base, inputs)
    if fidelity is None:
        section.note("No generation scores (language fidelity) were recorded.")
    else:
        section.blocks.append(fidelity)
    section.blocks.append(Heading("Base model scores"))
    scores = base_scores_table(base, inputs)
    if scores is None:
        section.note("The base model has no per-example scores yet.")
    else:
        section.blocks.append(scores)
    return section


def tradeoff_section(inputs: ReportInputs, points: pd.DataFrame) -> Section:
    section = Section("Trade-off: transfer gain vs retention loss", "tradeoff")
    if points.empty:
        section.note(
            "No trade-off to plot: needs evaluated runs plus base scores on the source language "
            f"({inputs.source}) and at least one target language."
        )
        return section
    section.text("The plot is in the Decision section above; these are the means it shows.")
    means = points.groupby(["technique", "metric"], as_index=False, sort=False).agg(
        seeds=("seed", "nunique"), transfer=("transfer", "mean"), retention=("retention", "mean")
    )
    display = pd.DataFrame(
        {
            "technique": means["technique"],
            "metric": means["metric"].map(display_name),
            "seeds": means["seeds"].astype(str),
            "Δ on targets (mean)": [
                delta_cell(m, t, math.nan, math.nan)
                for m, t in zip(means["metric"], means["transfer"], strict=True)
            ],
            f"Δ on {inputs.source}": [
                delta_cell(m, r, math.nan, math.nan)
                for m, r in zip(means["metric"], means["retention"], strict=True)
            ],
        }
    )
    section.blocks.append(
        Table(
            "tradeoff",
            "Plotted means: change against base (accuracy in percentage points, NLL in "
            "nats/token; for NLL a negative change is an improvement).",
            display,
            points,
        )
    )
    return section


def ranking_section(inputs: ReportInputs) -> Section:
    section = Section("Ranking: critical-difference diagram", "ranking")
    order = {m: i for i, m in enumerate(SHOWN_METRICS)}
    rows = sorted(
        (r for r in friedman_rows(inputs) if len(r["avg_ranks"]) >= 2),
        key=lambda r: (r["family"] != "transfer", order.get(r["metric"], len(order)), r["metric"]),
    )
    if not rows:
        why = (
            f"needs at least two techniques with results ({len(inputs.labels)} so far)"
            if len(inputs.labels) < 2
            else "the analysis has not written Friedman/Nemenyi results yet"
        )
        section.note(f"No ranking to draw: {why}.")
        return section
    section.blocks.append(
        Figure(
            "critical_difference",
            cd_figure([r for r in rows if r["metric"] in order] or rows, inputs.palette),
            "Average rank of each technique over (seed × language) blocks, 1 = best. Techniques "
            "joined by a black bar differ by less than the Nemenyi critical difference (CD) and "
            "cannot be told apart at this sample size.",
            "Critical-difference diagrams of average technique ranks",
        )
    )
    notes = [f"{r['family']} · {r['metric']}: {r['note']}" for r in rows if r["note"]]
    if notes:
        section.note("Notes from the test: " + "; ".join(notes) + ".")
    data = pd.DataFrame(
        [
            {
                "family": r["family"],
                "metric": r["metric"],
                "technique": t,
                "avg_rank": v,
                "cd": r["cd"],
                "friedman_statistic": r["statistic"],
                "friedman_p": r["p_value"],
            }
            for r in rows
            for t, v in r["avg_ranks"].items()
        ]
    )
    labels = [t for t in inputs.labels if t in set(data["technique"])]
    labels += sorted(set(data["technique"]) - set(labels))
    display = pd.DataFrame(
        [
            {
                "family": r["family"],
                "metric": display_name(r["metric"]),
                **{t: fmt_num(r["avg_ranks"].get(t), 2) for t in labels},
                "CD": fmt_num(r["cd"], 2),
                "Friedman χ²": fmt_num(r["statistic"], 2),
                "Friedman p": fmt_num(r["p_value"], 3),
            }
            for r in rows
        ]
    )
    section.blocks.append(
        Table("ranks", "Average rank per technique (1 = best) behind the diagrams.", display, data)
    )
    return section
