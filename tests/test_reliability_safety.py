"""Safe loading and a guarded study folder: safetensors only unless pickles are allowed, no model
code unless asked (and the flag really reaches transformers), names that cannot leave the study
folder, one process per study folder, and debris of a killed process swept away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_reliability_inputs import (
    REMOTE_CODE_MARKER,
    check_message,
    make_pickle_model,
    make_remote_code_model,
    snapshot,
)
from test_runner import tiny_study, write_study

from whichlora.config.study import parse_study
from whichlora.errors import WhichloraError
from whichlora.models.loading import load_config, load_model
from whichlora.study.context import open_study, preflight
from whichlora.study.plan import plan_study


def small_study(model: Any, **overrides: Any) -> dict[str, Any]:
    study = tiny_study(Path("."), **{"model": model, "techniques": ["lora"], **overrides})
    study["evaluation"].update(languages=["en", "de"], items_per_language=2)
    study["analysis"].update(sentences_per_language=4, bootstrap_resamples=100)
    return study


# ------------------------------------------------------------------------------ weights
def test_pickle_weights_are_refused_unless_allowed(
    tiny_model_dir: Path,
    tmp_path: Path,
    logits_on: Any,
    probe_batch: dict[str, Any],
) -> None:
    folder = make_pickle_model(tiny_model_dir, tmp_path / "pickle-model")
    with pytest.raises(WhichloraError, match=r"no \.safetensors weights.*allow_pickle: true"):
        load_model(str(folder))
    study = parse_study(small_study({"id": str(folder)}))
    with pytest.raises(WhichloraError, match="key 'model'.*no .safetensors"):
        preflight(study, plan_study(study), tmp_path / "study.yaml")

    allowed = parse_study(small_study({"id": str(folder), "allow_pickle": True}))
    preflight(allowed, plan_study(allowed), tmp_path / "study.yaml")
    import torch

    from_pickle = load_model(str(folder), allow_pickle=True)
    from_safetensors = load_model(str(tiny_model_dir))
    torch.testing.assert_close(
        logits_on(from_pickle.model, probe_batch), logits_on(from_safetensors.model, probe_batch)
    )


# --------------------------------------------------------------------------- remote code
def test_model_code_is_never_run_unless_asked(tiny_model_dir: Path, tmp_path: Path) -> None:
    custom = make_remote_code_model(tiny_model_dir, tmp_path / "custom", "whichlora_custom")
    for attempt in (lambda: load_model(str(custom)), lambda: load_config(str(custom))):
        with pytest.raises(WhichloraError, match="trust_remote_code: true"):
            attempt()
    assert not (custom / REMOTE_CODE_MARKER).exists()

    # A known model type with an auto_map: loads with transformers' own code, the folder's never.
    known = make_remote_code_model(tiny_model_dir, tmp_path / "known", "llama")
    loaded = load_model(str(known))
    assert type(loaded.model).__name__ == "LlamaForCausalLM"
    assert not (known / REMOTE_CODE_MARKER).exists()


class Spy:
    """Wraps a from_pretrained, recording the keyword arguments of every call."""

    def __init__(self, original: Any, stop: bool = False) -> None:
        self.original, self.stop, self.calls = original, stop, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        if self.stop:
            raise _Stop
        return self.original(*args, **kwargs)


class _Stop(Exception):
    pass


@pytest.mark.parametrize("trust", [False, True])
def test_trust_remote_code_reaches_from_pretrained(
    trust: bool, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the study file to every transformers loader: preflight, training and scoring."""
    import transformers

    from whichlora.models.scoring import load_scoring_model
    from whichlora.train.loop import train_adapter

    spies = {}
    for name in ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"):
        cls = getattr(transformers, name)
        spies[name] = Spy(cls.from_pretrained)
        monkeypatch.setattr(cls, "from_pretrained", spies[name])

    study = parse_study(small_study({"id": str(tiny_model_dir), "trust_remote_code": trust}))
    runs = plan_study(study)
    preflight(study, runs, tmp_path / "study.yaml")
    load_scoring_model(study.model, None, merge=True)
    spies["AutoModelForCausalLM"].stop = True
    with pytest.raises(_Stop):
        train_adapter(runs[0].request, [], tmp_path / "run")
    for name, spy in spies.items():
        assert spy.calls, f"{name}.from_pretrained was never called"
        assert [call["trust_remote_code"] for call in spy.calls] == [trust] * len(spy.calls), name
    # weights: safetensors only, since allow_pickle is off
    assert all(c["use_safetensors"] is True for c in spies["AutoModelForCausalLM"].calls)


