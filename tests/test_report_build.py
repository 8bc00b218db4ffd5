"""The report stage on synthetic, schema-faithful study folders: files, content, robustness."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from synthetic import SyntheticSpec, make_synthetic_study

from whichlora.report import build as build_module
from whichlora.report.build import SECTION_FAILED, build_report
from whichlora.report.document import Document
from whichlora.study.context import StudyContext

SECTION_TITLES = [
    "Decision",
    "Per-language transfer and retention",
    "Trade-off: transfer gain vs retention loss",
    "Ranking: critical-difference diagram",
    "Inside the model: layer by layer",
    "Cost",
    "Training, failures and reproducibility",
]
FIGURES = {
    "tradeoff",
    "critical_difference",
    "similarity_heatmaps",
    "similarity_change",
    "cka_to_base",
    "alignment",
    "alike",
    "training_loss",
}


def _report_args(ctx: Any) -> tuple[Any, ...]:
    return ctx.store, ctx.study, ctx.study_dir, ctx.runs


def _study(root: Path, spec: SyntheticSpec | None = None) -> StudyContext:
    root.mkdir(parents=True, exist_ok=True)
    return make_synthetic_study(root, spec)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StudyContext, Path]]:
    ctx = _study(tmp_path_factory.mktemp("full"))
    html = build_report(*_report_args(ctx))
    yield ctx, html
    ctx.close()


def test_writes_every_output(full: tuple[StudyContext, Path]) -> None:
    ctx, html = full
    report = ctx.study_dir / "report"
    assert html == report / "report.html"
    assert (report / "report.md").is_file()
    assert {p.stem for p in (report / "figures").glob("*.png")} == FIGURES
    csvs = {p.stem for p in (report / "tables").glob("*.csv")}
    jsons = {p.stem for p in (report / "tables").glob("*.json")}
    assert csvs == jsons
    expected = {
        "significance",
        "seen_languages",
        "unseen_languages",
        "source_languages",
        "fidelity",
        "base_scores",
        "tradeoff",
        "ranks",
        "costs",
        "runs",
        "versions",
        "layer_similarity",
        "layer_cka",
        "layer_alignment",
        "alike",
        "alike_summary",
    }
    assert expected <= csvs
    for name in csvs:  # every export reads back with the same rows in both formats
        frame = pd.read_csv(report / "tables" / f"{name}.csv")
        records = json.loads((report / "tables" / f"{name}.json").read_text(encoding="utf-8"))
        assert len(frame) == len(records)
    assert not list(ctx.study_dir.glob(".tmp-*"))


def test_sections_in_reader_order_and_none_broken(full: tuple[StudyContext, Path]) -> None:
    ctx, html = full
    text = html.read_text(encoding="utf-8")
    titles = re.findall(r"<h2>(.*?)</h2>", text)
    assert titles == SECTION_TITLES
    md = (ctx.study_dir / "report" / "report.md").read_text(encoding="utf-8")
    assert re.findall(r"^## (.*)$", md, flags=re.M) == SECTION_TITLES
    assert SECTION_FAILED not in text and SECTION_FAILED not in md
    assert 'class="verdict"' in text and "Wilcoxon" in text
    assert "2 seeds × 3 target languages" in text


def test_html_is_self_contained(full: tuple[StudyContext, Path]) -> None:
    _, html = full
    text = html.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)=["']?https?:""", text)
    assert "@import" not in text and "url(" not in text
    assert 'rel="stylesheet"' not in text
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == len(FIGURES)
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert image.format == "PNG" and image.width > 300


def test_markdown_links_resolve(full: tuple[StudyContext, Path]) -> None:
    ctx, _ = full
    report = ctx.study_dir / "report"
    md = (report / "report.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(((?:figures|tables)/[^)]+)\)", md)
    assert len(links) > len(FIGURES)
    assert all((report / link).is_file() for link in links)
    assert "```yaml" in md and "name: synthetic" in md


def test_seen_and_unseen_are_separate(full: tuple[StudyContext, Path]) -> None:
    ctx, _ = full
    tables = ctx.study_dir / "report" / "tables"
    seen = pd.read_csv(tables / "seen_languages.csv")
    unseen = pd.read_csv(tables / "unseen_languages.csv")
    source = pd.read_csv(tables / "source_languages.csv")
    assert set(seen["language"]) == {"de", "fr"}
    assert set(unseen["language"]) == {"sw"}
    assert set(source["language"]) == {"en"}
    assert set(seen["technique"]) == {"lora", "dora", "pissa"}


def test_deltas_match_the_metrics_table(full: tuple[StudyContext, Path]) -> None:
    """Point estimates are mean over seeds of (run - base); every interval brackets its mean."""
    ctx, _ = full
    deltas = pd.read_csv(ctx.study_dir / "report" / "tables" / "seen_languages.csv")
    metrics = ctx.store.frame("metrics").set_index(["run_id", "language", "metric"])["value"]
    for row in deltas.itertuples():
        runs = [f"{row.technique}-s{s}" for s in (0, 1)]
        expected = np.mean([metrics[(r, row.language, row.metric)] for r in runs])
        expected -= metrics[("base", row.language, row.metric)]
        assert row.delta == pytest.approx(expected, abs=1e-9)
        assert row.ci_low <= row.delta + 1e-12 <= row.ci_high + 2e-12
    assert (deltas["n_examples"] == 40).all() and (deltas["n_seeds"] == 2).all()


