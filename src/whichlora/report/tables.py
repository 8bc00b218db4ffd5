"""Tables as the reader sees them (formatted strings, units in headers) next to the numbers behind
them (exported unformatted)."""

from __future__ import annotations

import math

import pandas as pd

from whichlora.evaluate.metrics import by_rank, display_name, higher_is_better
from whichlora.evaluate.metrics import metric as metric_entry
from whichlora.report.document import Table, finite, fmt_bytes, fmt_ci, fmt_int, fmt_num
from whichlora.report.inputs import ReportInputs
from whichlora.techniques import BASELINE, REGISTRY

# The per-language tables' columns, in order: the metric table's `column` ranks.
SHOWN_METRICS = tuple(by_rank("column"))


def metric_format(name: str) -> tuple[float, int, str, str]:
    """(scale, digits, unit of a difference, unit of a value) from the metric table; a metric
    it does not describe (a harness metric) is shown as it is, to 3 significant digits."""
    found = metric_entry(name)
    if found is None:
        return 1.0, 3, "", ""
    return float(found.scale), found.digits, found.delta_unit, found.unit


def better_up(name: str) -> bool:
    """Whether a higher value is better (True for a metric nobody described)."""
    return higher_is_better(name) is not False


def delta_header(metric: str) -> str:
    _, _, unit, _ = metric_format(metric)
    name = display_name(metric)
    arrow = "↑" if better_up(metric) else "↓"
    return f"Δ {name} ({unit}, {arrow} better)" if unit else f"Δ {name} ({arrow} better)"


def abs_header(metric: str) -> str:
    _, _, _, unit = metric_format(metric)
    name = display_name(metric)
    return f"{name} ({unit})" if unit else name


def delta_cell(metric: str, delta: float, low: float, high: float) -> str:
    scale, digits, *_ = metric_format(metric)
    return fmt_ci(delta * scale, low * scale, high * scale, digits)


def abs_cell(metric: str, value: float, low: float = math.nan, high: float = math.nan) -> str:
    scale, digits, *_ = metric_format(metric)
    return fmt_ci(value * scale, low * scale, high * scale, digits, signed=False)


def tone(metric: str, low: float, high: float) -> str:
    """'good'/'bad' when the whole interval lies on one side of zero, else ''."""
    if not (math.isfinite(low) and math.isfinite(high)) or low <= 0 <= high:
        return ""
    return "good" if (low > 0) == better_up(metric) else "bad"


def shown(metrics: set[str]) -> list[str]:
    return [m for m in SHOWN_METRICS if m in metrics]


def delta_display(rows: pd.DataFrame, keys: list[str], name: str, caption: str) -> Table | None:
    """Pivot tidy delta rows to one row per `keys` and a 'Δ metric [CI]' column per metric.

    Rows keep the order they arrive in (languages sorted, techniques in study order)."""
    metrics = shown(set(rows["metric"]))
    if rows.empty or not metrics:
        return None
    display, classes = [], []
    for key, frame in rows.groupby(keys, sort=False):
        cells = dict(zip(keys, key, strict=True))
        cells["seeds"] = str(int(frame["n_seeds"].max()))
        tones = {k: "" for k in cells}
        for metric in metrics:
            hit = frame[frame["metric"] == metric]
            head = delta_header(metric)
            if hit.empty:
                cells[head], tones[head] = "–", ""
                continue
            r = hit.iloc[0]
            cells[head] = delta_cell(metric, r["delta"], r["ci_low"], r["ci_high"])
            tones[head] = tone(metric, r["ci_low"], r["ci_high"])
        display.append(cells)
        classes.append(tones)
    return Table(
        name, caption, pd.DataFrame(display), rows.reset_index(drop=True), pd.DataFrame(classes)
    )


