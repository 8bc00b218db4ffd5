"""Hub mappings, tested offline: `datasets` loads local files shaped like each hub dataset."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from whichlora.data.records import LoadReport, Record
from whichlora.data.sources import load_instructions
from whichlora.errors import WhichloraError


class FakeHub:
    """Routes datasets.load_dataset(ID, name=CONFIG) to local files; records the calls."""

    def __init__(self, cache: Path) -> None:
        self.files: dict[tuple[str, str | None], Path] = {}
        self.calls: list[tuple[str, str | None, str | None]] = []
        self.cache = cache
        self.real = datasets.load_dataset

    def __setitem__(self, key: tuple[str, str | None], path: Path) -> None:
        self.files[key] = path

    def load(self, path: str, name: str | None = None, split: str | None = None, **_: object):  # noqa: ANN201
        self.calls.append((path, name, split))
        if (path, name) not in self.files:
            raise ValueError(f"BuilderConfig '{name}' not found. Available: ['default']")
        local = self.files[(path, name)]
        kind = "parquet" if local.suffix == ".parquet" else "json"
        return self.real(kind, data_files={split: str(local)}, split=split, cache_dir=self.cache)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub(tmp_path / "hf")
    monkeypatch.setattr(datasets, "load_dataset", fake.load)
    return fake


def bactrian_rows(lang: str) -> list[dict]:
    texts = {"en": ("Name a fruit.", "An apple."), "sw": ("Taja tunda.", "Tufaha.")}
    instruction, output = texts[lang]
    return [
        {"instruction": instruction, "input": "", "id": "alpaca-0", "output": output},
        {"instruction": "Sum.", "input": "1 + 2", "id": "alpaca-1", "output": "3"},
    ]


def test_bactrian_x_loads_one_config_per_language(tmp_path: Path, hub: FakeHub) -> None:
    for lang in ("en", "sw"):
        path = tmp_path / f"bactrian-{lang}.parquet"
        pd.DataFrame(bactrian_rows(lang)).to_parquet(path)
        hub[("MBZUAI/Bactrian-X", lang)] = path
    records = load_instructions("hub:MBZUAI/Bactrian-X", ["en", "sw"], {})
    assert records[0] == Record("alpaca-0", "en", "Name a fruit.", "An apple.")
    assert records[3] == Record("alpaca-1", "sw", "Sum.", "3", input="1 + 2")
    assert [(call[1], call[2]) for call in hub.calls] == [
        ("en", "train"),
        ("sw", "train"),
    ]


def test_bactrian_x_needs_languages_it_has() -> None:
    with pytest.raises(WhichloraError, match="one config per language; list the languages"):
        load_instructions("hub:MBZUAI/Bactrian-X", None, {})
    with pytest.raises(WhichloraError, match="has no config for yo; choose from af, ar"):
        load_instructions("hf:MBZUAI/Bactrian-X", ["en", "yo"], {})


def test_aya_maps_inputs_targets_and_language_codes(tmp_path: Path, hub: FakeHub) -> None:
    rows = [
        {"inputs": "Habari?", "targets": "Nzuri.", "language": "Swahili",
         "language_code": "swh", "annotation_type": "original-annotations", "user_id": "u1"},
        {"inputs": "Hello?", "targets": "Hi.", "language": "English",
         "language_code": "eng", "annotation_type": "original-annotations", "user_id": "u2"},
        {"inputs": "Salam?", "targets": "Labas.", "language": "Moroccan Arabic",
         "language_code": "ary", "annotation_type": "re-annotations", "user_id": "u3"},
    ]  # fmt: skip
    path = tmp_path / "aya.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    hub[("CohereForAI/aya_dataset", None)] = path
    records = load_instructions("hub:CohereForAI/aya_dataset", ["sw", "ary"], {})
    assert [(r.language, r.instruction, r.output) for r in records] == [
        ("sw", "Habari?", "Nzuri."),
        ("ary", "Salam?", "Labas."),
    ]
    assert len({r.id for r in records}) == 2  # generated, since Aya has no id column


def test_aya_without_language_code_uses_language_names(tmp_path: Path, hub: FakeHub) -> None:
    rows = [{"inputs": "Bawo ni?", "targets": "Dáadáa ni.", "language": "Yoruba"}]
    path = tmp_path / "aya.parquet"
    pd.DataFrame(rows).to_parquet(path)
    hub[("CohereForAI/aya_dataset", None)] = path
    assert load_instructions("hub:CohereForAI/aya_dataset", None, {})[0].language == "yo"


def test_other_datasets_use_field_options_and_skip_counts(tmp_path: Path, hub: FakeHub) -> None:
    rows = [
        {"question": "Q1", "answer": "A1", "lang": "de"},
        {"question": "Q2", "answer": "", "lang": "de"},
    ]
    path = tmp_path / "generic.parquet"
    pd.DataFrame(rows).to_parquet(path)
    hub[("someone/qa", "small")] = path
    options = {
        "config": "small",
        "fields": {"instruction": "question", "output": "answer"},
        "skip_invalid": True,
    }
    report = LoadReport("")
    records = load_instructions("hub:someone/qa", ["de"], options, report)
    assert [(r.instruction, r.output, r.language) for r in records] == [("Q1", "A1", "de")]
    assert report.skipped == {"empty text": 1}
    assert "hub:someone/qa config small split train row 2" in report.examples[0]


def test_load_failures_become_one_sentence(hub: FakeHub) -> None:
    with pytest.raises(WhichloraError) as info:
        load_instructions("hub:someone/missing", None, {"config": "xx"})
    message = str(info.value)
    assert message.startswith("Could not load hub:someone/missing (config xx, split train)")
    assert "BuilderConfig 'xx' not found" in message and message.endswith(".")
