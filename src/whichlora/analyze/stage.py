"""The analyze stage: layer-wise representation measures and significance tests, once per study.

Representations answer *why* a technique transfers (does tuning pull languages together?), the
significance tests answer *whether* its gains are real. Both tables are rebuilt whole from the
evaluated runs, so the stage is redone exactly when that set of runs changes.

Rows written to `analysis` (run_id, pooling, layer, measure, language, other, value), for every
model (run_id 'base' or a run), pooling and hidden-state layer (0 = embeddings):

- cosine: mean parallel-sentence cosine between `language` and `other` (full matrix, diagonal 1);
- sim_to_source: same, for each language vs the source language (`other`);
- retrieval_to_source: centred nearest-neighbour retrieval accuracy `language` -> `other`=source;
- probe: cross-validated language-ID probe accuracy (language '' other ''), on a subset of layers;
- probe_control, probe_selectivity: the same probe on its control task (a random label per
  parallel sentence, measures.control_labels) and probe - probe_control, on the same layers;
- cka_base, cka_base_unbiased: linear / unbiased CKA of a run vs the base (runs only, '' '');
- cka_pair: linear CKA between two runs, run_id 'a|b' with a < b ('' '').

Rows written to `alike` (technique, pooling, layer, verdict, payload), in the same transaction:
whether each technique's representations are alike LoRA's at each layer, against LoRA's seed
floor (analyze/alike.py).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from whichlora.analyze.alike import DEFAULT_CKA_MARGIN, MARGIN_KEY, alike_rows
from whichlora.analyze.measures import (
    control_labels,
    cosine_similarity_matrix,
    linear_cka,
    mean_similarity_to,
    minibatch_cka,
    probe_accuracy,
    retrieval_accuracy,
    unbiased_hsic,
)
from whichlora.analyze.representations import (
    Representations,
    cached_representations,
    is_cached,
)
from whichlora.analyze.verdict_rows import directions, json_safe, verdict_rows
from whichlora.errors import WhichloraError
from whichlora.store import BASE

log = logging.getLogger("whichlora")

__all__ = [
    "analyze_stage",
    "analysis_rows",
    "embedding_pending",
    "cka_rows",
    "evaluated_runs",
    "model_rows",
    "parallel_texts",
    "probe_layers",
    "scores_frame",
    "significance_rows",
]

STAGE = "analyze"
# Marked when the analysis table is written; "analyze" itself only once significance is too.
MEASURES_STAGE = "analyze-measures"
VERDICT_STAGE = "analyze-verdicts"
KV_INPUTS = "analyze_inputs"
# Bump when rows change meaning, so finished studies redo the stage.
ANALYSIS_VERSION = 2  # 2: verdicts table

# Probe budget: the language-ID probe (5-fold logistic regression) dominates measure time. Its
# cost is estimated from the problem size alone (not timed), so the probed layers are the same on
# every machine and a recomputed study writes identical rows. Measured with one BLAS thread:
# ~0.4 s for 600 rows x 576 dims, ~1 s for 1000 x 2048, ~0.25 s for tiny inputs. The budget
# picks the layers for the language-ID probe; each probed layer also fits its control task, as
# costly again, so all probes take about twice the budget.
PROBE_BUDGET_S = 20.0
PROBE_FIXED_S = 0.2
PROBE_SECONDS_PER_CELL = 4e-7  # per row x dim
# Above this many rows, n x n Gram matrices get large: use the measures' own (minibatch) CKA.
MAX_GRAM_ROWS = 4096
MINIBATCH = 2048

SUMMARY = "__summary__"
FRIEDMAN = "__friedman__"


# --------------------------------------------------------------------------- inputs


def evaluated_runs(ctx: Any) -> list[Any]:
    """Selected runs whose test evaluation is done (every unit, for its current inputs), in plan
    order: the runs results count for."""
    return [r for r in ctx.selected_runs() if ctx.is_evaluated(r.run_id)]


def parallel_texts(study: Any) -> dict[str, list[str]]:
    """Parallel sentences in the evaluation languages (that the source has), equally many each."""
    from whichlora.data.languages import evaluation_languages
    from whichlora.data.parallel import load_parallel

    langs = evaluation_languages(study)
    spec = study.analysis
    loaded = load_parallel(spec.parallel, langs, spec.sentences_per_language)
    texts = {lang: list(loaded[lang]) for lang in langs if loaded.get(lang)}
    if not texts:
        raise WhichloraError(
            f"parallel text {spec.parallel!r} has no sentences in the evaluation languages "
            f"{langs}. Fix: set analysis.parallel to builtin:sentences or list other languages."
        )
    n = min(len(s) for s in texts.values())
    return {lang: sentences[:n] for lang, sentences in texts.items()}


# --------------------------------------------------------------------------- measures


def _row(
    run_id: str,
    pooling: str,
    layer: int,
    measure: str,
    value: float | None,
    language: str = "",
    other: str = "",
) -> dict[str, Any]:
    clean = None if value is None or not math.isfinite(value) else float(value)
    return {
        "run_id": run_id,
        "pooling": pooling,
        "layer": int(layer),
        "measure": measure,
        "language": language,
        "other": other,
        "value": clean,
    }


def probe_layers(n_layers: int, n_rows: int, dim: int, n_series: int) -> list[int]:
    """Every k-th layer plus the last, k sized so all probes fit PROBE_BUDGET_S (estimated).

    First and last layer are always probed, so at least two per model and pooling.
    """
    last = n_layers - 1
    if last <= 0:
        return [0]
    per_probe = PROBE_FIXED_S + PROBE_SECONDS_PER_CELL * n_rows * dim
    affordable = int(PROBE_BUDGET_S / max(per_probe * max(n_series, 1), 1e-9))
    per_series = max(2, min(n_layers, affordable))
    k = 1 if per_series >= n_layers else math.ceil(last / (per_series - 1))
    return sorted(set(range(0, last + 1, k)) | {last})


def model_rows(
    run_id: str,
    reps: Representations,
    poolings: Sequence[str],
    source: str,
    probe_at: Sequence[int],
) -> list[dict[str, Any]]:
    """Per-model measures: cosine matrix, similarity and retrieval to the source, probe (with
    its control task and selectivity)."""
    rows: list[dict[str, Any]] = []
    multi = len(reps.languages) >= 2
    has_source = source in reps.languages
    labels = reps.labels
    control = control_labels(len(reps.languages), reps.n_per_language)
    for pooling in poolings:
        for layer in range(reps.n_layers):
            if not multi:
                continue
            by_lang = reps.by_language(pooling, layer)
            langs, matrix = cosine_similarity_matrix(by_lang)
            for i, a in enumerate(langs):
                for j, b in enumerate(langs):
                    rows.append(_row(run_id, pooling, layer, "cosine", matrix[i, j], a, b))
            if has_source:
                for lang, value in mean_similarity_to(by_lang, source).items():
                    rows.append(_row(run_id, pooling, layer, "sim_to_source", value, lang, source))
                for lang in langs:
                    if lang != source:
                        acc = retrieval_accuracy(by_lang[lang], by_lang[source], center=True)
                        rows.append(
                            _row(run_id, pooling, layer, "retrieval_to_source", acc, lang, source)
                        )
            if layer in probe_at and reps.n_per_language >= 2:
                x = reps.stacked(pooling, layer)
                acc = probe_accuracy(x, labels)
                chance = probe_accuracy(x, control)
                rows.append(_row(run_id, pooling, layer, "probe", acc))
                rows.append(_row(run_id, pooling, layer, "probe_control", chance))
                rows.append(_row(run_id, pooling, layer, "probe_selectivity", acc - chance))
    return rows


class _Grams:
    """Centred and plain Gram matrices of one layer for every model, each computed once.

    Linear CKA = <Kc_x, Kc_y> / (|Kc_x| |Kc_y|) equals the feature-space formula in measures;
    unbiased CKA feeds the plain Grams to measures.unbiased_hsic. Both reuse self-terms.
    """

    def __init__(self, mats: Mapping[str, np.ndarray]) -> None:
        self.centred: dict[str, np.ndarray] = {}
        self.plain: dict[str, np.ndarray] = {}
        self._self_lin: dict[str, float] = {}
        self._self_unb: dict[str, float] = {}
        for name, x in mats.items():
            x = np.asarray(x, dtype=np.float64)
            k = x @ x.T
            row = k.mean(axis=0)
            # Xc Xc^T by double-centring K: one n x n x dim product per model, not two.
            self.plain[name] = k
            self.centred[name] = k - row[:, None] - row[None, :] + row.mean()

    def linear(self, a: str, b: str) -> float | None:
        for name in (a, b):
            if name not in self._self_lin:
                self._self_lin[name] = float(np.linalg.norm(self.centred[name]))
        denom = self._self_lin[a] * self._self_lin[b]
        if denom <= 1e-12:
            return None
        return float(np.sum(self.centred[a] * self.centred[b]) / denom)

    def unbiased(self, a: str, b: str) -> float | None:
        for name in (a, b):
            if name not in self._self_unb:
                k = self.plain[name]
                self._self_unb[name] = unbiased_hsic(k, k)
        xx, yy = self._self_unb[a], self._self_unb[b]
        if xx <= 0 or yy <= 0:
            return None
        return float(unbiased_hsic(self.plain[a], self.plain[b]) / np.sqrt(xx * yy))


class _DirectCKA:
    """The measures' own CKA per pair, for layers too large for n x n Grams in memory."""

    def __init__(self, mats: Mapping[str, np.ndarray]) -> None:
        self.mats = mats

    def linear(self, a: str, b: str) -> float | None:
        return _safe(linear_cka, self.mats[a], self.mats[b])

    def unbiased(self, a: str, b: str) -> float | None:
        return _safe(minibatch_cka, self.mats[a], self.mats[b], MINIBATCH)