def fidelity_table(deltas: pd.DataFrame, base: pd.DataFrame, inputs: ReportInputs) -> Table | None:
    """Share of answers in the asked language: base and every technique, per language."""
    fid = deltas[deltas["metric"] == "fidelity"].reset_index(drop=True)
    if fid.empty:
        return None
    cells = {(r.language, r.technique): r for r in fid.itertuples()}
    bases = {r.language: r for r in base[base["metric"] == "fidelity"].itertuples()}
    group = dict(zip(fid["language"], fid["group"], strict=True))
    display = []
    for language in [lang for lang in [*inputs.targets, inputs.source] if lang in group]:
        row = {"language": language, "group": group[language], "base": "–"}
        if language in bases:
            b = bases[language]
            row["base"] = abs_cell("fidelity", b.value, b.ci_low, b.ci_high)
        for label in inputs.labels:
            r = cells.get((language, label))
            row[label] = (
                abs_cell("fidelity", r.value, r.value_ci_low, r.value_ci_high) if r else "–"
            )
        display.append(row)
    columns = [
        "group",
        "language",
        "technique",
        "n_seeds",
        "n_examples",
        "base",
        "value",
        "value_ci_low",
        "value_ci_high",
    ]
    return Table(
        "fidelity",
        "Language fidelity: % of generated answers in the language asked (95% CI over examples).",
        pd.DataFrame(display),
        fid[columns],
    )


def base_scores_table(base: pd.DataFrame, inputs: ReportInputs) -> Table | None:
    metrics = shown(set(base["metric"]))
    if base.empty or not metrics:
        return None
    display = []
    for (group, language), frame in base.groupby(["group", "language"], sort=False):
        cells = {"language": language, "group": group}
        for metric in metrics:
            hit = frame[frame["metric"] == metric]
            cells[abs_header(metric)] = (
                abs_cell(metric, *hit.iloc[0][["value", "ci_low", "ci_high"]]) if len(hit) else "–"
            )
        display.append(cells)
    rank = {"source": 0, "seen": 1, "unseen": 2}
    frame = pd.DataFrame(display)
    frame = frame.assign(_order=frame["group"].map(rank)).sort_values(["_order", "language"])
    frame = frame.drop(columns="_order")
    return Table(
        "base_scores",
        "The base model's own scores (95% CI over examples): the level each change starts from.",
        frame.reset_index(drop=True),
        base,
    )


def cost_table(inputs: ReportInputs) -> Table | None:
    costs = inputs.costs.merge(inputs.runs[["run_id", "label", "seed"]], on="run_id")
    if costs.empty:
        return None
    display = []
    on_gpu = "peak_gpu_mb" in costs and bool(costs["peak_gpu_mb"].notna().any())
    for label in [lab for lab in inputs.labels if lab in set(costs["label"])]:
        c = costs[costs["label"] == label].mean(numeric_only=True)
        n = int((costs["label"] == label).sum())
        pct = c["trainable_fraction"] * 100
        display.append(
            {
                "technique": label,
                "runs": str(n),
                "rank": fmt_int(c["rank"]),
                "trainable params": fmt_int(c["trainable_params"]),
                "% of base": f"{pct:.3g}%" if math.isfinite(pct) else "–",
                "s / step": fmt_num(c["seconds_per_step"], 3),
                "tokens / s": fmt_int(c["tokens_per_second"]),
                **({"peak GPU (MiB)": fmt_int(c.get("peak_gpu_mb"))} if on_gpu else {}),
                "peak RSS (MiB)": fmt_int(c["peak_rss_mb"]),
                "adapter size": fmt_bytes(c["adapter_bytes"]),
                "wall time (s)": fmt_num(c["wall_seconds"], 1),
            }
        )
    return Table(
        "costs",
        "Training cost per technique (mean over seeds). Trainable parameters are measured on the "
        "model, % of base = share of the base model's parameters. Time per step and tokens per "
        "second leave out each run's first (warm-up) step; wall time includes it. Peak memory is "
        "each run's own peak (reset when the run starts): GPU memory held by tensors, and the "
        "training process's resident memory (RSS).",
        pd.DataFrame(display),
        costs.rename(columns={"label": "technique"}),
    )


def _cost_next_to_baseline(technique: str) -> bool:
    entry = REGISTRY.get(technique)
    return entry is not None and entry.cost_next_to_baseline


