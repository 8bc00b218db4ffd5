"""The report stage: `build_report(ctx)` in build.py turns a study folder into report/ (HTML,
Markdown, figures and CSV/JSON tables); synthetic.py makes a small study to preview it."""