def _safe(fn: Any, *args: Any) -> float | None:
    """Degenerate layers (constant vectors) make CKA undefined: record NULL, not a crash."""
    try:
        return float(fn(*args))
    except WhichloraError:
        return None


def cka_rows(
    reps: Mapping[str, Representations], base: str, poolings: Sequence[str]
) -> list[dict[str, Any]]:
    """CKA of each run vs the base (linear and unbiased) and linear CKA between run pairs."""
    runs = sorted(name for name in reps if name != base)
    if base not in reps or not runs:
        return []
    rows: list[dict[str, Any]] = []
    n_layers = reps[base].n_layers
    n_rows = reps[base].stacked(poolings[0], 0).shape[0]
    if n_rows < 4:
        return []
    pairs = [(a, b) for i, a in enumerate(runs) for b in runs[i + 1 :]]
    for pooling in poolings:
        for layer in range(n_layers):
            mats = {name: r.stacked(pooling, layer) for name, r in reps.items()}
            cka = _Grams(mats) if n_rows <= MAX_GRAM_ROWS else _DirectCKA(mats)
            for run in runs:
                rows.append(_row(run, pooling, layer, "cka_base", cka.linear(run, base)))
                rows.append(_row(run, pooling, layer, "cka_base_unbiased", cka.unbiased(run, base)))
            for a, b in pairs:
                rows.append(_row(f"{a}|{b}", pooling, layer, "cka_pair", cka.linear(a, b)))
    return rows


