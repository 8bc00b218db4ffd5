"""The report stage: `build_report(store, study, study_dir, runs)` in build.py turns a study's
results into report/ (HTML, Markdown, figures and CSV/JSON tables); tests/synthetic.py makes a
small study to preview it."""
