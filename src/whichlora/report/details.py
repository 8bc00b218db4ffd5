"""The report's supporting sections: inside the model, cost, and how the study ran (loss curves,
failures, configuration, versions), so a result can be checked and reproduced."""

from __future__ import annotations

import math
import platform

import pandas as pd

from whichlora.report.atlas import atlas_cost_table
from whichlora.report.document import (
    Block,
    Code,
    Document,
    Figure,
    Heading,
    Section,
    Table,
    Text,
    cell_classes,
)
from whichlora.report.figures import curve_figure, loss_figure, smoothing_window
from whichlora.report.inputs import ReportInputs
from whichlora.report.layers import (
    ALIGNMENT_TITLES,
    ALIGNMENT_YLABELS,
    CKA_TITLES,
    CKA_YLABELS,
    MIN_CONTROL_SENTENCES,
    alike_figure,
    alike_frame,
    alike_strip,
    choose_pooling,
    heatmap_figure,
    layer_lines,
    lines_figure,
    similarity_maps,
)
from whichlora.report.tables import cost_table, efficiency_table, overhead_table
from whichlora.store import BASE

ERROR_CHARS = 600


def layers_section(inputs: ReportInputs, doc: Document) -> Section:
    section = Section("Inside the model: layer by layer", "layers")
    pooling = choose_pooling(inputs.analysis)
    if pooling is None:
        section.note("No representation analysis yet: run `whichlora analyze`.")
        return section
    section.text(
        f"Hidden states of parallel sentences, {pooling}-pooled per layer. Similarity to the "
        f"source language ({inputs.source}) is the mean cosine between a sentence and its "
        "translation; higher means the model represents the languages more alike."
    )
    section.blocks.append(Heading("Language similarity to the source, per layer"))
    maps = similarity_maps(inputs, pooling)
    if maps.empty:
        section.note("The analysis has no similarity-to-source measurements.")
    else:
        section.blocks.append(
            Figure(
                "similarity_heatmaps",
                heatmap_figure(maps, inputs, difference=False),
                "Cosine similarity to the source per layer (rows) and language (columns), "
                "mean over seeds; same colour scale in every panel.",
                "Heatmaps of similarity to the source language per layer and language",
            )
        )
        if "base" in set(maps["technique"]) and set(maps["technique"]) - {"base"}:
            section.blocks.append(
                Figure(
                    "similarity_change",
                    heatmap_figure(maps, inputs, difference=True),
                    "Change against the base model: orange = tuning pulled the language "
                    "towards the source, purple = pushed it away.",
                    "Heatmaps of the change in similarity to the source against the base",
                )
            )
        doc.exports["layer_similarity"] = maps
    section.blocks.append(Heading("How far each layer moved from the base (CKA)"))
    cka = layer_lines(inputs, pooling, CKA_TITLES)
    if cka.empty:
        section.note("The analysis has no CKA-to-base measurements.")
    else:
        section.blocks.append(
            Figure(
                "cka_to_base",
                lines_figure(cka, inputs, CKA_TITLES, CKA_YLABELS),
                "Similarity of each layer's representations to the base model's (1 = the "
                "same up to rotation and scale); band = range over seeds.",
                "Line plot of CKA to the base model per layer and technique",
            )
        )
        doc.exports["layer_cka"] = cka
    lines = layer_lines(inputs, pooling, ALIGNMENT_TITLES)
    if not lines.empty:
        section.blocks.append(
            Figure(
                "alignment",
                lines_figure(lines, inputs, ALIGNMENT_TITLES, ALIGNMENT_YLABELS),
                "Retrieval: share of sentences whose nearest source sentence is their "
                "translation (higher = more language-neutral). Probe: accuracy of a linear "
                "classifier telling languages apart (lower = more language-neutral). "
                "Selectivity: probe accuracy minus the same probe's accuracy on a control task "
                "(a random label per parallel sentence, shared by its translations; Hewitt & "
                "Liang 2019), which it can only fit by recognising a sentence across languages: "
                "lower = the layer carries content across languages, not only their identity.",
                "Line plots of retrieval, probe accuracy and probe selectivity per layer",
            )
        )
        doc.exports["layer_alignment"] = lines
        n = inputs.study.analysis.sentences_per_language
        if n < MIN_CONTROL_SENTENCES and "probe_selectivity" in set(lines["measure"]):
            section.note(
                f"Only {n} parallel sentences per language: too few for the probe to learn its "
                "control task, so the selectivity mostly mirrors the probe. Set "
                f"analysis.sentences_per_language to {MIN_CONTROL_SENTENCES} or more (the "
                "bundled sentences have 60; analysis.parallel: udhr has 30 articles)."
            )
    section.blocks.extend(_alike_blocks(inputs, pooling))
    return section