def _one_blas_thread() -> threadpool_limits:
    """Limit BLAS/OpenMP pools to one thread, loading the probe's libraries first.

    threadpoolctl only limits libraries already loaded when the limit starts; sklearn (and the
    scipy BLAS under its lbfgs) would otherwise load inside it, unlimited, and run ~4x slower.
    """
    import scipy.linalg  # noqa: F401
    import scipy.optimize  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.model_selection  # noqa: F401

    return threadpool_limits(limits=1)


def analysis_rows(
    reps: Mapping[str, Representations],
    poolings: Sequence[str],
    source: str,
    base: str = "base",
) -> list[dict[str, Any]]:
    """Every `analysis` row for these models' representations (see the module docstring)."""
    if not reps:
        return []
    first = next(iter(reps.values()))
    n_rows = first.stacked(poolings[0], 0).shape[0]
    dim = first.stacked(poolings[0], 0).shape[1]
    probe_at = probe_layers(first.n_layers, n_rows, dim, len(reps) * len(poolings))
    rows: list[dict[str, Any]] = []
    # One BLAS thread: the many small products (retrieval, cosine, probe fits) ran ~10x slower
    # with threads fighting torch's OpenMP pool, the Grams no faster on 2 cores, and a fixed
    # thread count keeps float sums identical from machine to machine.
    with _one_blas_thread():
        for name, r in reps.items():
            rows.extend(model_rows(name, r, poolings, source, probe_at))
        rows.extend(cka_rows(reps, base, poolings))
    return rows


