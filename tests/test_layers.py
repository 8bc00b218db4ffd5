"""Imports follow the layers: a lower layer never imports a higher one, not even lazily."""

from __future__ import annotations

import re
from pathlib import Path

ORDER = [
    "cli",
    "study",
    "report",
    "analyze",
    "evaluate",
    "train",
    "techniques|data|models|config",
    "store|paths|errors",
]
ROOT = Path(__file__).resolve().parents[1] / "src" / "whichlora"


def upward_imports() -> list[str]:
    level = {name: i for i, group in enumerate(ORDER) for name in group.split("|")}
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        own = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if own not in level:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = re.match(r"\s*(?:from|import)\s+whichlora\.(\w+)", line)
            if m and m.group(1) in level and level[m.group(1)] < level[own]:
                found.append(f"{path}:{n}: {own} imports {m.group(1)}")
    return found


def test_no_layer_imports_a_higher_one() -> None:
    assert upward_imports() == []


def test_test_helpers_live_outside_the_package() -> None:
    assert not (ROOT / "report" / "synthetic.py").exists()
