"""The sdist and the wheel build with every warning an error (a deprecation of today is a broken
build of tomorrow), with the setuptools the lock pins, and the wheel carries what a study needs.

Offline: it calls the build backend of the venv (the hooks `python -m build` calls), on a copy of
the project, so nothing is written into the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from whichlora.config.examples import EXAMPLES_DIR, bundled_studies

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ["pyproject.toml", "README.md", "LICENSE", "src"]
HOOK = "import sys, setuptools.build_meta as b; print(getattr(b, sys.argv[1])(sys.argv[2]))"


def _build(hook: str, source: Path, out: Path) -> Path:
    """Run one PEP 517 hook in a fresh interpreter where any warning is an error."""
    out.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", HOOK, hook, str(out)],
        cwd=source,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{hook} failed or warned:\n{proc.stderr[-4000:]}"
    return out / proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(sdist, wheel): the wheel built from the unpacked sdist, as `python -m build` does."""
    tmp = tmp_path_factory.mktemp("build")
    source = tmp / "project"
    source.mkdir()
    for name in PROJECT:
        path = ROOT / name
        if path.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    sdist = _build("build_sdist", source, tmp / "dist")
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp / "unpacked", filter="data")
    (unpacked,) = (tmp / "unpacked").iterdir()
    wheel = _build("build_wheel", unpacked, tmp / "dist")
    return sdist, wheel


def test_the_build_backend_is_bounded_and_the_lock_pins_a_version_inside() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (requirement,) = [Requirement(r) for r in project["build-system"]["requires"]]
    assert requirement.name == "setuptools"
    uppers = [s for s in requirement.specifier if s.operator in ("<", "<=")]
    assert uppers, f"the build backend '{requirement}' has no upper bound"
    assert not requirement.specifier.contains("77.0.0"), "SPDX license strings need >=77.0.3"
    locked = [
        line.split("==")[1].strip()
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line.startswith("setuptools==")
    ]
    assert locked, "constraints.txt pins no setuptools: the build test would use an untested one"
    assert requirement.specifier.contains(locked[0]), (
        f"constraints.txt pins setuptools=={locked[0]}, outside the build backend's '{requirement}'"
    )
    import setuptools

    assert Version(setuptools.__version__) == Version(locked[0]), (
        "this venv's setuptools is not the lock's: run `make install`"
    )


def test_the_sdist_and_wheel_build_without_a_warning(built: tuple[Path, Path]) -> None:
    sdist, wheel = built
    assert sdist.name == "whichlora-0.1.0.tar.gz" and wheel.name.endswith("-py3-none-any.whl")


def test_the_wheel_carries_the_studies_the_data_and_the_licenses(built: tuple[Path, Path]) -> None:
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name, path in bundled_studies().items():
            inside = f"whichlora/examples/{name}.yaml"
            assert inside in names, f"the wheel lacks the bundled study {name}"
            assert archive.read(inside) == path.read_bytes()
        bundled = ROOT / "src" / "whichlora" / "data" / "bundled"
        for path in bundled.rglob("*"):
            if path.is_file():
                assert f"whichlora/{path.relative_to(ROOT / 'src' / 'whichlora')}" in names
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = Parser().parsestr(archive.read(metadata).decode("utf-8"))
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        assert "whichlora = whichlora.cli:main" in archive.read(entry_points).decode("utf-8")
        licenses = {n.split(".dist-info/licenses/")[1] for n in names if "/licenses/" in n}
    assert meta["License-Expression"] == "Apache-2.0 AND CC-BY-4.0"
    assert licenses == {"LICENSE", "src/whichlora/data/bundled/LICENSE.md"}
    assert "quickstart" in bundled_studies()


def test_the_repository_examples_are_the_packaged_ones() -> None:
    """One copy: examples/ (README, Makefile, benchmarks) is a link to the package's folder."""
    assert (ROOT / "examples").resolve() == EXAMPLES_DIR
    assert (ROOT / "examples" / "quickstart.yaml").read_bytes() == (
        EXAMPLES_DIR / "quickstart.yaml"
    ).read_bytes()