# --------------------------------------------------------------------------- significance


def _sig_row(
    family: str, metric: str, technique: str, payload: Mapping[str, Any]
) -> dict[str, Any]:
    text = json.dumps(json_safe(payload), sort_keys=True, allow_nan=False, ensure_ascii=False)
    return {"family": family, "metric": metric, "technique": technique, "payload": text}


def scores_frame(ctx: Any, run_ids: Sequence[str]) -> pd.DataFrame:
    """Per-example test scores (technique = run label) in significance.SCORE_COLUMNS layout,
    in the study's evaluation languages only (a language dropped from the study stays in the
    store until `whichlora gc`, but is not compared)."""
    from whichlora.analyze.significance import SCORE_COLUMNS
    from whichlora.data.languages import evaluation_languages
    from whichlora.evaluate.atlas import ATLAS_PREFIX

    if not run_ids:
        return pd.DataFrame(columns=list(SCORE_COLUMNS))
    marks = ", ".join("?" for _ in run_ids)
    rows = ctx.store.query(
        "SELECT r.label, r.seed, e.language, e.example_id, e.metric, e.value "
        "FROM examples e JOIN runs r ON r.run_id = e.run_id "
        f"WHERE e.split = 'test' AND e.value IS NOT NULL AND e.run_id IN ({marks})",
        tuple(run_ids),
    )
    frame = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    current = frame["language"].isin(evaluation_languages(ctx.study))
    # The atlas unit is one per model, cleared whole when redone: what it holds is current.
    atlas = frame["metric"].str.startswith(ATLAS_PREFIX) & (ctx.study.evaluation.atlas is not None)
    frame = frame[
        (current & ~frame["metric"].str.startswith(ATLAS_PREFIX))
        | atlas
        | frame["metric"].str.startswith("harness:")
    ]
    # Metrics with a known direction: the metric table's and lm-eval's (harness:<task>:<metric>).
    known = list(directions(sorted(frame["metric"].unique())))
    frame = frame[frame["metric"].isin(known)]
    return frame.sort_values(list(SCORE_COLUMNS[:5]), kind="stable").reset_index(drop=True)


