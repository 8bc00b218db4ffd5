"""BENCHMARKS.md from benchmarks/results/*.json: a summary table, then one section each.

Only what is on disk is reported; a benchmark without results gets a "not run" line. Numbers
come from the JSON files; the prose around them says how to read them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from _common import BENCH_DIR, RESULTS, command_line, median

TIMINGS = BENCH_DIR / "timings.md"  # hand-written, dated: the last section

Row = tuple[str, str, str, str, str, str, str]  # what, ours, peer, ratio, goal, met, command


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _met(flag: bool | None) -> str:
    return "n/a" if flag is None else ("**yes**" if flag else "**no**")


def _load_range(values: list[list[float]]) -> str:
    ones = [v[0] for v in values if v]
    return f"{min(ones):.1f}-{max(ones):.1f}" if ones else "?"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------- sections

LEVER_LABELS = {
    "ours-eager": "regional compile (vs eager)",
    "ours-packed": "length-grouped batches (vs packed rows)",
    "ours-dense-dropout": "sparse dropout masks (vs nn.Dropout's)",
    "ours-autocast": "frozen weights cast once (vs autocast at every forward)",
    "ours-plain": "all levers (vs the loop before them)",
}


def long_run(
    data: dict[str, Any] | None, levers_run: dict[str, Any] | None = None
) -> tuple[list[Row], list[str]]:
    """The first table: ours vs HF Trainer + PEFT vs the FLOP floor, per technique; then each
    lever against ours without it (from this run, or from a separate ablation run)."""
    lines = ["## Long runs: whichlora vs HF Trainer + PEFT, and the FLOP floor", ""]
    if data is None:
        return [], lines + ["Not run (`benchmarks/bench_long_run.py`).", ""]
    s, summary = data["settings"], data["summary"]
    gemm = data["gemm"]
    loads = _loads_in(data["runs"])
    bf16 = ", ".join(f"{g['bf16_gflops']:.0f}" for g in gemm)
    fp32 = ", ".join(f"{g['fp32_gflops']:.0f}" for g in gemm)
    shape = ", ".join(f"{g.get('bf16_shape_gflops', float('nan')):.0f}" for g in gemm)
    lines += [
        f"`{data['command']}`: {s['model']}, bundled instructions in {', '.join(s['languages'])} "
        f"(encoded once by whichlora: same tokens, response-only labels), rank {s['rank']}, "
        f"dropout {s['dropout']}, batch {s['batch']} x up to {s['max_length']} tokens, "
        f"{s['precision']} autocast on both sides, {s['threads']} threads; {s['warm_steps']} "
        f"warm-up + {s['timed_steps']} timed steps per fresh process, the variants alternating "
        f"over {s['reps']} repetition(s). Ours: packing {'on' if s['packing'] else 'off'}, "
        f"sparse dropout {'on' if s.get('sparse_dropout') else 'off'}, "
        f'compile {s["compile"]}. The Trainer: `train_sampling_strategy="group_by_length"`, '
        "`bf16=True`, padding to a multiple of 8, its default fused AdamW. Tokens/s: "
        "non-padding tokens of the timed steps over their wall time (step end to step end); "
        "floor: the timed steps' matmul FLOPs (4 per base weight per token, the LM head at "
        "labelled positions, 6 per adapter weight) at the bf16 GEMM speed measured at the "
        f"start of each repetition ({bf16} GFLOP/s; fp32 {fp32}); in parentheses, of the bf16 "
        "GEMM speed at the model's own linear shapes for a step's tokens "
        f"({shape} GFLOP/s), the floor these matmuls can reach. 1-minute load average "
        f"during the runs: {_load_range([[v] for v in loads])}.",
        "",
    ]
    table = []
    rows: list[Row] = []
    for technique, t in summary.items():
        ours, peer = t.get("ours"), t.get("trainer")
        if ours is None:
            continue
        check = data.get("loss_check", {}).get(technique)
        check_text = (
            f"{check['max_abs_difference']:.3f} over {check['steps']} steps" if check else "-"
        )
        table.append(
            [
                technique,
                f"{ours['tokens_per_s']:.0f} ({ours['labelled_per_s']:.0f})",
                f"{peer['tokens_per_s']:.0f} ({peer['labelled_per_s']:.0f})" if peer else "-",
                f"**{t['ratio']:.2f}x**" if peer else "-",
                f"{ours['bf16_floor_fraction']:.0%} ({ours.get('shape_floor_fraction', 0):.0%})",
                f"{peer['bf16_floor_fraction']:.0%}" if peer else "-",
                f"{ours['peak_rss_mb']:.0f} / {peer['peak_rss_mb']:.0f}" if peer else "-",
                f"{ours['warm_seconds']:.0f} / {peer['warm_seconds']:.0f}" if peer else "-",
                check_text,
            ]
        )
        if peer:
            rows.append(
                (
                    f"long run tokens/s vs HF Trainer, {technique}",
                    f"{ours['tokens_per_s']:.0f}",
                    f"{peer['tokens_per_s']:.0f}",
                    f"{t['ratio']:.2f}",
                    f">= {data['goal']['ratio']}",
                    _met(t["ratio_met"]),
                    data["command"],
                )
            )
        rows.append(
            (
                f"long run, fraction of the bf16 FLOP floor, {technique}",
                f"{ours['bf16_floor_fraction']:.0%}",
                f"{peer['bf16_floor_fraction']:.0%}" if peer else "-",
                "-",
                f">= {data['goal']['floor_fraction']:.0%}",
                _met(t["floor_met"]),
                data["command"],
            )
        )
    lines += _table(
        [
            "technique",
            "ours tokens/s (labelled)",
            "Trainer tokens/s (labelled)",
            "ours / Trainer",
            "ours of bf16 floor (at its shapes)",
            "Trainer of bf16 floor",
            "peak RSS MB ours / Trainer",
            "warm-up s ours / Trainer",
            "loss, same batches: max abs diff",
        ],
        table,
    )
    for run in (data, levers_run):
        if run is None:
            continue
        levers = [
            [
                technique,
                LEVER_LABELS[v],
                f"{t['ours']['tokens_per_s']:.0f} / {t[v]['tokens_per_s']:.0f}",
                f"{t[f'speedup_over_{v}']:.2f}x",
            ]
            for technique, t in run["summary"].items()
            for v in LEVER_LABELS
            if f"speedup_over_{v}" in t
        ]
        if levers:
            lines += [
                "",
                f"Each lever, ours with it against ours without, same run (`{run['command']}`, "
                f"{run['settings']['timed_steps']} timed steps, {run['settings']['reps']} "
                "repetitions, medians):",
                "",
            ]
            lines += _table(["technique", "lever", "tokens/s with / without", "gain"], levers)
    if data.get("loss_check"):
        check = next(iter(data["loss_check"].values()))
        within = all(c["within"] for c in data["loss_check"].values())
        lines += [
            "",
            "Loss check: ours (unpacked) and the Trainer fed exactly our batches, dropout 0, "
            f"{check.get('precision', 'bf16')}, {check['steps']} steps; per-step losses "
            f"{'agree' if within else '**do not all agree**'} within {check['tolerance']} "
            "(largest differences in the table).",
        ]
    return rows, [*lines, ""]


def train_step(data: dict[str, Any] | None) -> tuple[list[Row], list[str]]:
    lines = ["## 1. Training step: train_adapter vs a minimal PEFT loop", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    s = data["settings"]
    loads = [
        v
        for row in data["rows"]
        for side in ("ours", "peer")
        for run in row["runs"][side]
        for v in (run["loadavg_before"], run["loadavg_after"])
    ]
    lines += [
        f"builtin:smollm2-135m, fp32, {s['threads']} threads, batches of exactly "
        f"{s['batch']} x {s['seq']} tokens (bundled examples that fill {s['seq']} tokens), "
        f"rank {s['rank']}, dropout {s['dropout']}; {s['warm_steps']} warm-up + "
        f"{s['timed_steps']} timed steps per process, each side in its own fresh process, the "
        f"two alternating, {s['reps']} repetitions; seconds per step = median of the timed "
        "steps, then the median over repetitions. Peak RSS = the process's ru_maxrss at exit "
        "(ours includes saving the adapter). 1-minute load average during the runs: "
        f"{_load_range(loads)} on {data['machine'].get('cpus')} cores.",
        "",
    ]
    rows: list[Row] = []
    table = []
    for r in data["rows"]:
        t = r["technique"]
        rows.append(
            (
                f"train step time, {t}",
                f"{r['ours_seconds_per_step']:.2f} s",
                f"{r['peer_seconds_per_step']:.2f} s",
                f"{r['time_ratio']:.3f}",
                "<= 1.05",
                _met(r["time_met"]),
                data["command"],
            )
        )
        rows.append(
            (
                f"train peak RSS, {t}",
                f"{r['ours_peak_rss_mb']:.0f} MB",
                f"{r['peer_peak_rss_mb']:.0f} MB",
                f"{r['rss_ratio']:.3f}",
                "<= 1.10",
                _met(r["rss_met"]),
                data["command"],
            )
        )
        per_rep = ", ".join(
            f"{o['seconds_per_step']:.1f}/{p['seconds_per_step']:.1f}"
            for o, p in zip(r["runs"]["ours"], r["runs"]["peer"], strict=True)
        )
        table.append(
            [
                t,
                f"{r['ours_seconds_per_step']:.2f}",
                f"{r['peer_seconds_per_step']:.2f}",
                f"{r['time_ratio']:.3f}",
                f"{r['time_ratio_paired_median']:.3f}",
                f"{r.get('cpu_ratio', float('nan')):.3f}",
                f"{r['ours_peak_rss_mb']:.0f} / {r['peer_peak_rss_mb']:.0f}",
                f"{r['rss_ratio']:.3f}",
                per_rep,
            ]
        )
    lines += _table(
        [
            "technique",
            "ours s/step",
            "peer s/step",
            "time ratio",
            "paired ratio",
            "CPU-time ratio",
            "peak RSS MB ours / peer",
            "RSS ratio",
            "s/step per repetition (ours/peer)",
        ],
        table,
    )
    lines += [""]
    return rows, lines


def throughput(
    data: dict[str, Any] | None,
    one_thread: dict[str, Any] | None = None,
    profiled: dict[str, Any] | None = None,
) -> tuple[list[Row], list[str]]:
    lines = ["## 2. Useful training throughput on the bundled data", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    rows, body = _throughput_body(data, "")
    lines += body
    if not data.get("floor_met", True):
        lines += [_floor_gap(profiled), ""]
    if one_thread is not None:
        lines += [
            "### The same with 1 thread",
            "",
            "The same benchmark with `--threads 1` (the matmul peak also measured on 1 "
            "thread): what the loop reaches when one thread does all the work (section 7 "
            "compares 1 and 2 threads per process):",
            "",
        ]
        more_rows, more = _throughput_body(one_thread, " (1 thread)")
        rows += more_rows
        lines += more
    return rows, lines


def _floor_gap(profiled: dict[str, Any] | None) -> str:
    """Why the floor goal is missed, from the profile's split of a step's CPU time."""
    text = (
        "**The floor goal is not met.** The floor counts only the frozen base's matmuls; "
        "everything else in a step is time the floor treats as free."
    )
    if profiled is None:
        return text
    cats = profiled["summary"]["after"]["self_cpu_seconds_per_step"]
    total = sum(cats.values()) or 1.0
    matmul = cats.get("other matmuls", 0.0) + cats.get("vocabulary projection (LM head)", 0.0)
    rest = total - matmul
    return text + (
        f" In the profile of a quickstart step (section 6) matmuls are {matmul / total:.0%} of "
        f"the self CPU time; the other {rest / total:.0%} is element-wise work (RMSNorm, RoPE, "
        "SiLU, residual adds, the adapters' scaling), copies, attention and the optimizer, "
        "none of which the floor counts, and the matmuls include the adapters' own. On these "
        "576-wide layers that leaves about 40% of the floor within reach of an eager fp32 "
        "loop; closing the gap needs fused kernels (torch.compile, whose compile time exceeds "
        "a quickstart run on CPU) or lower precision (bf16 on this CPU's AMX made a step only "
        "1.1x faster: SDPA's CPU backward is slower in bf16)."
    )


def _throughput_body(data: dict[str, Any], tag: str) -> tuple[list[Row], list[str]]:
    lines: list[str] = []
    s, summ = data["settings"], data["summary"]
    peaks = data["matmul_peaks"]
    loads = [r["loadavg_after"] for rs in data["runs"].values() for r in rs]
    peak_text = ", ".join(f"{p['gflops']:.0f}" for p in peaks)
    check = data["loss_check"]
    lines += [
        f"LoRA rank {s['rank']} (dropout {s['dropout']}) on builtin:smollm2-135m, fp32, "
        f"{s['threads']} threads, batch {s['batch']}, max_length {s['max_length']}, all "
        f"{s['records']} bundled instruction records (13 languages); {s['warm_steps']} warm-up "
        f"+ {s['timed_steps']} timed steps per run, {s['reps']} repetitions with the three "
        "contenders alternating (order rotated) on fresh copies of one base. Tokens/s counts "
        "non-padding tokens only. The floor is the speed a step would reach if it did only the "
        f"forward and input-gradient matmuls (4 x {s['base_params'] / 1e6:.1f} M params x "
        "tokens FLOPs) at the fp32 matmul peak measured in the same repetition "
        f"({peak_text} GFLOP/s). 1-minute load average: "
        f"{_load_range(loads)}.",
        "",
        f"Loss check (one real batch, no dropout): full logits {check['full_logits_loss']:.6f}, "
        f"labelled positions only {check['label_positions_loss']:.6f} "
        f"(|diff| {check['abs_diff']:.1e}).",
        "",
    ]
    table = []
    labels = {
        "ours": "whichlora (length-grouped, head at labelled positions)",
        "ours_full_head": "whichlora before the head change (full logits)",
        "peer": "naive PEFT loop (random order, padded to max_length)",
    }
    for name, rs in data["runs"].items():
        pad = ""
        if rs and rs[0].get("padded_tokens"):
            useful = sum(sum(r["tokens"]) for r in rs)
            padded = sum(sum(r["padded_tokens"]) for r in rs)
            pad = f"{useful / padded:.0%}"
        table.append(
            [
                labels.get(name, name),
                f"{summ[name]['tokens_per_s']:.1f}",
                f"{summ[name]['floor_fraction']:.1%}",
                ", ".join(f"{r['tokens_per_s']:.1f}" for r in rs),
                pad,
            ]
        )
    lines += _table(
        ["contender", "tokens/s (median)", "of floor", "per repetition", "useful/computed"],
        table,
    )
    lines += [""]
    rows: list[Row] = []
    if "ratio" in data:
        rows.append(
            (
                f"useful tokens/s, bundled data{tag}",
                f"{summ['ours']['tokens_per_s']:.1f}",
                f"{summ['peer']['tokens_per_s']:.1f}",
                f"{data['ratio']:.2f}",
                ">= 1.3",
                _met(data["ratio_met"]),
                data["command"],
            )
        )
        rows.append(
            (
                f"speed as a fraction of the matmul floor{tag}",
                f"{summ['ours']['floor_fraction']:.1%}",
                f"{summ['peer']['floor_fraction']:.1%}",
                "-",
                ">= 60%",
                _met(data["floor_met"]),
                data["command"],
            )
        )
    if "head_change_speedup" in data:
        rows.append(
            (
                f"LM head only at labelled positions (after vs before){tag}",
                f"{summ['ours']['tokens_per_s']:.1f} tok/s",
                f"{summ['ours_full_head']['tokens_per_s']:.1f} tok/s (before)",
                f"{data['head_change_speedup']:.2f}",
                "faster",
                _met(data["head_change_speedup"] > 1.0),
                data["command"],
            )
        )
    return rows, lines


def mc(data: dict[str, Any] | None) -> tuple[list[Row], list[str]]:
    lines = ["## 3. Multiple-choice scoring: whichlora vs lm-eval's HFLM", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    b = data["bench_scoring"]
    ours, theirs = b["whichlora"], b["lm_eval_hflm"]
    lines += [
        f"benchmarks/bench_scoring.py (its own interleaved timing and accuracy check) on "
        f"builtin:smollm2-135m and the first {b['items']} of the {data['items_available']} "
        f"bundled knowledge items (round-robin over the 13 languages; {b['requests']} "
        f"loglikelihood requests), batch size {b['batch_size']}, {b['threads']} threads, "
        f"{b['repeats']} repeats. 1-minute load average {data['loadavg_before'][0]} before, "
        f"{data['loadavg_after'][0]} after. Exact call: `{data['scoring_command']}`.",
        "",
    ]
    lines += _table(
        ["scorer", "items/s", "items per CPU-s", "acc", "acc_norm", "seconds per repeat"],
        [
            [
                name,
                f"{r['items_per_s']:.2f}",
                f"{r['items_per_cpu_s']:.2f}",
                f"{r['acc']:.4f}",
                f"{r['acc_norm']:.4f}",
                ", ".join(f"{x:.1f}" for x in r["seconds"]),
            ]
            for name, r in (("whichlora", ours), ("lm-eval HFLM", theirs))
        ],
    )
    lines += [
        "",
        f"Largest loglikelihood difference {b['max_abs_loglik_diff']:.2e}; differing "
        f"predictions: {b['differing_predictions']}; identical accuracies: "
        f"{data['identical_accuracies']}.",
        "",
    ]
    row: Row = (
        "multiple-choice items/s (identical acc)",
        f"{ours['items_per_s']:.2f}",
        f"{theirs['items_per_s']:.2f}",
        f"{data['ratio']:.2f} (CPU {data['cpu_ratio']:.2f})",
        ">= 2, same acc",
        _met(data["met"]),
        data["command"],
    )
    return [row], lines


def study(data: dict[str, Any] | None) -> tuple[list[Row], list[str]]:
    lines = ["## 4. Study-level work: base-model passes and model loads", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    a, b = data["studies"]
    lines += [
        "A tiny study (conftest's random 2-layer Llama, tests/test_runner.py's settings) run "
        "through `whichlora.study.api.run_study` twice, with "
        f"N={len(a['techniques'])} ({', '.join(a['techniques'])}) and "
        f"N={len(b['techniques'])} ({', '.join(b['techniques'])}) techniques. Counted by "
        "patching in the benchmark process only: `load_model` calls, decoder forward passes "
        "(`LlamaModel.forward`) on the plain base vs a model with an adapter, per stage, and "
        "the evaluation / embedding units that touch the base.",
        "",
    ]
    table = []
    for r in (a, b):
        fw = r["forwards"]
        table.append(
            [
                str(len(r["techniques"])),
                ", ".join(f"{k} {v}" for k, v in r["loads"].items()) + f" (= {r['loads_total']})",
                ", ".join(f"{k} {v['base']}" for k, v in fw.items() if v["base"]),
                str(r["base_forwards_total"]),
                ", ".join(f"{k} {v['adapted']}" for k, v in fw.items() if v["adapted"]),
                ", ".join(f"{k} x{v}" for k, v in r["base_units"].items()),
            ]
        )
    lines += _table(
        [
            "N",
            "model loads by stage",
            "base forwards by stage",
            "base forwards",
            "adapted forwards by stage",
            "base units",
        ],
        table,
    )
    lines += [
        "",
        f"Model loads grow by {data['loads_per_extra_technique']:.0f} per technique (a fresh "
        "base for training, then the base + adapter from disk for evaluation and for "
        "embedding); the base itself is loaded once for evaluation and once for embedding.",
        "",
    ]
    row: Row = (
        "base evaluated / embedded per study",
        f"once each at N={len(a['techniques'])} and N={len(b['techniques'])} "
        f"({a['base_forwards_total']} vs {b['base_forwards_total']} base forwards)",
        "N times (if per technique)",
        "-",
        "once, not N times",
        _met(data["met"]),
        data["command"],
    )
    return [row], lines


def quickstart(data: dict[str, Any] | None) -> tuple[list[Row], list[str]]:
    lines = ["## 5. Quickstart wall time", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    loads = [s["loadavg"][0] for s in data["load_samples"]]
    lines += [
        f"`{data['study_command']}`: {data['wall_seconds']:.0f} s wall "
        f"({data['wall_seconds'] / 60:.1f} min), {data['cpu_seconds']:.0f} s CPU of the whole "
        f"process tree ({data['cpu_per_wall']:.2f} cores busy on average). 1-minute load "
        f"average sampled every 15 s: mean {data['mean_load_1min']:.1f}, range "
        f"{min(loads, default=0):.1f}-{max(loads, default=0):.1f} on "
        f"{data['machine'].get('cpus')} cores.",
        "",
    ]
    timed = {name: sec for name, sec in data["stages"].items() if sec}
    timed["rest: start-up, analysis, report (wall minus the units)"] = max(
        0.0, data["wall_seconds"] - sum(timed.values())
    )
    stages = sorted(timed.items(), key=lambda kv: -kv[1])
    lines += _table(
        ["stage (sum of unit seconds)", "seconds", "share of wall"],
        [[name, f"{sec:.0f}", f"{sec / data['wall_seconds']:.0%}"] for name, sec in stages],
    )
    lines += [""]
    units = sorted(data["units"], key=lambda u: -(u["seconds"] or 0))[:8]
    lines += [
        "Slowest units: "
        + ", ".join(
            f"{u['run_id']}/{u['stage']} {u['seconds']:.0f} s" for u in units if u["seconds"]
        )
        + ".",
        "",
    ]
    row: Row = (
        "quickstart end to end (2 cores)",
        f"{data['wall_seconds'] / 60:.1f} min wall, {data['cpu_seconds'] / 60:.1f} min CPU",
        "-",
        "-",
        f"<= {data['goal']['wall_seconds_max'] / 60:.0f} min",
        _met(data["met"]),
        data["command"],
    )
    floors, floor_lines = quickstart_floors(data)
    return [row, *floors], lines + floor_lines


def _goal_text(row: dict[str, Any]) -> str:
    if not row.get("goal_min"):
        return "-"
    floor = " of fp32 floor" if row.get("goal_floor") == "fp32" else ""
    return f">= {row['goal_min']:.0%}{floor}"


def quickstart_floors(data: dict[str, Any]) -> tuple[list[Row], list[str]]:
    """Each stage against its FLOP floor, measured in the same run (bench_quickstart.py)."""
    rows = data.get("efficiency") or []
    if not rows:
        return [], []
    gemm = data["matmul"]
    lines = [
        f"FLOP floors, same run: before the study, GEMMs ({gemm['gemm']}) ran at "
        f"{gemm['fp32_gflops']:.0f} GFLOP/s in float32 and {gemm['bf16_gflops']:.0f} GFLOP/s in "
        f"bfloat16 ({gemm['threads']} threads). Each unit stores the tokens and matmul FLOPs its "
        "forwards needed (2 per weight per token; training a frozen base 4, the adapter 6; no "
        "padding, no attention scores); floor = FLOPs / GEMM speed of the stage's precision; "
        "efficiency = floor / measured seconds; 'of fp32 floor' puts the same FLOPs at float32 "
        "speed (the training goal's floor, whatever precision training runs in). The study row "
        "divides every floor by every unit's seconds, analysis included.",
        "",
    ]
    lines += _table(
        [
            "stage",
            "precision",
            "seconds",
            "tokens",
            "GFLOP",
            "floor s",
            "efficiency",
            "of fp32 floor",
            "goal",
        ],
        [
            [
                r["stage"],
                r["precision"] or "-",
                f"{r['seconds']:.0f}",
                f"{r['tokens']}",
                f"{r['flops'] / 1e9:.0f}",
                f"{r['floor_seconds']:.1f}",
                f"{r['efficiency']:.0%}",
                f"{r.get('fp32_efficiency', r['efficiency']):.0%}",
                _goal_text(r),
            ]
            for r in rows
        ],
    )
    out: list[Row] = [
        (
            f"quickstart {r['stage']}: fraction of "
            + ("the float32 FLOP floor" if r.get("goal_floor") == "fp32" else "its FLOP floor"),
            f"{r.get('goal_value', r['efficiency']):.0%}",
            "-",
            "-",
            f">= {r['goal_min']:.0%}" if r.get("goal_min") else "-",
            _met(bool(r.get("met"))),
            data["command"],
        )
        for r in rows
    ]
    return out, [*lines, ""]


def profile(data: dict[str, Any] | None) -> tuple[list[Row], list[str]]:
    lines = ["## 6. Profile of the slowest stage (training), before and after", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    before, after = data["summary"]["before"], data["summary"]["after"]
    r = data["request"]
    lines += [
        f"torch.profiler over quickstart run `{data['run']}` ({r['technique']}, batch "
        f"{r['batch_size']}, max_length {r['max_length']}, dropout {r['dropout']}, "
        f"{r['threads']} threads, the quickstart's training records), {r['steps']} steps of "
        f"which the first is a warm-up, the two variants alternating; self CPU seconds per "
        "step by category (profiling adds overhead: compare the columns, not with section 1).",
        "",
    ]
    cats = sorted(
        set(before["self_cpu_seconds_per_step"]) | set(after["self_cpu_seconds_per_step"]),
        key=lambda c: -before["self_cpu_seconds_per_step"].get(c, 0.0),
    )
    table = [
        [
            c,
            f"{before['self_cpu_seconds_per_step'].get(c, 0.0):.2f}",
            f"{after['self_cpu_seconds_per_step'].get(c, 0.0):.2f}",
        ]
        for c in cats
    ]
    table.append(
        [
            "**wall seconds per step**",
            f"{before['seconds_per_step']:.2f}",
            f"{after['seconds_per_step']:.2f}",
        ]
    )
    lines += _table(["category", "before (full logits)", "after (labelled positions)"], table)
    lines += [""]
    row: Row = (
        "profiled quickstart train step (after vs before)",
        f"{after['seconds_per_step']:.1f} s",
        f"{before['seconds_per_step']:.1f} s (before)",
        f"{data['speedup']:.2f}x faster",
        "faster",
        _met(data["speedup"] > 1.0),
        data["command"],
    )
    return [row], lines


def threads(data: dict[str, Any] | None) -> tuple[list[Row], list[str]]:
    lines = ["## 7. One or two threads per process", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    loads = [r["loadavg"] for rs in data["runs"].values() for r in rs]
    summ = data["summary"]
    lines += [
        "One LoRA step (8 x 128 tokens) in one process, alternating 1 and 2 torch threads, "
        f"1-minute load average {_load_range(loads)}:",
        "",
    ]
    lines += _table(
        ["threads", "wall s/step", "CPU s/step", "per step"],
        [
            [
                n,
                f"{s['seconds_per_step']:.1f}",
                f"{s['cpu_seconds_per_step']:.1f}",
                ", ".join(f"{r['seconds']:.1f}" for r in data["runs"][n]),
            ]
            for n, s in summ.items()
        ],
    )
    lines += [""]
    return [], lines


def run_scoring(data: dict[str, Any] | None) -> tuple[list[Row], list[str]]:
    """A run's model scored before and after this round's changes (bench_run_scoring.py)."""
    lines = ["## 9. A run's model scored, and the bundled model's first use, before and after", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    summary = data["summary"]
    gemm = [r["matmul"]["bf16_gflops"] for r in data["reps"]]
    loads = [r["loadavg"] for r in data["reps"]]
    lines += [
        f"`{data['command']}`: one run's model (the base plus a merged rank-8 LoRA on every "
        f"linear layer, bfloat16) on the quickstart's evaluation set, {len(summary)} variants side "
        f"by side in one process, alternating, {len(data['reps']) // len(summary)} repetitions "
        "(bf16 GEMM "
        f"{min(gemm):.0f}-{max(gemm):.0f} GFLOP/s; load average {min(loads):.1f}-"
        f"{max(loads):.1f}). before: the LM head fed transformers' sliced hidden states (a run's "
        "weights are frozen, so torch.matmul ran a batched matmul that copies the head's weight "
        "once per row) at the whole scored suffix; fold: a contiguous input to the head; mask: "
        "fold, and the head only at the scored positions; after: mask, and the log-softmax at "
        "the targets taken 32 rows at a time (one upcast of all a forward's target rows wrote "
        "and re-read ~150 MB). Seconds are medians (min), efficiency "
        "against the bf16 GEMM floor. Largest metric difference from before: "
        + ", ".join(f"{k} {v:.1g}" for k, v in data["max_abs_metric_difference"].items())
        + " (bf16 rounding).",
        "",
    ]
    parts = ["knowledge", "heldout", "generation", "embed", "total"]
    table = []
    for variant, parts_of in summary.items():
        cells = []
        for part in parts:
            cell = parts_of[part]
            text = f"{cell['median']:.2f} ({cell['min']:.2f})"
            if "efficiency_median" in cell:
                text += f", {cell['efficiency_median']:.0%}"
            cells.append(text)
        table.append([variant, *cells])
    lines += _table(["variant", *parts], table)
    before, after = summary["before"]["total"]["median"], summary["after"]["total"]["median"]
    rows: list[Row] = [
        (
            "a run's model scored, whole evaluation + embedding (after vs before)",
            f"{after:.2f} s",
            f"{before:.2f} s (before)",
            f"{before / after:.2f}x faster",
            "faster, same metrics",
            _met(after < before),
            data["command"],
        )
    ]
    if "mask" in summary:
        mask = summary["mask"]["total"]["median"]
        rows.append(
            (
                "a run's model scored, log-softmax at the targets in chunks (after vs mask)",
                f"{after:.2f} s",
                f"{mask:.2f} s (mask)",
                f"{mask / after:.2f}x faster",
                "faster, same metrics",
                _met(after < mask),
                data["command"],
            )
        )
    conversion = data.get("conversion")
    if conversion:
        plain, once = median(conversion["plain"]), median(conversion["parsed-once"])
        lines += [
            "",
            f"Bundled model's first use (GGUF to safetensors), alternating: plain "
            f"{plain:.1f} s, parsed once {once:.1f} s (medians of {len(conversion['plain'])}; "
            "the files written are identical, `tests/test_builtin_model.py`).",
        ]
        rows.append(
            (
                "bundled model's first use, GGUF parsed once (after vs before)",
                f"{once:.1f} s",
                f"{plain:.1f} s (before)",
                f"{plain / once:.2f}x faster",
                "faster, same files",
                _met(once < plain),
                data["command"],
            )
        )
    return rows, [*lines, ""]


def techniques(data: dict[str, Any] | None) -> tuple[list[Row], list[str]]:
    lines = ["## 8. Every technique at one matched budget, against LoRA", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    s = data["settings"]
    loads = [
        run[key]
        for row in data["rows"]
        for run in row["runs"]
        for key in ("loadavg_before", "loadavg_after")
    ]
    lines += [
        f"{s['model']}, fp32, {s['threads']} threads, batches of exactly {s['batch']} x "
        f"{s['seq']} tokens; each technique's capacity knob solved for a fraction of "
        f"{s['fraction']} of the model's parameters ({s['target_trainable_params']:,}; "
        "'no' in the 10% column: the nearest count misses it by more, and a study would refuse "
        f"it). whichlora's train_adapter, {s['warm_steps']} warm-up + {s['timed_steps']} timed "
        f"steps per fresh process, techniques alternating (order reversed on every other of "
        f"{s['repeats']} repetitions). Seconds per step from the training log's per-step clock; "
        "the data-driven initialisations' one-off preparation is apart (a study adds it to the "
        f"run's cost). 1-minute load average during the runs: {_load_range(loads)} on "
        f"{data['machine'].get('cpus')} cores. Reproduce: `{data['command']}`.",
        "",
    ]
    table = []
    for r in data["rows"]:
        ratio = r["ratio_to_lora"]
        paired = r["ratio_to_lora_paired_median"]
        table.append(
            [
                r["technique"],
                f"{r['knob']} {r['knob_value']}",
                f"{r['trainable_params_measured']:,}",
                "yes" if r["within_10pct"] else "no",
                f"{r['seconds_per_step_min']:.3f}",
                f"{r['seconds_per_step_median']:.3f}",
                "?" if ratio is None else f"{ratio:.2f}",
                "?" if paired is None else f"{paired:.2f}",
                f"{r['prepare_seconds_median']:.1f}",
            ]
        )
    lines += _table(
        [
            "technique",
            "knob",
            "trainable",
            "within 10%",
            "min s/step",
            "median s/step",
            "x LoRA",
            "x LoRA paired",
            "prepare s",
        ],
        table,
    )
    lines += [""]
    return [], lines


# --------------------------------------------------------------------------- document

INTRO = """\
# Benchmarks

