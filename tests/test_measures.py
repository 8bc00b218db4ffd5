"""Representation measures against independent references (kernel-form HSIC, U-statistics)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import cosine as cosine_distance
from scipy.stats import ortho_group

from whichlora.analyze.measures import (
    cosine_similarity_matrix,
    linear_cka,
    mean_similarity_to,
    minibatch_cka,
    probe_accuracy,
    retrieval_accuracy,
    unbiased_cka,
    unbiased_hsic,
)
from whichlora.errors import WhichloraError

# --------------------------------------------------------------------------- references


def ref_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kernel form: HSIC = tr(K H L H) / (n-1)^2 with the explicit centering matrix H."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n

    def hsic(k: np.ndarray, m: np.ndarray) -> float:
        return np.trace(k @ h @ m @ h) / (n - 1) ** 2

    k, m = x @ x.T, y @ y.T
    return hsic(k, m) / np.sqrt(hsic(k, k) * hsic(m, m))


def ref_unbiased_hsic(k: np.ndarray, m: np.ndarray) -> float:
    """Song et al. 2012 as the U-statistic: mean over ordered distinct 4-tuples of h(i,j,q,r)."""
    n = k.shape[0]
    total, count = 0.0, 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * m[i, j] + k[i, j] * m[q, r] - 2 * k[i, j] * m[i, q]
        count += 1
    return total / count


def ref_unbiased_cka(x: np.ndarray, y: np.ndarray) -> float:
    k, m = x @ x.T, y @ y.T
    return ref_unbiased_hsic(k, m) / np.sqrt(ref_unbiased_hsic(k, k) * ref_unbiased_hsic(m, m))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def related(rng: np.random.Generator, n: int = 40, dx: int = 6, dy: int = 9):
    x = rng.normal(size=(n, dx))
    y = x @ rng.normal(size=(dx, dy)) + 0.5 * rng.normal(size=(n, dy))
    return x, y


# --------------------------------------------------------------------------- linear CKA


def test_linear_cka_matches_kernel_form_reference(rng):
    for n, dx, dy in [(40, 6, 9), (12, 30, 5), (25, 3, 3)]:
        x, y = related(rng, n, dx, dy)
        x = x + 5.0  # uncentred input: the function must centre
        assert linear_cka(x, y) == pytest.approx(ref_linear_cka(x, y), abs=1e-6)


def test_linear_cka_of_same_representation_is_one(rng):
    x, _ = related(rng)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_invariant_to_orthogonal_and_isotropic_scaling(rng):
    x, y = related(rng)
    q = ortho_group.rvs(y.shape[1], random_state=7)
    base = linear_cka(x, y)
    assert linear_cka(x, y @ q) == pytest.approx(base, abs=1e-10)
    assert linear_cka(3.7 * x, y) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x @ ortho_group.rvs(x.shape[1], random_state=3), 0.01 * y) == pytest.approx(
        base, abs=1e-10
    )


def test_linear_cka_not_invariant_to_arbitrary_invertible_map(rng):
    x, y = related(rng)
    a = np.diag([1.0, 10.0, 0.1, 5.0, 0.5, 2.0]) @ rng.normal(size=(6, 6))
    assert abs(np.linalg.det(a)) > 1e-3
    assert abs(linear_cka(x @ a, y) - linear_cka(x, y)) > 0.02
    assert linear_cka(x @ a, x) < 0.99


def test_linear_cka_rejects_bad_input(rng):
    with pytest.raises(WhichloraError):
        linear_cka(rng.normal(size=(5, 3)), rng.normal(size=(6, 3)))
    with pytest.raises(WhichloraError):
        linear_cka(np.ones((5, 3)), rng.normal(size=(5, 3)))
    with pytest.raises(WhichloraError):
        linear_cka(rng.normal(size=(5,)), rng.normal(size=(5, 3)))


# --------------------------------------------------------------------------- unbiased / minibatch


def test_unbiased_hsic_matches_u_statistic_loop(rng):
    for n in (4, 6, 8):
        x, y = related(rng, n, 3, 4)
        k, m = x @ x.T, y @ y.T
        assert unbiased_hsic(k, m) == pytest.approx(ref_unbiased_hsic(k, m), rel=1e-9, abs=1e-12)


def test_unbiased_cka_matches_loop_reference(rng):
    x, y = related(rng, 8, 3, 5)
    assert unbiased_cka(x, y) == pytest.approx(ref_unbiased_cka(x, y), rel=1e-9)
    assert unbiased_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_unbiased_cka_needs_four_examples(rng):
    with pytest.raises(WhichloraError, match="at least 4"):
        unbiased_cka(rng.normal(size=(3, 2)), rng.normal(size=(3, 2)))


def test_minibatch_cka_single_batch_equals_unbiased(rng):
    x, y = related(rng, 30)
    full = unbiased_cka(x, y)
    assert minibatch_cka(x, y, batch_size=30, seed=0) == pytest.approx(full, abs=1e-12)
    assert minibatch_cka(x, y, batch_size=1000, seed=5) == pytest.approx(full, abs=1e-12)


def test_minibatch_cka_is_reproducible_and_close_to_full(rng):
    x, y = related(rng, 600, 8, 12)
    a = minibatch_cka(x, y, batch_size=100, seed=3)
    assert a == minibatch_cka(x, y, batch_size=100, seed=3)
    assert a == pytest.approx(unbiased_cka(x, y), abs=0.05)
    assert minibatch_cka(x, x, batch_size=64, seed=0) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(WhichloraError):
        minibatch_cka(x, y, batch_size=3)


# --------------------------------------------------------------------------- cosine / retrieval


def test_cosine_similarity_matrix_matches_loop(rng):
    reps = {lang: rng.normal(size=(7, 5)) for lang in ("en", "de", "sw")}
    langs, mat = cosine_similarity_matrix(reps)
    assert langs == ["en", "de", "sw"]
    for a, la in enumerate(langs):
        for b, lb in enumerate(langs):
            ref = np.mean([1 - cosine_distance(reps[la][i], reps[lb][i]) for i in range(7)])
            assert mat[a, b] == pytest.approx(ref, abs=1e-12)
    assert np.allclose(np.diag(mat), 1.0)


def test_mean_similarity_to_pivot(rng):
    en = rng.normal(size=(10, 4))
    reps = {"en": en, "de": 2.0 * en, "sw": -en}
    sims = mean_similarity_to(reps, pivot="en")
    assert sims == pytest.approx({"de": 1.0, "sw": -1.0})
    with pytest.raises(WhichloraError, match="pivot"):
        mean_similarity_to(reps, pivot="fr")
    with pytest.raises(WhichloraError):
        cosine_similarity_matrix({"en": en, "de": en[:5]})


def test_retrieval_accuracy_identical_and_random(rng):
    src = rng.normal(size=(200, 64))
    assert retrieval_accuracy(src, src) == 1.0
    assert retrieval_accuracy(src, src, center=False) == 1.0
    assert retrieval_accuracy(src, rng.normal(size=(200, 64))) < 0.05  # chance is 0.005


def test_retrieval_centering_removes_language_offset(rng):
    src = rng.normal(size=(100, 16))
    tgt = src + 0.3 * rng.normal(size=src.shape) + 20.0 * rng.normal(size=16)
    assert retrieval_accuracy(src, tgt, center=True) > 0.95
    assert retrieval_accuracy(src, tgt, center=False) < retrieval_accuracy(src, tgt)


# --------------------------------------------------------------------------- probe


def test_probe_accuracy_separable_clusters(rng):
    centres = 6.0 * rng.normal(size=(3, 10))
    labels = np.repeat(["en", "de", "sw"], 40)
    x = centres[np.repeat(np.arange(3), 40)] + rng.normal(size=(120, 10))
    assert probe_accuracy(x, labels) > 0.95


def test_probe_accuracy_random_labels_near_chance(rng):
    x = rng.normal(size=(150, 10))
    labels = rng.choice(["en", "de", "sw"], size=150)
    assert 0.15 < probe_accuracy(x, labels, seed=1) < 0.5


def test_probe_reduces_folds_and_validates(rng):
    x = rng.normal(size=(12, 3))
    labels = ["en"] * 10 + ["sw"] * 2  # smallest class of 2 -> 2 folds
    assert 0.0 <= probe_accuracy(x, labels) <= 1.0
    with pytest.raises(WhichloraError, match="at least 2 languages"):
        probe_accuracy(x, ["en"] * 12)
    with pytest.raises(WhichloraError, match="per language"):
        probe_accuracy(x, ["en"] * 11 + ["sw"])
    with pytest.raises(WhichloraError):
        probe_accuracy(x, ["en"] * 5)
