"""The bundled model's one-time conversion: each GGUF parsed once, the same files as before."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def _tiny_gguf(path: Path) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_is_parsed_once_inside_the_conversion_only(tmp_path: Path) -> None:
    import gguf

    from whichlora.models.builtin import _gguf_parsed_once

    path = str(_tiny_gguf(tmp_path / "tiny.gguf"))
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _gguf_parsed_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(path) is first
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
        assert "token_embd.weight" in {t.name for t in first.tensors}
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)


@pytest.mark.slow
def test_conversion_parsed_once_writes_the_files_a_plain_conversion_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    import filecmp

    import torch
    from safetensors.torch import load_file

    from whichlora.models import builtin

    model = builtin.BUILTIN_MODELS["smollm2-135m"]
    once, plain = tmp_path / "once", tmp_path / "plain"
    once.mkdir(), plain.mkdir()
    builtin._convert(model, once)
    monkeypatch.setattr(builtin, "_gguf_parsed_once", contextlib.nullcontext)
    builtin._convert(model, plain)
    names = sorted(p.name for p in once.iterdir())
    assert names == sorted(p.name for p in plain.iterdir())
    for name in names:
        if name.endswith(".safetensors"):
            a, b = load_file(once / name), load_file(plain / name)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert filecmp.cmp(once / name, plain / name, shallow=False), name