def _alike_blocks(inputs: ReportInputs, pooling: str) -> list[Block]:
    """Are each technique's layers alike LoRA's, beyond LoRA's own seed-to-seed floor?"""
    frame = alike_frame(inputs, pooling)
    if frame.empty:
        return []
    baseline = inputs.baseline
    margin = float(frame["margin"].iloc[0])
    blocks: list[Block] = [
        Heading(f"Do the layers stay alike {baseline}'s?"),
        Text(
            f"Per layer, how much further each technique's models sit from {baseline}'s than "
            f"{baseline}'s own reruns sit from each other (1 − linear CKA on the parallel "
            f"sentences, seed s against {baseline}'s seed s' ≠ s, minus {baseline} seed s "
            f"against seed s'). Alike: the 90% interval stays below the margin {margin:g}; "
            "differs: it lies above 0; Holm over every technique and layer. A claim needs two "
            f"seeds shared with {baseline}. Method: docs/alike.md."
        ),
    ]
    rows = []
    for name, group in frame.groupby("technique", sort=False):
        counts = group["verdict"].value_counts()
        rows.append(
            {
                "technique": name,
                "seeds": str(int(group["n_seeds"].max())),
                "alike": str(int(counts.get("alike", 0))),
                "differs": str(int(counts.get("differs", 0))),
                "cannot tell": str(int(counts.get("cannot tell", 0))),
                "layers 0 → last": alike_strip(group),
            }
        )
    display = pd.DataFrame(rows)
    blocks.append(
        Table(
            "alike_summary",
            f"Layers alike {baseline}'s (=), different (≠) or undecided (?), from the embeddings "
            "(left) to the last layer.",
            display,
            display.copy(),
        )
    )
    blocks.append(
        Figure(
            "alike",
            alike_figure(frame, inputs),
            f"Excess distance to {baseline} beyond {baseline}'s seed floor per layer, with its "
            "90% interval; dashed: the margin. Squares on top: the verdict per layer (green "
            "alike, grey cannot tell, orange differs).",
            f"Per-layer verdicts and intervals of each technique's distance to {baseline}",
        )
    )
    blocks.append(_alike_table(frame))
    return blocks


def _alike_table(frame: pd.DataFrame) -> Table:
    def num(value: object, digits: int = 4) -> str:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return "–"
        return f"{number:.{digits}f}" if math.isfinite(number) else "–"

    display = pd.DataFrame(
        {
            "technique": frame["technique"],
            "layer": frame["layer"].astype(str),
            "verdict": frame["verdict"],
            "excess [90% CI]": [
                "–" if num(r.estimate) == "–"
                else f"{num(r.estimate)} [{num(r.ci_low)}, {num(r.ci_high)}]"
                for r in frame.itertuples()
            ],  # fmt: skip
            "seed floor (baseline / technique)": [
                f"{num(r.floor_baseline)} / {num(r.floor_technique)}" for r in frame.itertuples()
            ],
            "baseline moved from base": frame["baseline_drift"].map(num),
            "p alike / differs (Holm)": [
                f"{num(r.p_alike_holm, 3)} / {num(r.p_differs_holm, 3)}"
                for r in frame.itertuples()
            ],
            "seeds": frame["n_seeds"].map(lambda v: num(v, 0)),
            "more seeds": frame["more_seeds"].map(lambda v: num(v, 0)),
            "note": frame["note"].fillna(""),
        }
    )
    tones = [{"alike": "same", "differs": "bad"}.get(str(v), "") for v in frame["verdict"]]
    return Table(
        "alike",
        f"Every layer of every technique ({len(frame)} rows): the excess 1 − CKA over the "
        "baseline's seed floor with its 90% interval, both seed floors, how far the baseline "
        "moved the layer from the base (below the margin, 'alike' is trivially true), Holm "
        "p-values of the two one-sided tests, and the extra seeds that would settle an "
        "undecided layer if the estimate held (a planning guess).",
        display,
        frame,
        cell_classes(display, {"verdict": tones}),
        collapsed=True,
    )


def cost_section(inputs: ReportInputs) -> Section:
    section = Section("Cost", "cost")
    table = cost_table(inputs)
    if table is None:
        section.note("No cost records yet: they are written when a run finishes training.")
    else:
        section.blocks.append(table)
        overhead = overhead_table(inputs)
        if overhead is not None:
            section.blocks.append(overhead)
    atlas = atlas_cost_table(inputs)
    if atlas is not None:
        section.blocks.append(atlas)
    floors = efficiency_table(inputs)
    if floors is not None:
        section.blocks.append(floors)
    return section