def _friedman_rows(family: str, scores: pd.DataFrame, alpha: float) -> list[dict[str, Any]]:
    """Friedman + Nemenyi per metric over (language, seed) blocks: a ranking of all techniques."""
    from whichlora.analyze.significance import aggregate_scores, friedman_nemenyi

    rows = []
    cells = aggregate_scores(scores) if not scores.empty else scores
    for metric in sorted(scores["metric"].unique(), key=str):
        hib = directions([str(metric)]).get(str(metric), True)
        table = cells[cells["metric"] == metric].pivot_table(
            index=["language", "seed"], columns="technique", values="value", aggfunc="mean"
        )
        payload: dict[str, Any] = {"higher_is_better": hib, "alpha": alpha}
        try:
            res = friedman_nemenyi(table, higher_is_better=hib, alpha=alpha)
        except WhichloraError as exc:
            payload.update(
                statistic=None,
                p=None,
                avg_ranks={},
                cd=None,
                nemenyi=None,
                k=0,
                n_blocks=0,
                note=str(exc),
            )
        else:
            payload.update(
                statistic=res.statistic,
                p=res.p_value,
                avg_ranks=res.avg_ranks,
                cd=res.cd,
                nemenyi=res.nemenyi,
                k=res.k,
                n_blocks=res.n_blocks,
                note=res.note,
            )
        rows.append(_sig_row(family, str(metric), FRIEDMAN, payload))
    return rows


def significance_rows(
    scores: pd.DataFrame,
    source: str,
    baseline: str,
    alpha: float = 0.05,
    n_resamples: int = 2000,
) -> list[dict[str, Any]]:
    """Baseline comparisons for transfer (non-source languages) and retention (source only).

    Every family gets a '__summary__' row (metric '') whose payload holds the headline sentence,
    or the reason nothing was compared; transfer also gets '__friedman__' rows per metric.
    """
    from whichlora.analyze.significance import compare_to_baseline, summary_sentence

    rows: list[dict[str, Any]] = []
    families = {
        "transfer": scores[scores["language"] != source],
        "retention": scores[scores["language"] == source],
    }
    for family, sub in families.items():
        techniques = sorted({str(t) for t in sub["technique"]})
        summary: dict[str, Any] = {"baseline": baseline, "techniques": techniques, "note": ""}
        if sub.empty:
            summary["note"] = f"no test scores for the {family} family"
            summary.update(sentence=summary["note"] + ".", n_comparisons=0)
        elif baseline not in techniques:
            summary["note"] = (
                f"baseline {baseline!r} is not among the evaluated techniques {techniques}; "
                "comparisons skipped (set analysis.baseline to one of them)"
            )
            summary.update(sentence=summary["note"] + ".", n_comparisons=0)
        else:
            df = compare_to_baseline(
                sub,
                baseline=baseline,
                higher_is_better=directions(sorted(set(sub["metric"]))),
                alpha=alpha,
                n_resamples=n_resamples,
            )
            for record in df.to_dict("records"):
                metric, technique = str(record["metric"]), str(record["technique"])
                rows.append(_sig_row(family, metric, technique, record))
            summary.update(sentence=summary_sentence(df), n_comparisons=len(df))
        rows.append(_sig_row(family, "", SUMMARY, summary))
        if family == "transfer" and not sub.empty:
            rows.extend(_friedman_rows(family, sub, alpha))
    return rows


# --------------------------------------------------------------------------- the stage


def _stage_inputs(ctx: Any, key: str | None) -> tuple[list[str], dict[str, Any], bool]:
    """(evaluated run ids, what the stage is computed from, whether it is done for that)."""
    run_ids = [r.run_id for r in evaluated_runs(ctx)]
    inputs = {"version": ANALYSIS_VERSION, "runs": sorted(run_ids), "key": key}
    done = ctx.store.unit_status("study", STAGE) == "done" and ctx.store.get_kv(KV_INPUTS) == inputs
    return run_ids, inputs, done


def embedding_pending(ctx: Any, key: str | None) -> tuple[list[str], dict[str, list[str]]]:
    """(models whose representations the stage would compute, the parallel texts): none when
    the stage is done for these inputs or every model's vectors are cached. An executor embeds
    these elsewhere (into the study folder's cache), so the stage itself only reads them."""
    run_ids, _, done = _stage_inputs(ctx, key)
    if done:
        return [], {}
    texts = parallel_texts(ctx.study)
    return [m for m in [BASE, *run_ids] if not is_cached(ctx, m, texts)], texts