def test_costs_and_runs_tables(full: tuple[StudyContext, Path]) -> None:
    ctx, html = full
    tables = ctx.study_dir / "report" / "tables"
    costs = pd.read_csv(tables / "costs.csv")
    assert len(costs) == 6 and {"trainable_params", "adapter_bytes", "technique"} <= set(costs)
    runs = pd.read_csv(tables / "runs.csv")
    assert list(runs["train"].unique()) == ["done"]
    text = html.read_text(encoding="utf-8")
    assert "% of base" in text and "peak RSS (MiB)" in text and "No run failed." in text
    assert "peak GPU (MiB)" in text
    # DoRA's overhead next to LoRA as ratios (synthetic DoRA: 1.4x the time and GPU memory)
    overhead = pd.read_csv(tables / "overhead.csv")
    assert list(overhead["technique"]) == ["dora"] and list(overhead["reference"]) == ["lora"]
    assert overhead["time_per_step_ratio"].iloc[0] == pytest.approx(1.4)
    assert overhead["peak_memory_ratio"].iloc[0] == pytest.approx(1.4)
    assert list(overhead["memory"]) == ["peak_gpu_mb"] and "1.40×" in text
    versions = pd.read_csv(tables / "versions.csv")
    assert set(versions["peft"]) == {"0.17.1"}


def test_rebuild_is_identical_and_replaces_stale_files(full: tuple[StudyContext, Path]) -> None:
    ctx, html = full
    before = html.read_bytes(), (html.parent / "report.md").read_bytes()
    stale = html.parent / "tables" / "stale.csv"
    stale.write_text("old\n")
    build_report(*_report_args(ctx))
    assert (html.read_bytes(), (html.parent / "report.md").read_bytes()) == before
    assert not stale.exists()