def _runs_table(inputs: ReportInputs) -> Table:
    p = inputs.planned
    display = pd.DataFrame(
        {
            "run": p["run_id"],
            "technique": p["label"],
            "seed": p["seed"].astype(str),
            "learning rate": p["learning_rate"].map(lambda v: f"{v:.2g}"),
            "train": p["train"],
            "evaluate": p["evaluate"],
            "in results": p["in_results"].map({True: "yes", False: "no"}),
        }
    )
    failed = {c: ["bad" if v == "failed" else "" for v in p[c]] for c in ("train", "evaluate")}
    return Table(
        "runs",
        "Every planned run. 'in results': selected (the chosen learning rate, when the study "
        "swept rates) and scored, so counted in this report.",
        display,
        p,
        cell_classes(display, failed),
    )


def _versions_table(inputs: ReportInputs) -> Table:
    import matplotlib
    import numpy

    report = {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "matplotlib": matplotlib.__version__,
    }
    v = inputs.versions
    libraries = [c for c in v.columns if c != "run_id"]
    rows = []
    for library in libraries:
        found = sorted(set(v[library].dropna()))
        rows.append({"library": library, "training runs": ", ".join(found)})
    for library, version in report.items():
        rows.append({"library": f"{library} (report)", "training runs": version})
    data = pd.DataFrame(rows, columns=["library", "training runs"])
    return Table(
        "versions",
        "Library versions: from each run's train_log.json (several versions listed means runs "
        "differed), then those that built this report.",
        data.rename(columns={"training runs": "version"}),
        v if not v.empty else data,
    )


def training_section(inputs: ReportInputs) -> Section:
    section = Section("Training, failures and reproducibility", "training")
    section.blocks.append(Heading("Training loss"))
    if inputs.training.empty:
        section.note("No training logs yet.")
    else:
        steps = int(inputs.training.groupby("run_id")["step"].count().max())
        window = smoothing_window(steps)
        caption = "Training loss (cross-entropy) per optimizer step for every run in the results"
        if window > 1:
            caption += (
                f": thin lines per step, bold lines the trailing mean over {window} steps "
                "(single steps jump with each batch's languages and lengths)"
            )
        section.blocks.append(
            Figure(
                "training_loss",
                loss_figure(inputs.training, inputs.runs, inputs.palette, inputs.labels),
                caption + ".",
                "Line plot of training loss per step for each run",
            )
        )
    curve = inputs.training.get("validation_nll")
    if curve is not None and curve.notna().any():
        section.blocks.append(
            Figure(
                "learning_curve",
                curve_figure(inputs.training, inputs.runs, inputs.palette, inputs.labels),
                "Validation NLL (mean over the validation examples of each example's mean "
                "response-token NLL) at every step the runs logged it (training.validate_every): "
                "where the curves have flattened, the runs were long enough.",
                "Line plot of validation NLL per logged step for each run",
            )
        )
    section.blocks.append(Heading("Runs and failures"))
    failed = inputs.planned[inputs.planned["failed_stage"].notna()]
    if failed.empty:
        section.text("No run failed.")
    else:
        errors = failed["error"].map(
            lambda e: e if len(e) <= ERROR_CHARS else e[:ERROR_CHARS] + " …"
        )
        section.blocks.append(
            Table(
                "failed_runs",
                f"{len(failed)} failed run(s); they are left out of every result above.",
                pd.DataFrame(
                    {"run": failed["run_id"], "stage": failed["failed_stage"], "error": errors}
                ),
                failed[["run_id", "label", "seed", "failed_stage", "error"]],
            )
        )
    for unit in inputs.failed_shared.itertuples():
        what = "the base model's" if unit.run_id == BASE else "the study's"
        section.note(
            f"Unit {unit.stage} ({what}) failed: {unit.error or '(no message)'}. The next "
            "`whichlora run` redoes it."
        )
    section.blocks.append(_runs_table(inputs))
    section.blocks.append(Heading("Study configuration (resolved.yaml)"))
    if inputs.config_text:
        section.blocks.append(Code(inputs.config_text, "yaml"))
    else:
        section.note("resolved.yaml is missing from the study folder.")
    section.blocks.append(Heading("Library versions"))
    section.blocks.append(_versions_table(inputs))
    return section
