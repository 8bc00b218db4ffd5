"""whichlora: compare LoRA techniques for multilingual instruction tuning."""

from __future__ import annotations

from whichlora.version import __version__

__all__ = ["__version__", "run_study"]


def run_study(path, **kwargs):  # noqa: ANN001, ANN201 - thin lazy re-export
    """Run (or resume) a study and return its results; see whichlora.study.api."""
    from whichlora.study.api import run_study as _run_study

    return _run_study(path, **kwargs)
