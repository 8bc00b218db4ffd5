"""Bad input: every case of tests/corpus fails with exit code 2, one message, no traceback, and
nothing written -- before any weights are loaded, let alone trained.

The corpus is data (tests/corpus/cases.yaml plus one study file per case and the data files they
name), so a new case is a new YAML file and one line in the table.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from whichlora.cli import main

CORPUS = Path(__file__).parent / "corpus"
CASES: dict[str, dict[str, Any]] = yaml.safe_load(
    (CORPUS / "cases.yaml").read_text(encoding="utf-8")
)
SUBPROCESS_CASES = sorted(name for name, case in CASES.items() if case.get("subprocess"))
REMOTE_CODE_MARKER = "REMOTE_CODE_WAS_EXECUTED"


# ---------------------------------------------------------------------------------- fixtures
def make_pickle_model(tiny_model_dir: Path, folder: Path) -> Path:
    """The tiny model with its weights as pytorch_model.bin (a pickle) and no safetensors."""
    import torch
    from safetensors.torch import load_file

    folder.mkdir(parents=True)
    for file in tiny_model_dir.iterdir():
        if file.suffix != ".safetensors":
            shutil.copy(file, folder / file.name)
    torch.save(load_file(tiny_model_dir / "model.safetensors"), folder / "pytorch_model.bin")
    return folder


@pytest.fixture(scope="session")
def pickle_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pickle_model(tiny_model_dir, tmp_path_factory.mktemp("pickle-model") / "model")


def make_remote_code_model(tiny_model_dir: Path, folder: Path, model_type: str) -> Path:
    """The tiny model whose config asks for custom code (auto_map); importing that code leaves a
    marker file, so a test can tell whether it ever ran."""
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "configuration_custom.CustomConfig",
        "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
    }
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    marker = folder / REMOTE_CODE_MARKER
    (folder / "configuration_custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('configuration')\n"
        "from transformers import LlamaConfig\n\n\n"
        f"class CustomConfig(LlamaConfig):\n    model_type = {model_type!r}\n",
        encoding="utf-8",
    )
    (folder / "modeling_custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('modeling')\n"
        "from transformers import LlamaForCausalLM\n\n"
        "from .configuration_custom import CustomConfig\n\n\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    config_class = CustomConfig\n",
        encoding="utf-8",
    )
    return folder


@pytest.fixture(scope="session")
def remote_code_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model type transformers does not know: it loads only by running the folder's code."""
    root = tmp_path_factory.mktemp("remote-code-model")
    return make_remote_code_model(tiny_model_dir, root / "model", "whichlora_custom")


@pytest.fixture
def no_weights_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must fail before any model weights are loaded (so before any training)."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("model weights were loaded for an invalid study")

    monkeypatch.setattr("whichlora.models.loading.load_model", refuse)
    monkeypatch.setattr("whichlora.train.loop.load_model", refuse)