def test_a_failed_write_keeps_the_old_report(
    full: tuple[StudyContext, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, html = full
    before = html.read_bytes()

    def boom(*args: object, **kwargs: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(build_module, "assemble", lambda inputs: Document("t", "s"))
    monkeypatch.setattr(build_module, "to_html", boom)
    with pytest.raises(RuntimeError):
        build_report(*_report_args(ctx))
    assert html.read_bytes() == before
    assert not list(ctx.study_dir.glob(".tmp-*"))


def test_a_broken_section_becomes_a_note(
    full: tuple[StudyContext, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ctx, _ = full

    def broken(*args: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(build_module, "cost_section", broken)
    doc = build_module.assemble(build_module.load_inputs(*_report_args(ctx)))
    notes = [b.text for s in doc.sections for b in s.blocks if getattr(b, "kind", "") == "note"]
    assert any(SECTION_FAILED in n and "surprise" in n for n in notes)
    assert [s.title for s in doc.sections][0] == "Decision"
    assert len(doc.figures()) == len(FIGURES)


def _texts(ctx: StudyContext) -> str:
    html = build_report(*_report_args(ctx))
    return html.read_text(encoding="utf-8")


def test_without_analysis_or_significance(tmp_path: Path) -> None:
    ctx = _study(tmp_path, SyntheticSpec(analysis=False, significance=False))
    try:
        text = _texts(ctx)
    finally:
        ctx.close()
    assert SECTION_FAILED not in text
    assert "No verdict yet: run" in text
    assert "No representation analysis yet" in text
    assert "No ranking to draw" in text
    assert "Seen target languages" in text and text.count("<img") == 2  # trade-off, loss


def test_single_technique(tmp_path: Path) -> None:
    ctx = _study(tmp_path, SyntheticSpec(techniques=("lora",), seeds=(0,)))
    try:
        text = _texts(ctx)
    finally:
        ctx.close()
    assert SECTION_FAILED not in text
    assert "Nothing to decide yet" in text
    assert "needs at least two techniques" in text


def test_failed_run_is_listed_and_left_out(tmp_path: Path) -> None:
    ctx = _study(tmp_path, SyntheticSpec(failed=("dora-s1",)))
    lost = "worker lost: WorkerCrashedError after 2 retries"
    ctx.store.finish_unit("base", "evaluate:sw", {}, status="failed", error=lost)
    try:
        text = _texts(ctx)
        tables = ctx.study_dir / "report" / "tables"
        failed = pd.read_csv(tables / "failed_runs.csv")
        seen = pd.read_csv(tables / "seen_languages.csv")
    finally:
        ctx.close()
    assert SECTION_FAILED not in text
    assert list(failed["run_id"]) == ["dora-s1"]
    assert "training diverged: loss became nan" in text
    assert f"Unit evaluate:sw (the base model&#x27;s) failed: {lost}" in text or (
        f"Unit evaluate:sw (the base model's) failed: {lost}" in text
    )
    assert set(seen.loc[seen["technique"] == "dora", "n_seeds"]) == {1}


def test_empty_study(tmp_path: Path) -> None:
    """Nothing trained or evaluated yet: every section says so instead of failing."""
    from whichlora.study.context import open_study

    study = tmp_path / "study.yaml"
    study.write_text("name: empty\ntechniques: [lora, dora]\n", encoding="utf-8")
    ctx = open_study(study, tmp_path / "out")
    try:
        text = _texts(ctx)
    finally:
        ctx.close()
    assert SECTION_FAILED not in text
    assert "No evaluation results yet" in text
    assert "No cost records yet" in text
    assert "No training logs yet" in text
    assert re.findall(r"<h2>(.*?)</h2>", text) == SECTION_TITLES


@pytest.mark.slow  # long: `make test-slow`
def test_eight_runs_report_every_technique_in_every_view(tmp_path: Path) -> None:
    """4 techniques x 2 seeds over 12 layers and 6 languages: each technique in the decision
    table and the tables, every figure drawn, no section failed. (Its build time is a
    benchmark's business, not a test's: shared machines vary in wall and CPU time.)"""
    spec = SyntheticSpec(
        techniques=("lora", "dora", "pissa", "vera"),
        examples=100,
        layers=12,
        evaluated=("en", "de", "fr", "es", "sw", "yo"),
    )
    ctx = _study(tmp_path, spec)
    try:
        text = _texts(ctx)
        tables = ctx.study_dir / "report" / "tables"
        seen = pd.read_csv(tables / "seen_languages.csv")
        figures = {p.stem for p in (ctx.study_dir / "report" / "figures").glob("*.png")}
    finally:
        ctx.close()
    assert SECTION_FAILED not in text
    assert figures == FIGURES
    assert set(seen["technique"]) >= {"dora", "pissa", "vera"}
    decision = text[
        text.index("<h2>Decision</h2>") : text.index("<h2>", text.index("<h2>Decision</h2>") + 5)
    ]
    for technique in ("dora", "pissa", "vera"):
        assert technique in decision, technique


def test_metrics_without_per_example_scores(tmp_path: Path) -> None:
    """Means alone still give the changes; intervals are left out rather than invented."""
    ctx = _study(tmp_path, SyntheticSpec(analysis=False))
    try:
        with ctx.store.transaction() as db:
            db.execute("DELETE FROM examples")
        text = _texts(ctx)
        seen = pd.read_csv(ctx.study_dir / "report" / "tables" / "seen_languages.csv")
    finally:
        ctx.close()
    assert SECTION_FAILED not in text
    assert (seen["n_examples"] == 0).all() and seen["ci_low"].isna().all()
    assert seen["delta"].notna().all()
    assert "The base model has no per-example scores yet." in text


def test_the_report_opens_with_the_decision(full: tuple[StudyContext, Path]) -> None:
    """First screen: one row per technique with a verdict word per family, then the advice;
    every comparison and the rank-test view follow, folded."""
    ctx, html = full
    text = html.read_text(encoding="utf-8")
    first = text.index('<section id="verdict">')
    assert text.index("<table>", first) < text.index('class="verdict"', first)
    decision = pd.read_csv(ctx.study_dir / "report" / "tables" / "decision.csv")
    assert set(decision["technique"]) == {"dora", "pissa"}
    assert set(decision["family"]) >= {"transfer_seen", "transfer_unseen", "retention"}
    assert set(decision["verdict"]) <= {"better", "worse", "equivalent", "inconclusive"}
    verdicts = pd.read_csv(ctx.study_dir / "report" / "tables" / "verdicts.csv")
    stored = ctx.store.query("SELECT COUNT(*) FROM verdicts")[0][0]
    assert len(verdicts) == stored > 0
    # every comparison; the rank-test view; every layer alike or not (inside the model)
    assert text.count('<details class="table">') == 3
    for row in decision.itertuples():  # a word never contradicts its interval
        if row.verdict == "equivalent":
            assert -row.margin < row.estimate < row.margin
        if row.verdict in ("better", "worse") and row.family != "tradeoff":
            assert row.ci_low > 0 or row.ci_high < 0


def test_overhead_on_cpu_runs_uses_host_memory(full: tuple[StudyContext, Path]) -> None:
    """CPU runs store no GPU peak (NULL in the store): the ratios fall back to host RSS instead
    of the section failing (found on the quickstart)."""
    from whichlora.report.inputs import load_inputs
    from whichlora.report.tables import overhead_table

    ctx, _ = full
    inputs = load_inputs(ctx.store, ctx.study, ctx.study_dir, ctx.runs)
    inputs.costs = inputs.costs.assign(peak_gpu_mb=None)
    table = overhead_table(inputs)
    assert table is not None and list(table.data["memory"]) == ["peak_rss_mb"]
    assert table.data["time_per_step_ratio"].iloc[0] == pytest.approx(1.4)
