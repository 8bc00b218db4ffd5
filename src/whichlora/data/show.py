"""`whichlora data show`: what a source holds per language, before a study spends time on it.

Lengths are in tokens of the study's tokenizer when one is given (what max_length cuts), else in
characters. Instruction sources measure instruction (+ input) + output, knowledge sources the
question + right answer, parallel sources the sentence.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from whichlora.data.languages import language_name

COLUMNS = ["language", "name", "items", "tasks", "unit", "mean", "p50", "p95", "max"]


def describe_source(
    source: str,
    languages: list[str] | None = None,
    tokenizer: Any = None,
    options: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per language plus an 'all' row; `tasks` maps task (or subject) to item count."""
    texts, tasks = _collect(source, languages, options)
    unit = "tokens" if tokenizer is not None else "chars"
    rows = []
    for code, items in texts.items():
        rows.append(_row(code, language_name(code), items, tasks[code], tokenizer, unit))
    every = [text for items in texts.values() for text in items]
    total: Counter[str] = sum((tasks[code] for code in texts), Counter())
    rows.append(_row("all", "", every, total, tokenizer, unit))
    return pd.DataFrame(rows, columns=COLUMNS)


def _collect(
    source: str, languages: list[str] | None, options: dict[str, Any] | None
) -> tuple[dict[str, list[str]], dict[str, Counter[str]]]:
    texts: dict[str, list[str]] = {}
    tasks: dict[str, Counter[str]] = {}
    if source == "builtin:knowledge":
        from whichlora.data.knowledge import load_knowledge

        for code, items in load_knowledge(source, languages).items():
            texts[code] = [f"{i.question} {i.choices[i.answer]}" for i in items]
            tasks[code] = Counter(i.subject or "-" for i in items)
    elif source in ("builtin:sentences", "udhr"):
        from whichlora.data.parallel import load_parallel

        for code, items in load_parallel(source, languages, n=None).items():
            texts[code] = items
            tasks[code] = Counter({"sentence" if source != "udhr" else "article": len(items)})
    else:
        from whichlora.data.sources import load_instructions

        for record in load_instructions(source, languages, options):
            prompt = (
                f"{record.instruction}\n\n{record.input}" if record.input else record.instruction
            )
            texts.setdefault(record.language, []).append(f"{prompt}\n\n{record.output}")
            tasks.setdefault(record.language, Counter())[record.task or "-"] += 1
    return texts, tasks


def _lengths(texts: list[str], tokenizer: Any) -> list[int]:
    if tokenizer is None:
        return [len(text) for text in texts]
    if callable(tokenizer):
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]
    return [len(tokenizer.encode(text, add_special_tokens=False)) for text in texts]


def _row(
    code: str, name: str, texts: list[str], tasks: Counter[str], tokenizer: Any, unit: str
) -> dict[str, Any]:
    lengths = np.asarray(_lengths(texts, tokenizer) or [0], dtype=float)
    return {
        "language": code,
        "name": name,
        "items": len(texts),
        "tasks": dict(sorted(tasks.items(), key=lambda kv: (-kv[1], kv[0]))),
        "unit": unit,
        "mean": round(float(lengths.mean()), 1),
        "p50": float(np.percentile(lengths, 50)),
        "p95": round(float(np.percentile(lengths, 95)), 1),
        "max": int(lengths.max()),
    }


def format_table(df: pd.DataFrame) -> str:
    """A plain-text table for the terminal, then the task counts (once if every language agrees)."""
    shown = df.drop(columns=["tasks"]).copy()
    shown["p50"] = shown["p50"].map(lambda v: f"{v:g}")
    header = list(shown.columns)
    cells = [[str(v) for v in row] for row in shown.itertuples(index=False)]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(header)]
    numeric = {"items", "mean", "p50", "p95", "max"}

    def line(values: list[str]) -> str:
        parts = [
            v.rjust(w) if h in numeric else v.ljust(w)
            for v, w, h in zip(values, widths, header, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), line(["-" * w for w in widths])]
    out += [line(row) for row in cells[:-1]]
    out += [line(["-" * w for w in widths]), line(cells[-1])]
    out.append("")
    out += _task_lines(df)
    return "\n".join(out)


def _task_lines(df: pd.DataFrame) -> list[str]:
    per_language = df[df["language"] != "all"]
    groups: dict[str, list[str]] = {}
    for code, tasks in zip(per_language["language"], per_language["tasks"], strict=True):
        text = ", ".join(f"{task} {n}" for task, n in tasks.items())
        groups.setdefault(text, []).append(code)
    if len(groups) == 1:
        return [f"tasks per language: {next(iter(groups))}"]
    return [f"tasks ({', '.join(codes)}): {text}" for text, codes in groups.items()]