Written by `benchmarks/run_all.py` (`make bench`) from `benchmarks/results/*.json`; every row
names the command that reproduces it (from the repository root). Each comparison runs ours
and the peer side by side in the same run, alternating, and reports medians over repetitions
and their ratio.

Machine: {cpu}, {cpus} cores. {load_sentence}
"""


def train_precision(data: dict[str, Any] | None) -> tuple[list[Row], list[str]]:
    """The quickstart's training runs in fp32 and bf16 side by side (bench_train_precision.py)."""
    lines = ["## 10. The quickstart's training in float32 and in bf16, side by side", ""]
    if data is None:
        return [], lines + ["Not run.", ""]
    reps = data["reps"]
    gemm = [r["matmul"]["fp32_gflops"] for r in reps]
    loads = [r["loadavg"][0] if isinstance(r["loadavg"], list) else r["loadavg"] for r in reps]
    lines += [
        f"`{data['command']}`: each quickstart technique's first run, all its steps, on a fresh "
        "copy of the base, the variants alternating (order rotating) over "
        f"{max(r['rep'] for r in reps) + 1} repetitions (fp32 GEMM {min(gemm):.0f}-"
        f"{max(gemm):.0f} GFLOP/s; load average {min(loads):.1f}-{max(loads):.1f}). fp32: "
        "float32 throughout; bf16-sdpa: bf16 autocast, attention too (CPU autocast casts SDPA "
        "to bf16); bf16: autocast with attention kept in float32 (what `training.precision: "
        "auto` now gives on a CPU with AMX/AVX512-BF16); fp32-peft-norm (DoRA): fp32 with "
        "PEFT's own DoRA weight norm instead of the factored one (techniques/methods/dora.py). "
        "Seconds: median (min) per run; '% fp32 floor': the run's matmul FLOPs at float32 "
        "GEMM speed over its seconds; loss: the largest difference of a step's loss from "
        "fp32's.",
        "",
    ]
    names = ["fp32", "bf16-sdpa", "bf16", "fp32-peft-norm"]
    table = []
    for technique, s in data["summary"].items():
        cells = []
        for name in names:
            cell = s["seconds"].get(name)
            if cell is None:
                cells.append("-")
                continue
            text = f"{cell['median']:.1f} ({cell['min']:.1f}), {s['fp32_efficiency'][name]:.0%}"
            if name in s["max_loss_difference"]:
                text += f", loss {s['max_loss_difference'][name]:.3f}"
            cells.append(text)
        table.append([technique, *cells, f"{s['speedup']:.2f}x"])
    lines += _table(["technique", *names, "fp32 / bf16"], table)
    totals = data["totals"]
    rows: list[Row] = [
        (
            "quickstart techniques' training, bf16 with float32 attention (vs fp32)",
            f"{totals['bf16']:.1f} s",
            f"{totals['fp32']:.1f} s (fp32)",
            f"{data['speedup_total']:.2f}x faster",
            "faster",
            _met(totals["bf16"] < totals["fp32"]),
            data["command"],
        )
    ]
    dora = data["summary"].get("dora", {})
    if "speedup_factored_norm" in dora:
        peft_norm = dora["seconds"]["fp32-peft-norm"]["median"]
        ours = dora["seconds"]["fp32"]["median"]
        rows.append(
            (
                "DoRA run, factored weight norm (vs PEFT's), fp32",
                f"{ours:.1f} s",
                f"{peft_norm:.1f} s (PEFT)",
                f"{dora['speedup_factored_norm']:.2f}x faster",
                "faster, same losses",
                _met(ours < peft_norm),
                data["command"],
            )
        )
    return rows, [*lines, ""]