# ------------------------------------------------------------------------------------ setups
def _unreadable(tmp: Path, study: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root from reading the file")
    study.chmod(0)


def _out_is_file(tmp: Path, study: Path) -> None:
    (tmp / "out").write_text("a file where the study folder should go\n", encoding="utf-8")


def _out_exists(tmp: Path, study: Path) -> None:
    (tmp / "out").mkdir()  # an empty folder the user made: an invalid study leaves it empty


def _out_under_file(tmp: Path, study: Path) -> None:
    (tmp / "afile").write_text("not a folder\n", encoding="utf-8")


def _bad_resolved(tmp: Path, study: Path) -> None:
    (tmp / "folder").mkdir()
    (tmp / "folder" / "resolved.yaml").write_text("name: [unclosed\n", encoding="utf-8")


def _other_study(tmp: Path, study: Path) -> None:
    """The --out folder already holds a study with another configuration and a finished unit
    that the study under test would discard (its inputs changed)."""
    from whichlora.study.context import open_study

    other = tmp / "other.yaml"
    data = yaml.safe_load(study.read_text(encoding="utf-8"))
    data["budget"] = {"rank": 2}
    other.write_text(yaml.safe_dump(data), encoding="utf-8")
    ctx = open_study(other, tmp / "out")
    run = ctx.runs[0]
    ctx.store.finish_unit(run.run_id, "train", {}, key=ctx.key(run.run_id, "train"))
    ctx.close()


SETUPS: dict[str, Callable[[Path, Path], None]] = {
    "unreadable": _unreadable,
    "out_is_file": _out_is_file,
    "out_exists": _out_exists,
    "out_under_file": _out_under_file,
    "bad_resolved": _bad_resolved,
    "other_study": _other_study,
}


# ----------------------------------------------------------------------------------- helpers
def placeholders(tmp: Path, models: dict[str, Path]) -> dict[str, str]:
    return {
        "@MODEL@": str(models["model"]),
        "@PICKLE_MODEL@": str(models["pickle"]),
        "@REMOTE_CODE_MODEL@": str(models["remote"]),
        "@CORPUS@": str(CORPUS),
        "@OUT@": str(tmp / "out"),
        "@TMP@": str(tmp),
    }


def substitute(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def prepare_case(name: str, tmp: Path, models: dict[str, Path]) -> list[str]:
    """Write the case's study (placeholders filled) into `tmp`, run its setup; return CLI argv."""
    case = CASES[name]
    if case.get("skip_if_module") and importlib.util.find_spec(case["skip_if_module"]):
        pytest.skip(f"{case['skip_if_module']} is installed here")
    values = placeholders(tmp, models)
    study_name = case.get("study", f"{name}.yaml")
    if "@" in study_name:
        study = Path(substitute(study_name, values))
    else:
        raw = (CORPUS / study_name).read_bytes()
        for key, value in values.items():
            raw = raw.replace(key.encode(), value.encode())
        study = tmp / study_name
        study.write_bytes(raw)
    if case.get("setup"):
        SETUPS[case["setup"]](tmp, study)
    args = [substitute(a, values) for a in case.get("args", ["--out", "@OUT@"])]
    return [case.get("command", "run"), str(study), *args, "--quiet"]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` with a hash of its content: what 'nothing written' compares."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_dir():
            out[rel] = "dir"
        elif path.name == ".whichlora.lock":
            out[rel] = "lock"  # taking the lock rewrites this empty file; it holds no results
        else:
            try:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            except PermissionError:
                out[rel] = "unreadable"
    return out


def check_message(stdout: str, stderr: str, expect: list[str]) -> str:
    """One line on stderr, 'whichlora: error: ...', with the expected fragments and a fix."""
    assert "Traceback" not in stdout + stderr, stderr
    assert stdout.strip() == "", stdout
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one message, got:\n{stderr}"
    message = lines[0]
    assert message.startswith("whichlora: error: "), message
    lowered = message.lower()
    assert "fix" in lowered, f"no fix in: {message}"
    missing = [fragment for fragment in expect if fragment.lower() not in lowered]
    assert not missing, f"{missing} not in: {message}"
    return message


@pytest.fixture
def models(
    tiny_model_dir: Path, pickle_model_dir: Path, remote_code_model_dir: Path
) -> dict[str, Path]:
    return {"model": tiny_model_dir, "pickle": pickle_model_dir, "remote": remote_code_model_dir}


# ------------------------------------------------------------------------------------- tests
def test_corpus_is_complete() -> None:
    """At least 40 cases; every study file and data file of the corpus is used by a case."""
    assert len(CASES) >= 40
    studies = {case.get("study", f"{name}.yaml") for name, case in CASES.items()}
    on_disk = {p.name for p in CORPUS.glob("*.yaml")} - {"cases.yaml", "valid.yaml"}
    assert on_disk <= studies, f"corpus files without a case: {sorted(on_disk - studies)}"
    assert all((CORPUS / s).is_file() for s in studies if "@" not in s)
    texts = "".join(p.read_text(encoding="latin-1") for p in CORPUS.glob("*.yaml"))
    unused = [p.name for p in (CORPUS / "data").iterdir() if p.name not in texts]
    assert not unused, f"data files no case names: {unused}"


def test_valid_base_study_passes_every_check(
    tmp_path: Path, models: dict[str, Path], no_weights_loaded: None
) -> None:
    """The control: each case differs from this study by its defect only."""
    from whichlora.config.study import load_study
    from whichlora.study.context import preflight
    from whichlora.study.plan import plan_study

    path = tmp_path / "valid.yaml"
    text = (CORPUS / "valid.yaml").read_text(encoding="utf-8")
    path.write_text(substitute(text, placeholders(tmp_path, models)), encoding="utf-8")
    study = load_study(path)
    cache = preflight(study, plan_study(study), path)
    assert cache["train"] and cache["evalset"].heldout


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_case(
    name: str,
    tmp_path: Path,
    models: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_weights_loaded: None,
) -> None:
    monkeypatch.chdir(tmp_path)  # a default ./studies/<name> folder would land here
    argv = prepare_case(name, tmp_path, models)
    before, corpus_before = snapshot(tmp_path), snapshot(CORPUS)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    check_message(captured.out, captured.err, CASES[name]["expect"])
    assert snapshot(tmp_path) == before, "an invalid study wrote files"
    assert snapshot(CORPUS) == corpus_before
    assert not (models["remote"] / REMOTE_CODE_MARKER).exists()


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_case_in_a_real_process(
    name: str, tmp_path: Path, models: dict[str, Path]
) -> None:
    """The installed entry point: exit status 2 and a message, never a traceback."""
    argv = prepare_case(name, tmp_path, models)
    before = snapshot(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "whichlora", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    check_message(proc.stdout, proc.stderr, CASES[name]["expect"])
    assert snapshot(tmp_path) == before


def test_unreadable_study_file_even_as_root(
    tmp_path: Path,
    models: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """chmod 000 cannot stop root (the corpus case skips then): make the read itself fail."""
    argv = prepare_case("study_unreadable", tmp_path, models) if os.geteuid() != 0 else None
    study = tmp_path / "study_unreadable.yaml"
    if argv is None:
        study.write_text((CORPUS / "valid.yaml").read_text(encoding="utf-8"), encoding="utf-8")
        argv = ["run", str(study), "--out", str(tmp_path / "out"), "--quiet"]
    real_read = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        if self == study:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    check_message(captured.out, captured.err, CASES["study_unreadable"]["expect"])
    assert snapshot(tmp_path) == before
