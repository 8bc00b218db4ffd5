"""Sparse adapter dropout (`training.sparse_dropout`): nn.Dropout's masks in distribution, from
the gaps between dropped positions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from scipy import stats

from whichlora.train.dropout import (
    SparseDropout,
    dropped_positions,
    sparse_dropout,
    use_sparse_dropout,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_each_position_is_dropped_independently_with_probability_p() -> None:
    torch.manual_seed(0)
    p, n, draws = 0.05, 4000, 500
    dropped = torch.zeros(draws, n, dtype=torch.bool)
    for i in range(draws):
        positions = dropped_positions(n, p, "cpu")
        assert bool((positions[1:] >= positions[:-1]).all())  # sorted; padded with n
        dropped[i, positions[positions < n]] = True
    # the count per draw is Binomial(n, p)
    counts = dropped.sum(1).numpy()
    assert stats.kstest(counts, stats.binom(n, p).cdf).pvalue > 1e-3  # not a pinned value
    # every position alike: the first, last and middle ones drop at rate p
    for column in (0, n // 2, n - 1):
        rate = dropped[:, column].float().mean().item()
        assert stats.binomtest(int(rate * draws), draws, p).pvalue > 1e-3
    # neighbours independent: P(both) = p^2
    both = (dropped[:, 1:] & dropped[:, :-1]).sum().item()
    assert stats.binomtest(both, draws * (n - 1), p * p).pvalue > 1e-3


def test_kept_values_are_scaled_and_gradients_follow_the_mask() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 7, 11, requires_grad=True)
    y = sparse_dropout(x, 0.3)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.7)
    y.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, kept.float() / 0.7)


def test_the_module_is_dropout_only_while_training() -> None:
    module = SparseDropout(0.5)
    x = torch.ones(64)
    assert not torch.equal(module(x), x)
    module.eval()
    assert torch.equal(module(x), x)
    assert torch.equal(SparseDropout(0.0)(x), x)
    assert torch.equal(SparseDropout(1.0)(x), torch.zeros(64))


@pytest.mark.parametrize("technique", ["lora", "vera"])
def test_the_adapters_dropouts_are_swapped(technique: str, fresh_model: Any) -> None:
    from peft import get_peft_model

    from whichlora.techniques import REGISTRY, AdapterSettings

    settings = AdapterSettings(rank=2, dropout=0.1)
    model = get_peft_model(fresh_model().model, REGISTRY[technique].build_config(settings))
    plain = [m for m in model.modules() if type(m) is torch.nn.Dropout and m.p == 0.1]
    assert plain
    assert use_sparse_dropout(model) == len(plain)
    assert not [m for m in model.modules() if type(m) is torch.nn.Dropout and m.p > 0]


def test_a_compiled_block_keeps_the_sparse_dropout_in_one_graph() -> None:
    import torch._dynamo

    linear = torch.nn.Linear(16, 4)

    def block(x: torch.Tensor) -> torch.Tensor:
        return linear(sparse_dropout(x, 0.05)).sum()

    explained = torch._dynamo.explain(block)(torch.randn(2, 5, 16))
    assert explained.graph_break_count == 0


def test_sparse_dropout_trains_and_is_keyed_only_when_on(
    train_tiny: Any, tiny_model_dir: Path
) -> None:
    from whichlora.config.study import parse_study
    from whichlora.study.keys import train_key
    from whichlora.study.plan import plan_study

    sparse = train_tiny("lora", sparse_dropout=True, steps=3)
    again = train_tiny("lora", sparse_dropout=True, steps=3, run_name="again")
    dense = train_tiny("lora", steps=3, run_name="dense")
    assert sparse.losses == again.losses  # same seed, same masks
    # B starts at zero, so the masks first matter at step 2; then other masks, other losses
    assert sparse.losses[1:] != dense.losses[1:]
    assert any(isinstance(m, SparseDropout) for m in sparse.model.modules())
    assert not any(isinstance(m, SparseDropout) for m in dense.model.modules())

    def key(**training: Any) -> str:
        study = parse_study(
            {"model": str(tiny_model_dir), "techniques": ["lora"], "training": training}
        )
        return train_key(study, plan_study(study)[0])

    assert key(sparse_dropout=False) == key()  # earlier studies keep their keys
    assert key(sparse_dropout=True) != key()