def overhead_table(inputs: ReportInputs) -> Table | None:
    """Time per step and peak memory as ratios to the registry's baseline technique (LoRA), means
    over seeds, for the techniques whose cost is usually judged by them (DoRA, VeRA: their
    entries say so). None unless the baseline and one of them were trained. GPU memory when both
    sides ran on a GPU, else host RSS."""
    costs = inputs.costs.merge(inputs.runs[["run_id", "label", "technique"]], on="run_id")
    # CPU runs store no GPU peak (NULL): numeric NaN, so means keep the column
    gpu = costs.get("peak_gpu_mb", math.nan)
    costs = costs.assign(peak_gpu_mb=pd.to_numeric(gpu, errors="coerce"))
    reference = _reference_label(inputs, costs)
    if reference is None:
        return None
    ref = costs[costs["label"] == reference].mean(numeric_only=True)
    display, data = [], []
    for label in inputs.labels:
        mine = costs[costs["label"] == label]
        if mine.empty or not _cost_next_to_baseline(str(mine["technique"].iloc[0])):
            continue
        c = mine.mean(numeric_only=True)
        gpu = finite(c["peak_gpu_mb"]) and finite(ref["peak_gpu_mb"])
        memory = "peak_gpu_mb" if gpu else "peak_rss_mb"
        time_ratio = _ratio(c["seconds_per_step"], ref["seconds_per_step"])
        memory_ratio = _ratio(c[memory], ref[memory])
        display.append(
            {
                "technique": label,
                "relative to": reference,
                "time / step": f"{fmt_num(time_ratio, 2)}×",
                "peak memory": f"{fmt_num(memory_ratio, 2)}×",
                "memory measured": "GPU" if gpu else "host RSS",
            }
        )
        data.append(
            {
                "technique": label,
                "reference": reference,
                "time_per_step_ratio": time_ratio,
                "peak_memory_ratio": memory_ratio,
                "memory": memory,
            }
        )
    if not display:
        return None
    return Table(
        "overhead",
        f"Overhead relative to {reference} (ratio of means over seeds; 1.00× = the same cost).",
        pd.DataFrame(display),
        pd.DataFrame(data),
    )


def _reference_label(inputs: ReportInputs, costs: pd.DataFrame) -> str | None:
    """The label to compare with: the study's baseline when it runs the registry's baseline
    technique (LoRA), else the first label that does."""
    labels = [
        lab
        for lab in inputs.labels
        if not costs[(costs["label"] == lab) & (costs["technique"] == BASELINE)].empty
    ]
    if not labels:
        return None
    return inputs.baseline if inputs.baseline in labels else labels[0]


def _ratio(value: object, reference: object) -> float:
    if not (finite(value) and finite(reference)) or float(reference) <= 0:  # type: ignore[arg-type]
        return math.nan
    return float(value) / float(reference)  # type: ignore[arg-type]


def efficiency_table(inputs: ReportInputs) -> Table | None:
    """Each stage's seconds against its FLOP floor (report/efficiency.py)."""
    if not inputs.efficiency:
        return None
    frame = pd.DataFrame(inputs.efficiency)
    display = pd.DataFrame(
        {
            "stage": frame["stage"],
            "precision": frame["precision"],
            "seconds": frame["seconds"].map(lambda v: fmt_num(v, 1)),
            "tokens": frame["tokens"].map(fmt_int),
            "GFLOP needed": frame["flops"].map(lambda v: fmt_num(v / 1e9, 1)),
            "floor (s)": frame["floor_seconds"].map(lambda v: fmt_num(v, 1)),
            "efficiency": frame["efficiency"].map(lambda v: f"{v:.0%}"),
            "of the fp32 floor": frame["fp32_efficiency"].map(lambda v: f"{v:.0%}"),
        }
    )
    return Table(
        "efficiency",
        "Time against the FLOP floor: the matmul FLOPs each stage's tokens needed (2 per weight "
        "per token forward; a frozen base's backward adds one forward's worth, the adapter's "
        "three times its weights) at this machine's measured GEMM speed in the stage's "
        "precision. Efficiency = floor / measured time; the study row divides by every unit's "
        "seconds, analysis included. 'of the fp32 floor': the same FLOPs at float32 GEMM speed "
        "(bf16 stages beat float32 work when it exceeds what fp32 reaches).",
        display,
        frame,
    )