# ------------------------------------------------------------------------------- names
HOSTILE = [
    "../escape",
    "../../etc",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "..",
    ".",
    ".hidden",
    "",
    "x" * 65,
    "name\x00",
    "trailing/",
    "~root",
    "a b",
    "C:evil",
]


@pytest.mark.parametrize("bad", HOSTILE)
def test_names_and_labels_cannot_leave_the_study_folder(bad: str) -> None:
    with pytest.raises(WhichloraError, match="key 'name'.*no path separators"):
        parse_study(small_study("m", name=bad))
    with pytest.raises(WhichloraError, match="label.*no path separators"):
        parse_study(small_study("m", techniques=[{"name": "lora", "label": bad}]))


def test_every_run_folder_is_inside_the_study(tmp_path: Path) -> None:
    labels = ["a.b", "x_y-1", "L0RA", "z" * 64]
    study = parse_study(
        small_study(
            "m",
            name="n.ok-1",
            techniques=[{"name": "lora", "label": label} for label in labels],
            training={"seeds": [0, 7], "learning_rates": [1e-3, 3e-3]},
        )
    )
    runs_dir = (tmp_path / "study" / "runs").resolve()
    for run in plan_study(study):
        assert (runs_dir / run.run_id).resolve().parent == runs_dir, run.run_id


# -------------------------------------------------------------------------------- lock
def test_second_process_on_a_study_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = write_study(tmp_path, small_study(str(tiny_model_dir)))
    out = tmp_path / "out"
    holder = open_study(path, out)
    try:
        before = snapshot(out)
        proc = subprocess.run(
            [sys.executable, "-m", "whichlora", "run", str(path), "--out", str(out), "--quiet"],
            cwd=tmp_path,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        check_message(proc.stdout, proc.stderr, ["in use by another whichlora process", str(out)])
        assert snapshot(out) == before
    finally:
        holder.close()
    open_study(path, out).close()  # free again once the first process is done


# ------------------------------------------------------------------------------ debris
def test_debris_of_a_killed_process_is_swept_under_the_lock(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    path = write_study(tmp_path, small_study(str(tiny_model_dir)))
    out = tmp_path / "out"
    open_study(path, out).close()
    debris = [
        out / "runs" / ".tmp-lora-s0-k1ll3d",
        out / "report" / ".tmp-report-x1",
        out / ".resolved.yaml.abc123.tmp",
        out / "analysis" / "reps" / ".base.npz.q9.tmp",
    ]
    for path_ in debris:
        if path_.suffix == ".tmp":
            path_.parent.mkdir(parents=True, exist_ok=True)
            path_.write_text("half a file", encoding="utf-8")
        else:
            (path_ / "adapter").mkdir(parents=True)
            (path_ / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    mine = [out / "notes.tmp", out / ".my-notes", out / "runs" / "keep.txt"]
    for path_ in mine:
        path_.write_text("the user's own file", encoding="utf-8")

    open_study(path, out, locked=False).close()  # no lock held: maybe another process writes
    assert all(p.exists() for p in debris)
    open_study(path, out).close()
    assert not any(p.exists() for p in debris)
    assert all(p.exists() for p in mine)
    assert yaml.safe_load((out / "resolved.yaml").read_text(encoding="utf-8"))["name"] == "tiny"