def _loads_in(value: Any) -> list[float]:
    """Every 1-minute load average recorded anywhere in a result (keys starting 'loadavg')."""
    found: list[float] = []
    if isinstance(value, dict):
        for key, item in value.items():
            loadavg = key.startswith("loadavg") and isinstance(item, list) and item
            if loadavg and isinstance(item[0], int | float):
                found.append(float(item[0]))
            else:
                found += _loads_in(item)
    elif isinstance(value, list):
        for item in value:
            found += _loads_in(item)
    return found


def load_sentence(results: list[dict[str, Any]], cpus: Any) -> str:
    """How busy the machine was: idle numbers can be read as they are, busy ones cannot."""
    loads = [v for data in results for v in _loads_in(data)]
    if not loads:
        return "The load during the runs was not recorded."
    top = max(loads)
    text = (
        f"1-minute load averages sampled during the runs: {min(loads):.1f} to {top:.1f} "
        f"(each section gives its own)."
    )
    if isinstance(cpus, int) and top > cpus + 1.5:
        text += (
            " **Some runs shared the machine with other processes**: their absolute times are "
            "upper bounds; ratios measured alternately are steadier."
        )
    else:
        text += " The benchmarks ran alone: besides themselves, nothing else used the cores."
    return text


RESULT_NAMES = (
    "long_run",
    "train_step",
    "throughput",
    "throughput_1thread",
    "mc_scoring",
    "study_work",
    "quickstart",
    "profile",
    "threads",
    "techniques",
    "run_scoring",
    "train_precision",
)


