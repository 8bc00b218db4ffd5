"""A small synthetic study folder, faithful to the store schema, to test and preview the report
without training anything (base + techniques x seeds x languages, analysis and significance)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from whichlora.study.context import StudyContext, open_study

# technique -> (accuracy gain on targets, accuracy change on source, nll change targets/source)
EFFECTS = {
    "lora": (0.08, -0.03, -0.30, 0.05),
    "dora": (0.10, -0.01, -0.35, 0.02),
    "pissa": (0.05, -0.07, -0.20, 0.12),
    "vera": (0.02, -0.00, -0.08, 0.01),
}
BASE_ACC = {"en": 0.62, "de": 0.45, "fr": 0.48, "es": 0.5, "sw": 0.3, "yo": 0.28}
VERSIONS = {"whichlora": "0.1.0", "torch": "2.5.1", "transformers": "4.56.0", "peft": "0.17.1"}


@dataclass
class SyntheticSpec:
    techniques: Sequence[str] = ("lora", "dora", "pissa")
    seeds: Sequence[int] = (0, 1)
    trained: Sequence[str] = ("en", "de", "fr")
    evaluated: Sequence[str] = ("en", "de", "fr", "sw")
    examples: int = 40
    layers: int = 6
    steps: int = 20
    analysis: bool = True
    significance: bool = True
    failed: Sequence[str] = ()  # run ids whose training fails
    extra: dict[str, Any] = field(default_factory=dict)  # more study-file keys


def make_synthetic_study(folder: Path, spec: SyntheticSpec | None = None) -> StudyContext:
    """Create `folder/study` from a tiny study file and fill its store; return it opened."""
    spec = spec or SyntheticSpec()
    study = {
        "name": "synthetic",
        "techniques": list(spec.techniques),
        "data": {"languages": list(spec.trained)},
        "training": {"seeds": list(spec.seeds), "steps": spec.steps},
        "evaluation": {"languages": list(spec.evaluated), "generation_items": 4},
        **spec.extra,
    }
    path = Path(folder) / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")
    ctx = open_study(path, Path(folder) / "study")
    _fill(ctx, spec, np.random.default_rng(7))
    return ctx


def _fill(ctx: StudyContext, spec: SyntheticSpec, rng: np.random.Generator) -> None:
    store, n = ctx.store, spec.examples
    source = ctx.study.evaluation.source_language
    latent = {lang: rng.random((n, 3)) for lang in spec.evaluated}  # paired example difficulty
    store.finish_unit("base", "evaluate", _scores("base", spec, latent, source, None, rng))
    done = []
    for run in ctx.runs:
        if run.run_id in spec.failed:
            store.finish_unit(
                run.run_id,
                "train",
                {},
                status="failed",
                error="training diverged: loss became nan at step 7 (lr 2e-4)",
            )
            continue
        effect = EFFECTS.get(run.technique, (0.04, -0.02, -0.15, 0.04))
        jitter = rng.normal(0, 0.015, 4)
        store.finish_unit(run.run_id, "train", _training(run.run_id, run.technique, spec, rng))
        store.finish_unit(
            run.run_id,
            "evaluate",
            _scores(run.run_id, spec, latent, source, np.add(effect, jitter), rng),
        )
        log = ctx.run_dir(run.run_id) / "train_log.json"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps({"versions": {**VERSIONS, "python": "3.11.7"}}))
        done.append(run)
    store.set_kv("selected_runs", sorted(r.run_id for r in done))
    if spec.analysis:
        store.replace_table("analysis", _analysis(ctx, spec, done, rng), "analyze")
        store.replace_table("alike", _alike(ctx, spec, done, rng), "analyze-measures")
    if spec.significance:
        store.replace_table("significance", _significance(ctx, source), "significance")
        store.replace_table("verdicts", _verdicts(ctx, source), "analyze-verdicts")


def _scores(
    run_id: str,
    spec: SyntheticSpec,
    latent: dict[str, np.ndarray],
    source: str,
    effect: Any,
    rng: np.random.Generator,
) -> dict[str, list[dict[str, Any]]]:
    metrics, examples = [], []
    for lang in spec.evaluated:
        acc_shift = nll_shift = 0.0
        if effect is not None:
            acc_shift, nll_shift = (
                (effect[1], effect[3]) if lang == source else (effect[0], effect[2])
            )
            if lang not in spec.trained:
                acc_shift, nll_shift = acc_shift / 2, nll_shift / 2
        p = BASE_ACC.get(lang, 0.4) + acc_shift
        u = latent[lang]
        fid_base = 0.95 if lang == source else (0.5 if lang in spec.trained else 0.2)
        fid = fid_base + (0 if effect is None else (0.3 + effect[0] if lang != source else -0.02))
        values = {
            "mc_acc": (u[:, 0] < p).astype(float),
            "mc_acc_norm": (u[:, 0] < p + 0.02).astype(float),
            "nll": 2.2 + u[:, 1] + nll_shift + rng.normal(0, 0.05, len(u)),
            "chrf": np.clip(30 + 20 * u[:, 2] - 25 * nll_shift + rng.normal(0, 3, len(u)), 0, 100),
            "fidelity": (u[:, 2] < min(fid, 1.0)).astype(float),
        }
        for metric, vals in values.items():
            ids = [f"{lang}-{i:03d}" for i in range(len(vals))]
            examples += [
                {
                    "run_id": run_id,
                    "split": "test",
                    "language": lang,
                    "metric": metric,
                    "example_id": i,
                    "value": float(v),
                }
                for i, v in zip(ids, vals, strict=True)
            ]
            metrics.append(
                {
                    "run_id": run_id,
                    "split": "test",
                    "language": lang,
                    "metric": metric,
                    "value": float(vals.mean()),
                    "n": len(vals),
                }
            )
    return {"metrics": metrics, "examples": examples}


def _training(
    run_id: str, technique: str, spec: SyntheticSpec, rng: np.random.Generator
) -> dict[str, list[dict[str, Any]]]:
    speed = {"dora": 1.4, "vera": 0.9}.get(technique, 1.0)
    params = {"vera": 40_000, "dora": 1_800_000}.get(technique, 1_700_000)
    steps = [
        {
            "run_id": run_id,
            "step": s,
            "loss": float(3.2 * np.exp(-s / 8) + 1.1 + rng.normal(0, 0.05)),
            "lr": 2e-4,
            "grad_norm": 1.0,
            "tokens": 2048,
            "seconds": 0.2 * speed,
        }
        for s in range(1, spec.steps + 1)
    ]
    cost = {
        "run_id": run_id,
        "rank": 8,
        "trainable_params": params,
        "trainable_fraction": params / 134_515_008,
        "seconds_per_step": 0.2 * speed,
        "tokens_per_second": 2048 / (0.2 * speed),
        "peak_rss_mb": 1900 + 100 * speed,
        "peak_gpu_mb": 1000 * speed,
        "adapter_bytes": params * 4 + 4096,
        "wall_seconds": 0.2 * speed * spec.steps,
    }
    return {"training": steps, "costs": [cost]}


def _analysis(
    ctx: StudyContext, spec: SyntheticSpec, runs: list[Any], rng: np.random.Generator
) -> list[dict[str, Any]]:
    source = ctx.study.evaluation.source_language
    rows = []
    for run_id, pull in [("base", 0.0)] + [
        (r.run_id, 0.05 + 0.05 * (i % 3)) for i, r in enumerate(runs)
    ]:
        for pooling in ("mean", "last"):
            for layer in range(spec.layers + 1):
                depth = layer / spec.layers
                mid = 1 - 4 * (depth - 0.5) ** 2
                key = {"run_id": run_id, "pooling": pooling, "layer": layer}
                for lang in spec.evaluated:
                    if lang == source:
                        continue
                    far = 0.15 if lang in spec.trained else 0.3
                    sim = 0.4 + 0.4 * mid - far + pull * mid + rng.normal(0, 0.01)
                    rows.append(
                        {
                            **key,
                            "measure": "sim_to_source",
                            "language": lang,
                            "other": source,
                            "value": sim,
                        }
                    )
                    rows.append(
                        {
                            **key,
                            "measure": "retrieval_to_source",
                            "language": lang,
                            "other": source,
                            "value": min(1.0, sim + 0.2),
                        }
                    )
                rows.append(
                    {
                        **key,
                        "measure": "probe",
                        "language": "",
                        "other": "",
                        "value": 1 - 0.3 * mid - pull,
                    }
                )
                rows.append(
                    {
                        **key,
                        "measure": "probe_selectivity",
                        "language": "",
                        "other": "",
                        "value": 0.8 - 0.4 * mid - pull,
                    }
                )
                if run_id != "base":
                    cka = 1 - pull * depth * 1.5 + rng.normal(0, 0.005)
                    rows.append(
                        {**key, "measure": "cka_base", "language": "", "other": "", "value": cka}
                    )
                    rows.append(
                        {
                            **key,
                            "measure": "cka_base_unbiased",
                            "language": "",
                            "other": "",
                            "value": cka - 0.05 * depth,
                        }
                    )
    return rows


def _alike(
    ctx: StudyContext, spec: SyntheticSpec, runs: list[Any], rng: np.random.Generator
) -> list[dict[str, Any]]:
    """The real alike rows on made-up hidden states: each technique moves the base's states
    along its own direction, more in deeper layers, plus seed noise."""
    from whichlora.analyze.alike import alike_rows
    from whichlora.analyze.representations import Representations

    langs, n, dim = list(spec.evaluated), 8, 12
    x0 = rng.normal(size=(spec.layers + 1, len(langs) * n, dim))
    direction = {t: rng.normal(size=(dim, dim)) / dim**0.5 for t in spec.techniques}
    reps = {"base": Representations(langs, n, {"mean": x0, "last": x0})}
    for run in runs:
        depth = np.linspace(0, 1, spec.layers + 1)[:, None, None]
        moved = x0 @ (direction[run.technique] + 0.05 * rng.normal(size=(dim, dim)))
        x = x0 + depth * moved
        reps[run.run_id] = Representations(langs, n, {"mean": x, "last": x})
    labels = {r.run_id: (r.label, r.seed) for r in runs}
    return alike_rows(reps, labels, ctx.study.analysis.baseline, ["mean", "last"])


def _significance(ctx: StudyContext, source: str) -> list[dict[str, Any]]:
    """Rows exactly as the analyze stage writes them, by its own functions."""
    from whichlora.analyze.stage import scores_frame, significance_rows

    spec = ctx.study.analysis
    run_ids = [r.run_id for r in ctx.selected_runs()]
    scores = scores_frame(ctx, run_ids)
    return significance_rows(scores, source, spec.baseline, spec.alpha, spec.bootstrap_resamples)


def _verdicts(ctx: StudyContext, source: str) -> list[dict[str, Any]]:
    """Verdict rows exactly as the analyze stage writes them, by its own functions."""
    from whichlora.analyze.stage import scores_frame
    from whichlora.analyze.verdict_rows import verdict_rows

    spec = ctx.study.analysis
    scores = scores_frame(ctx, [r.run_id for r in ctx.selected_runs()])
    return verdict_rows(
        scores,
        source=source,
        seen=ctx.study.data.trained_languages,
        baseline=spec.baseline,
        alpha=spec.alpha,
        margins=spec.margins,
    )
