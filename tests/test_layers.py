"""Imports follow the layers: a lower layer never imports a higher one, not even lazily; no two
modules import each other (through any chain, function-local imports included); no module
imports another's private names; and no code outside a technique's own module switches on the
technique's name."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

ORDER = [
    "cli",
    "study",
    "report",
    "analyze",
    "evaluate",
    "train",
    "techniques|data|models|config",
    "store|paths|errors|version",
]
ROOT = Path(__file__).resolve().parents[1] / "src" / "whichlora"
# Where technique names belong: each technique's own module and the registry's list of them.
TECHNIQUE_HOMES = ("techniques/methods/", "techniques/registry.py")


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


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def imports(name: str) -> Iterator[tuple[int, str, str | None]]:
    path = modules()[name]
    return imports_in(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")


def imports_in(source: str, name: str, is_package: bool) -> Iterator[tuple[int, str, str | None]]:
    """(line, module, imported name or None) for every import in module `name`'s `source`,
    wherever it stands (top level, inside a function, under TYPE_CHECKING); relative imports
    resolved."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[: len(package) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            for alias in node.names:
                yield node.lineno, base, alias.name


def imported_module(base: str, name: str | None) -> str | None:
    """The package module an import reaches: `from a import b` reaches a.b when b is a module."""
    known = modules()
    if name is not None and f"{base}.{name}" in known:
        return f"{base}.{name}"
    while base and base not in known:
        base = base.rpartition(".")[0]
    return base or None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules()}
    for name in modules():
        for _, base, imported in imports(name):
            target = imported_module(base, imported)
            if target is not None and target != name:
                graph[name].add(target)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def private_imports() -> list[str]:
    found = []
    for name in modules():
        for line, base, imported in imports(name):
            target = imported_module(base, imported) if base.startswith("whichlora") else None
            if (
                target not in (None, name)
                and imported is not None
                and imported.startswith("_")
                and not imported.startswith("__")
            ):
                found.append(f"{name}:{line}: from {base} import {imported}")
    return found


def defaults(tree: ast.AST) -> set[int]:
    """ids of the nodes that are default values: of a parameter, or of a field in a class body
    (a default names what is used when nothing is said; it switches nothing)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            found.update(id(d) for d in [*node.args.defaults, *node.args.kw_defaults] if d)
        elif isinstance(node, ast.ClassDef):
            found.update(
                id(stmt.value)
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and stmt.value is not None
            )
    return found


def technique_names_outside_their_modules() -> list[str]:
    """String constants equal to a registered technique's name (in any case: peft types such
    as "SHIRA" too), outside the technique modules and the registry."""
    from whichlora.techniques import REGISTRY

    names = {name.lower() for name in REGISTRY}
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        where = path.relative_to(ROOT).as_posix()
        if where.startswith(TECHNIQUE_HOMES):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed = defaults(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.lower() in names
                and id(node) not in allowed
            ):
                found.append(f"{where}:{node.lineno}: {node.value!r}")
    return found


def test_no_layer_imports_a_higher_one() -> None:
    assert upward_imports() == []


def test_no_import_circles() -> None:
    assert import_cycles(import_graph()) == []


def test_the_checks_see_function_local_and_relative_imports() -> None:
    source = "def f():\n    from whichlora.store import names\n    from . import _x\n"
    found = [(base, imported) for _, base, imported in imports_in(source, "whichlora.a.b", False)]
    assert found == [("whichlora.store", "names"), ("whichlora.a", "_x")]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names() -> None:
    assert private_imports() == []


def test_no_code_outside_a_technique_module_switches_on_its_name() -> None:
    """A technique's special cases live in its module (techniques/methods/), behind the fields
    of its registry entry; elsewhere only defaults may name one (the baseline, LoRA)."""
    assert technique_names_outside_their_modules() == []


def test_test_helpers_live_outside_the_package() -> None:
    assert not (ROOT / "report" / "synthetic.py").exists()
