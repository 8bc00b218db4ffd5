"""The one shape every data source normalises to."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Record:
    """An instruction example in one language; `id` is shared by its translations."""

    id: str
    language: str
    instruction: str
    output: str
    input: str = ""
    task: str = ""


@dataclass
class LoadReport:
    """What a load kept and skipped, so `skip_invalid: true` never hides how much was lost."""

    source: str
    loaded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)  # the first few skip messages

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(message)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def skipped_text(self) -> str:
        """'skipped 3: 2 missing field, 1 invalid JSON' (or 'nothing skipped')."""
        if not self.skipped:
            return "nothing skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return f"skipped {self.skipped_total}: {parts}"

    def summary(self) -> str:
        return f"{self.source}: loaded {self.loaded} records, {self.skipped_text()}"
