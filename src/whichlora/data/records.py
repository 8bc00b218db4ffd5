"""The one shape every data source normalises to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """An instruction example in one language; `id` is shared by its translations."""

    id: str
    language: str
    instruction: str
    output: str
    input: str = ""
    task: str = ""
