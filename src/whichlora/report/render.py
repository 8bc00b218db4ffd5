"""HTML and Markdown from one Document. The HTML is self-contained (inline CSS, figures as base64
PNG, no scripts or web fonts) so it opens offline and can be mailed as one file."""

from __future__ import annotations

import base64
import html
import re

import pandas as pd

from whichlora.report.document import Code, Document, Figure, Heading, Table, Text

CSS = """
:root { --ink:#1d1d1f; --muted:#5f6368; --line:#d9dce1; --soft:#f5f6f8; --accent:#0072B2; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,
  sans-serif; color:var(--ink); background:#fff; }
header { background:var(--soft); border-bottom:1px solid var(--line); padding:24px 32px 12px; }
header h1 { margin:0 0 4px; font-size:26px; }
.sub { color:var(--muted); margin:0 0 12px; }
nav a { margin-right:14px; color:var(--accent); text-decoration:none; font-size:14px; }
main { max-width:1180px; margin:0 auto; padding:8px 32px 48px; }
section { margin-top:32px; }
h2 { font-size:21px; border-bottom:2px solid var(--line); padding-bottom:4px; }
h3 { font-size:16px; margin:22px 0 8px; }
.verdict { border-left:5px solid var(--accent); background:#eef5fb; padding:12px 16px;
  font-size:16px; }
.note { border-left:4px solid #E69F00; background:#fdf6e7; padding:8px 12px; color:#4a3a10; }
.wrap { overflow-x:auto; margin:8px 0 4px; }
table { border-collapse:collapse; font-size:13px; font-variant-numeric:tabular-nums; }
.caption { color:var(--muted); margin:10px 0 4px; font-size:13px; max-width:900px; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px; text-align:left;
  white-space:nowrap; vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.wrapcell { white-space:pre-wrap; max-width:640px; }
td.good { background:#d6e9f7; }
td.bad { background:#f9dcc8; }
td.same { background:#e4e4e4; }
details.table > summary { cursor:pointer; color:var(--accent); margin:10px 0 4px; font-size:13px; }
.links { font-size:12px; color:var(--muted); margin:0 0 12px; }
.links a { color:var(--muted); }
figure { margin:12px 0 20px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
pre { background:var(--soft); border:1px solid var(--line); padding:10px; overflow-x:auto;
  font-size:12px; }
code { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:16px; }
"""


def _inline(text: str) -> str:
    """Escape, then turn `code` spans into <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_table(table: Table) -> str:
    df = table.display
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    classes = table.classes if table.classes is not None else pd.DataFrame(index=df.index)
    body = []
    for i, row in enumerate(df.itertuples(index=False)):
        cells = []
        for column, value in zip(df.columns, row, strict=True):
            css = []
            if column in classes.columns and i < len(classes) and classes[column].iloc[i]:
                css.append(str(classes[column].iloc[i]))
            if column in ("error", "other metrics"):
                css.append("wrapcell")
            attr = f' class="{" ".join(css)}"' if css else ""
            cells.append(f"<td{attr}>{html.escape(str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    links = (
        f'<p class="links">data: <a href="tables/{table.name}.csv">{table.name}.csv</a> · '
        f'<a href="tables/{table.name}.json">{table.name}.json</a></p>'
    )
    grid = (
        f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody>'
        f"</table></div>{links}"
    )
    if table.collapsed:
        return (
            f'<details class="table"><summary>{_inline(table.caption)} (show {len(df)} rows)'
            f"</summary>{grid}</details>"
        )
    return f'<p class="caption">{_inline(table.caption)}</p>{grid}'


def _html_block(block: object) -> str:
    if isinstance(block, Text):
        css = {"note": ' class="note"', "verdict": ' class="verdict"'}.get(block.kind, "")
        return f"<p{css}>{_inline(block.text)}</p>"
    if isinstance(block, Heading):
        return f"<h3>{html.escape(block.text)}</h3>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">'
            f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
        )
    if isinstance(block, Code):
        lines = block.text.count("\n") + 1
        return (
            f"<details><summary>show ({lines} lines)</summary>"
            f"<pre><code>{html.escape(block.text)}</code></pre></details>"
        )
    raise TypeError(f"unknown block {type(block).__name__}")


def to_html(doc: Document, footer: str) -> str:
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in doc.sections)
    sections = "".join(
        f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>'
        + "".join(_html_block(b) for b in s.blocks)
        + "</section>"
        for s in doc.sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(doc.title)}</title>'
        f"<style>{CSS}</style></head><body><header><h1>{html.escape(doc.title)}</h1>"
        f'<p class="sub">{html.escape(doc.subtitle)}</p><nav>{nav}</nav></header>'
        f"<main>{sections}</main><footer>{html.escape(footer)}</footer></body></html>\n"
    )


# ---------------------------------------------------------------------------------- markdown
def _md_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(table: Table) -> str:
    df = table.display
    lines = [
        f"**{table.caption}** (data: [{table.name}.csv](tables/{table.name}.csv), "
        f"[{table.name}.json](tables/{table.name}.json))",
        "",
        "| " + " | ".join(_md_cell(c) for c in df.columns) + " |",
        "|" + "|".join("---" for _ in df.columns) + "|",
    ]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(False)]
    return "\n".join(lines)


def _md_block(block: object) -> str:
    if isinstance(block, Text):
        prefix = {"note": "> **Note:** ", "verdict": "> **Verdict.** "}.get(block.kind, "")
        return prefix + block.text
    if isinstance(block, Heading):
        return f"### {block.text}"
    if isinstance(block, Table):
        return _md_table(block)
    if isinstance(block, Figure):
        return f"![{block.alt}](figures/{block.name}.png)\n\n*{block.caption}*"
    if isinstance(block, Code):
        return f"```{block.language}\n{block.text.rstrip()}\n```"
    raise TypeError(f"unknown block {type(block).__name__}")


def to_markdown(doc: Document, footer: str) -> str:
    parts = [f"# {doc.title}", doc.subtitle]
    parts.append("\n".join(f"- [{s.title}](#{s.anchor})" for s in doc.sections))
    for section in doc.sections:
        parts.append(f'<a id="{section.anchor}"></a>\n\n## {section.title}')
        parts.extend(_md_block(b) for b in section.blocks)
    parts.append(f"---\n{footer}")
    return "\n\n".join(parts) + "\n"