def analyze_stage(ctx: Any, progress: bool = True, key: str | None = None) -> None:
    """Compute and store representation measures and significance tests for the study.

    Models: the base plus every selected run whose evaluation is done. Skipped when the stage is
    done for the same set of runs and the same `key` (the study layer's content key of every
    input: the models' evaluation units and the analysis settings). Representations are cached
    per model (analysis/reps/*.npz), keyed by their exact inputs: a new evaluation language
    re-embeds every model (the texts changed), a new run embeds only that run.
    The language-ID probe and its control run on every k-th layer plus the last (k from
    PROBE_BUDGET_S, so all probes take roughly 40 s at most); every other measure covers every
    layer.

    Writes: `analysis` and `alike` (one transaction), then `significance` with the "analyze"
    done mark (one transaction), then the run list. Until all three land the stage is not done,
    so a crash is redone on the next call; the done mark is cleared first so it never vouches for
    mixed tables.
    """
    from tqdm.auto import tqdm

    study = ctx.study
    run_ids, inputs, done = _stage_inputs(ctx, key)
    if done:
        return
    ctx.store.clear_stage(STAGE)
    ctx.store.set_kv(KV_INPUTS, {"pending": inputs})  # never matches: a crash redoes the stage
    started = time.perf_counter()
    source = study.evaluation.source_language
    poolings = list(dict.fromkeys(study.analysis.pooling)) or ["mean"]
    texts = parallel_texts(study)
    models = [BASE, *run_ids]
    n_sentences = sum(len(s) for s in texts.values())
    bar = tqdm(
        total=len(models) * n_sentences,
        desc="analyze",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    )
    reps: dict[str, Representations] = {}
    for model_id in models:
        before = bar.n
        reps[model_id] = cached_representations(
            ctx, model_id, texts, batch_size=study.evaluation.batch_size, on_batch=bar.update
        )
        bar.update(n_sentences - (bar.n - before))  # a cache hit advances the bar at once
    bar.close()
    encoded = time.perf_counter()
    rows = analysis_rows(reps, poolings, source, base=BASE)
    spec = study.analysis
    labels = {r.run_id: (r.label, r.seed) for r in evaluated_runs(ctx)}
    with _one_blas_thread():
        alike = alike_rows(reps, labels, spec.baseline, poolings, alpha=spec.alpha,
                           margin=spec.margins.get(MARGIN_KEY, DEFAULT_CKA_MARGIN))  # fmt: skip
    measured = time.perf_counter()
    scores = scores_frame(ctx, run_ids)
    sig = significance_rows(scores, source, spec.baseline, spec.alpha, spec.bootstrap_resamples)
    significant = time.perf_counter()
    verdicts = verdict_rows(
        scores,
        source=source,
        seen=study.data.trained_languages,
        baseline=spec.baseline,
        alpha=spec.alpha,
        margins=spec.margins,
    )
    tested = time.perf_counter()
    # Embeddings have their own cost rows (representations.py): the measures' seconds are theirs.
    # Each unit stores only its own interval, so summing the units counts every second once.
    ctx.store.replace_tables(
        {"analysis": rows, "alike": alike}, MEASURES_STAGE, seconds=measured - encoded, key=key
    )
    ctx.store.replace_table(
        "verdicts", verdicts, VERDICT_STAGE, seconds=tested - significant, key=key
    )
    ctx.store.replace_table("significance", sig, STAGE, seconds=significant - measured, key=key)
    ctx.store.set_kv(KV_INPUTS, inputs)
    log.info(
        "analyzed %d model(s): representations %.1f s, measures %.1f s, significance %.1f s",
        len(models),
        encoded - started,
        measured - encoded,
        tested - measured,
    )
