"""`whichlora verdict` on tables from other tools: free family labels, and the roles that say
which family is transfer (seen) and which retention in the trade-off row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from whichlora.analyze.verdicts import VerdictOptions, judge, parse_roles
from whichlora.cli import main
from whichlora.errors import WhichloraError

FAST = {"bayes": False, "aso": False, "power": False}
SHIFT = {"lora": 0.0, "better": 0.2, "same": 0.0, "noisy": 0.0}


def _frame(families: dict[str, tuple[str, float]], seeds: int = 4) -> pd.DataFrame:
    """Per family (language, shift of 'better'): 20 items x seeds, metric acc-like 'score'."""
    rng = np.random.default_rng(7)
    rows = []
    items = rng.normal(0, 1, 20)
    for family, (language, shift) in families.items():
        for seed in range(seeds):
            seed_noise = rng.normal(0, 0.01)
            for technique, base in SHIFT.items():
                effect = shift if technique == "better" else base
                noise = 0.3 if technique == "noisy" else 0.01
                for i, item in enumerate(items):
                    value = item + effect + seed_noise + rng.normal(0, noise)
                    rows.append({"technique": technique, "seed": seed, "language": language,
                                 "example_id": str(i), "metric": "score", "value": value,
                                 "family": family})  # fmt: skip
    return pd.DataFrame(rows)


OPTIONS = VerdictOptions("lora", margins={"score": 0.05}, higher_is_better={"score": True}, **FAST)


def test_free_family_labels_get_their_own_verdicts_and_no_tradeoff() -> None:
    frame = _frame({"xnli": ("de", 0.2), "arc": ("en", 0.0)})
    out = judge(frame, OPTIONS)
    assert set(out["family"]) == {"xnli", "arc"}  # no roles: no trade-off row
    verdict = {(r.technique, r.family): r.verdict for r in out.itertuples()}
    assert verdict[("better", "xnli")] == "better"
    assert verdict[("better", "arc")] == "equivalent"
    assert verdict[("same", "xnli")] != "better" and verdict[("same", "arc")] != "worse"


def test_holm_stays_within_each_family_and_metric() -> None:
    frame = _frame({"xnli": ("de", 0.2), "arc": ("en", 0.0), "solo": ("fr", 0.2)})
    frame = frame[~((frame["family"] == "solo") & frame["technique"].isin(["same", "noisy"]))]
    out = judge(frame, OPTIONS)
    for _family, group in out.groupby("family"):
        p = group["p_difference"].to_numpy()
        # Holm over the techniques of this family only: the smallest p times their number
        assert group["p_difference_holm"].min() == pytest.approx(min(p.min() * len(p), 1.0))
    solo = out[out["family"] == "solo"].iloc[0]
    assert solo["p_difference_holm"] == pytest.approx(solo["p_difference"])


def test_roles_make_the_tradeoff_row_of_free_families() -> None:
    frame = _frame({"xnli": ("de", 0.2), "arc": ("en", 0.0)})
    out = judge(frame, OPTIONS, roles={"xnli": "transfer_seen", "arc": "retention"})
    trade = out[out["family"] == "tradeoff"].set_index("technique")
    assert trade.loc["better", "verdict"] == "better"
    assert set(trade.index) == {"better", "same", "noisy"}
    assert "xnli" in trade.loc["noisy", "note"] and "arc" in trade.loc["noisy", "note"]
    # the study's own family names play their roles without being told
    named = frame.replace({"family": {"xnli": "transfer_seen", "arc": "retention"}})
    plain = judge(named, OPTIONS)
    assert plain[plain["family"] == "tradeoff"].set_index("technique").loc[
        "better", "verdict"
    ] == "better"
    assert "transfer (seen)" in plain[plain["family"] == "tradeoff"]["note"].iloc[-1]


@pytest.mark.parametrize(
    ("roles", "message"),
    [
        ({"mmlu": "retention"}, "does not have"),
        ({"xnli": "retention", "arc": "retention"}, "give each role to one family"),
        ({"xnli": "seen"}, "is not one of"),
    ],
)
def test_bad_roles(roles: dict[str, str], message: str) -> None:
    frame = _frame({"xnli": ("de", 0.2), "arc": ("en", 0.0)})
    with pytest.raises(WhichloraError, match=message):
        judge(frame, OPTIONS, roles=roles)


def test_roles_over_families_without_a_shared_metric() -> None:
    frame = _frame({"xnli": ("de", 0.2), "arc": ("en", 0.0)})
    frame.loc[frame["family"] == "arc", "metric"] = "other"
    options = VerdictOptions("lora", margins={"score": 0.05, "other": 0.05},
                             higher_is_better={"score": True, "other": True}, **FAST)  # fmt: skip
    with pytest.raises(WhichloraError, match="share no metric"):
        judge(frame, options, roles={"xnli": "transfer_seen", "arc": "retention"})


def test_parse_roles() -> None:
    assert parse_roles(["a=retention", "b = transfer_seen"]) == {
        "a": "retention", "b": "transfer_seen"
    }
    for bad in (["a"], ["=retention"], ["a=seen"], ["a=retention", "a=transfer_seen"]):
        with pytest.raises(WhichloraError, match="--role"):
            parse_roles(bad)


def _csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "scores.csv"
    frame.to_csv(path, index=False)
    return path


def test_cli_free_families_and_roles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _csv(tmp_path, _frame({"xnli": ("de", 0.2), "arc": ("en", 0.0)}, seeds=2))
    out = tmp_path / "v.json"
    base = ["verdict", str(path), "--baseline", "lora", "--margin", "score=0.05",
            "--higher-is-better", "score", "--json", str(out)]  # fmt: skip
    assert main(base) == 0
    assert {r["family"] for r in json.loads(out.read_text())} == {"xnli", "arc"}
    assert main([*base, "--role", "xnli=transfer_seen", "--role", "arc=retention"]) == 0
    records = json.loads(out.read_text())
    trade = {r["technique"]: r for r in records if r["family"] == "tradeoff"}
    assert trade["better"]["verdict"] == "better"
    assert "tradeoff" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--role", "xnli=seen"], "--role 'xnli=seen' is not FAMILY=ROLE"),
        (["--role", "mmlu=retention"], "does not have"),
        (["--language", "xnli_de=de"], "only with --lm-eval"),
    ],
)
def test_cli_bad_roles_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    path = _csv(tmp_path, _frame({"xnli": ("de", 0.2), "arc": ("en", 0.0)}))
    out = tmp_path / "v.json"
    argv = ["verdict", str(path), "--baseline", "lora", "--margin", "score=0.05",
            "--higher-is-better", "score", "--json", str(out), *extra]  # fmt: skip
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert len(captured.err.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_empty_family_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frame = _frame({"xnli": ("de", 0.2)})
    frame.loc[3, "family"] = ""
    path = _csv(tmp_path, frame)
    assert main(["verdict", str(path), "--baseline", "lora", "--margin", "score=0.05"]) == 2
    assert "'family' is empty in data row 4" in capsys.readouterr().err