def write_report(out: Path) -> None:
    first = long_run(_load("long_run"), _load("long_run_levers"))
    sections = [
        train_step(_load("train_step")),
        throughput(_load("throughput"), _load("throughput_1thread"), _load("profile")),
        mc(_load("mc_scoring")),
        study(_load("study_work")),
        quickstart(_load("quickstart")),
        profile(_load("profile")),
        threads(_load("threads")),
        techniques(_load("techniques")),
        run_scoring(_load("run_scoring")),
        train_precision(_load("train_precision")),
    ]
    machine = {}
    for name in ("train_step", "throughput", "quickstart", "mc_scoring"):
        data = _load(name)
        if data:
            machine = data["machine"]
            break
    lines = [
        INTRO.format(
            cpu=machine.get("cpu", "?"),
            cpus=machine.get("cpus", "?"),
            load_sentence=load_sentence(
                [d for d in map(_load, RESULT_NAMES) if d], machine.get("cpus")
            ),
        ),
        f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')}; torch {machine.get('torch', '?')}, "
        f"Python {machine.get('python', '?')}. Rebuild this file from the results with "
        f"`{command_line('run_all.py', '--report-only')}`.",
        "",
    ]
    lines += first[1]
    lines += ["## Summary", ""]
    rows = [row for section_rows, _ in (first, *sections) for row in section_rows]
    lines += _table(
        ["what", "ours", "peer", "ratio", "goal", "met?", "reproduce"],
        [[*row[:6], f"`{row[6]}`"] for row in rows],
    )
    lines += ["", NOTES, ""]
    for _, section_lines in sections:
        lines += section_lines
    # the dated timings of the set-up commands, written by hand (each names date, machine, command)
    lines += [TIMINGS.read_text(encoding="utf-8").rstrip()]
    out.write_text("\n".join(lines).rstrip() + "\n", encoding="utf-8")


NOTES = """\
### What changed in the source, and why

- `src/whichlora/train/loop.py` (training, the slowest stage; section 6): the loss of a batch is
  computed by `batch_losses`, which, for models whose forward takes a boolean `logits_to_keep`
  mask (transformers' causal LMs that use `slice_logits_to_keep`; `head_on_label_positions`
  checks), applies the LM head and the cross-entropy only at positions whose next token is
  labelled (`shift_labels` passed to transformers' own loss). Under response-only loss the prompt
  and padding logits were computed, upcast and log-softmaxed over a 49152-word vocabulary, then
  ignored. Same loss and gradients (differences ~1e-7 from summation order). Other models keep
  the full-logits call.
- `src/whichlora/study/runner.py` (evaluation and embedding, the second-slowest stage; section
  5): `load_scoring_model` merges each adapter into its fresh base (`merge_and_unload`,
  `evaluation.merge_adapters`, on by default). Unmerged, DoRA renormalises its weight at every
  forward and VeRA rebuilds its scaled matrices: DoRA's quickstart evaluation took 76 s against
  the base's 27 s; merged it takes 24 s. Metrics agree to 1e-4 (`tests/test_runner.py::
  test_merged_adapter_scores_like_the_unmerged_one`, for DoRA, VeRA, AdaLoRA and PiSSA). With
  both changes and the quickstart's learning rates fixed, the quickstart went from 11.3 min to
  9.1 min on this idle machine (`time .venv/bin/whichlora run examples/quickstart.yaml --out
  /tmp/qs --quiet`, same study otherwise), then its evaluation set was trimmed from 12 to 10
  items per language for margin (section 5 is the final number).
- `src/whichlora/train/batching.py`: unchanged; its length grouping is what section 2
  measures against a padded loop.
- Evaluation and embedding (issue 16): `evaluation.precision: fp32 | bf16 | auto` (default fp32, so
  finished studies stay done; `auto` = bf16 on CUDA and on CPUs with AMX/AVX512-BF16, pinned in
  `resolved.yaml`); one `ScoringModels` per process (`src/whichlora/models/scoring.py`) reads the
  base once, hands it out itself for the base model and merges each run's adapter into a copy (for
  SmolLM2-135M on a busy 2-core machine a copy took 3.3-3.6 s, re-reading the file from the page
  cache 1.2-2.0 s and the first read in a process ~4 s: the copy pays off for models larger than the
  page cache or on slow disks); evaluation embeds the model it has just scored, so the analysis no
  longer loads and merges every model again; packed multiple-choice rows batch up to lm-eval's token
  budget for the same batch size (`_batches` in `src/whichlora/evaluate/scoring.py`: a forward held
  4 four-choice items, ~100 tokens). Every unit stores the tokens and matmul FLOPs it needed
  (`src/whichlora/models/flops.py`), the study the machine's GEMM speed, and section 5 and the
  report's cost section show each stage's efficiency. One model (the base) at quickstart settings,
  the old path (fresh load, fp32, old batching, a second load for the embedding) and the new one
  (bf16) side by side in one process (`.venv/bin/python benchmarks/bench_eval_model.py --reps 2`) on
  a shared 2-core machine (GEMM 80 GFLOP/s fp32, 173 bf16): knowledge 17.3 -> 4.9 s (34% -> 56% of
  its floor), held-out NLL 50.5 -> 21.9 s, generation 139.6 -> 18.5 s, embedding 29.6 -> 34.0 s,
  loads 0.8 -> 0 s; the whole model 237.7 -> 79.3 s (a second repetition: 338.7 -> 22.3 s; the new
  path in fp32, same repetition as the first: 242.2 s). Very noisy (load average 3-4 from other
  work, 8-11 earlier): read the ratios, and rerun on a quiet machine.
- Scoring a run's model (issue 16, section 9): PEFT leaves a run's merged weights frozen, and
  `torch.matmul` folds transformers' sliced hidden states (`logits_to_keep`) into one GEMM only
  when an operand requires grad; otherwise it copied the 49152 x 576 LM head once per batch row.
  Every run scored at under half the base's speed for that alone (a 10 x 208-token forward
  1.26 s against 0.58 s). `fold_head_matmul` (`src/whichlora/models/scoring.py`) hands the head
  a contiguous input; the head also runs only at the scored positions (a boolean
  `logits_to_keep`, `src/whichlora/evaluate/scoring.py`) and NLLs skip the greedy argmax.
  The bundled model's first use parses its GGUF once instead of four times and builds gguf's
  tensor-name map once instead of per submodule (`_gguf_parsed_once` in
  `src/whichlora/models/builtin.py`), writing identical files.
- Tried and dropped: batching generation across a model's languages (3.7x faster for 5 prompts)
  changes bf16 greedy outputs with the batch's padding, so a unit's text would depend on which
  other units were pending (a resumed study could differ from an uninterrupted one).
- Tried and dropped: bfloat16 on this CPU (AMX: a 768x576x1536 matmul runs at 715 vs 163
  GFLOP/s in float32) made a quickstart LoRA step only 1.13x faster (bf16 weights) or 1.1x
  (autocast): SDPA's backward is 5x slower in bf16 on CPU and the casts eat the rest.
"""
