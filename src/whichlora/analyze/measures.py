"""Representation-similarity measures for asking whether tuning pulls languages together.

All functions take plain numpy arrays of shape (n_examples, dim) for one layer; callers loop over
layers. They are deterministic given their inputs (and ``seed`` where one is taken).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from whichlora.errors import WhichloraError

__all__ = [
    "control_labels",
    "cosine_similarity_matrix",
    "linear_cka",
    "mean_similarity_to",
    "minibatch_cka",
    "probe_accuracy",
    "retrieval_accuracy",
    "unbiased_cka",
    "unbiased_hsic",
]

_EPS = 1e-12


# --------------------------------------------------------------------------- helpers


def _as_matrix(x: np.ndarray, name: str) -> np.ndarray:
    """Float64 2-D view, so that sums of many products do not lose precision in float16/32."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise WhichloraError(f"{name} must be a 2-D (n_examples, dim) array, got {arr.shape}.")
    if arr.shape[0] == 0:
        raise WhichloraError(f"{name} has no examples; pass at least one row.")
    if not np.all(np.isfinite(arr)):
        raise WhichloraError(f"{name} contains NaN or infinite values; check the extracted layer.")
    return arr


def _same_rows(x: np.ndarray, y: np.ndarray, min_rows: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Measures compare the same examples in two spaces, so row counts must match."""
    x = _as_matrix(x, "X")
    y = _as_matrix(y, "Y")
    if x.shape[0] != y.shape[0]:
        raise WhichloraError(
            f"X and Y must hold the same examples, got {x.shape[0]} and {y.shape[0]} rows."
        )
    if x.shape[0] < min_rows:
        raise WhichloraError(f"this measure needs at least {min_rows} examples, got {x.shape[0]}.")
    return x, y


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Row-normalise; an all-zero row stays zero so its cosine is 0 rather than NaN."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def _check_parallel(reps: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cross-language cosines only make sense on the same parallel sentences."""
    if not reps:
        raise WhichloraError("no languages given; pass a mapping language -> (n, dim) array.")
    out = {lang: _as_matrix(x, f"representations for {lang!r}") for lang, x in reps.items()}
    shapes = {lang: x.shape for lang, x in out.items()}
    if len(set(shapes.values())) != 1:
        raise WhichloraError(
            f"all languages must have the same (n_sentences, dim) shape, got {shapes}."
        )
    return out


# --------------------------------------------------------------------------- cosine / retrieval


def cosine_similarity_matrix(
    reps: Mapping[str, np.ndarray],
) -> tuple[list[str], np.ndarray]:
    """Mean per-sentence cosine between languages, in the mapping's order.

    Entry (a, b) averages cos(reps[a][i], reps[b][i]) over parallel sentences i, so it measures
    how close translations sit, not how close the language centroids are.
    """
    checked = _check_parallel(reps)
    langs = list(checked)
    units = np.stack([_unit_rows(checked[lang]) for lang in langs])  # (L, n, d)
    matrix = np.einsum("and,bnd->ab", units, units) / units.shape[1]
    return langs, matrix


def mean_similarity_to(reps: Mapping[str, np.ndarray], pivot: str = "en") -> dict[str, float]:
    """Mean parallel-sentence cosine of every other language to the pivot (usually English)."""
    if pivot not in reps:
        raise WhichloraError(
            f"pivot language {pivot!r} is not among the representations {sorted(reps)}."
        )
    langs, matrix = cosine_similarity_matrix(reps)
    p = langs.index(pivot)
    return {lang: float(matrix[p, i]) for i, lang in enumerate(langs) if lang != pivot}


def retrieval_accuracy(src: np.ndarray, tgt: np.ndarray, center: bool = True) -> float:
    """Fraction of source sentences whose nearest target (by cosine) is their own translation.

    Centring each language separately removes the per-language offset that otherwise dominates
    cosine and makes retrieval look worse than the shared content warrants.
    """
    src, tgt = _same_rows(src, tgt)
    if src.shape[1] != tgt.shape[1]:
        raise WhichloraError(
            f"src and tgt must have the same dim, got {src.shape[1]} and {tgt.shape[1]}."
        )
    if center:
        src = src - src.mean(axis=0)
        tgt = tgt - tgt.mean(axis=0)
    sims = _unit_rows(src) @ _unit_rows(tgt).T
    hits = np.argmax(sims, axis=1) == np.arange(src.shape[0])
    return float(hits.mean())


# --------------------------------------------------------------------------- CKA


def linear_cka(X: np.ndarray, Y: np.ndarray) -> float:  # noqa: N803 - matrix names
    """Linear CKA (Kornblith et al. 2019) in feature space, cheap when dim << n^2.

    ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) with column-centred Xc, Yc.
    """
    x, y = _same_rows(X, Y, min_rows=2)
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = np.linalg.norm(y.T @ x, "fro") ** 2
    denom = np.linalg.norm(x.T @ x, "fro") * np.linalg.norm(y.T @ y, "fro")
    if denom <= _EPS:
        raise WhichloraError("CKA is undefined when X or Y is constant across examples.")
    return float(cross / denom)


def unbiased_hsic(K: np.ndarray, L: np.ndarray) -> float:  # noqa: N803 - matrix names
    """Unbiased HSIC (Song et al. 2012) from two n x n Gram matrices, n >= 4.

    Exposed so callers streaming minibatches can accumulate it themselves.
    """
    n = K.shape[0]
    if n < 4:
        raise WhichloraError(f"the unbiased HSIC estimator needs at least 4 examples, got {n}.")
    k = np.array(K, dtype=np.float64, copy=True)
    m = np.array(L, dtype=np.float64, copy=True)
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(m, 0.0)
    k_sum, m_sum = k.sum(), m.sum()
    trace_term = float(np.sum(k * m))  # tr(K L) for symmetric K
    sum_term = k_sum * m_sum / ((n - 1) * (n - 2))
    cross_term = 2.0 / (n - 2) * float(k.sum(axis=0) @ m.sum(axis=1))
    return (trace_term + sum_term - cross_term) / (n * (n - 3))


def _linear_hsic_triplet(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """HSIC(X,Y), HSIC(X,X), HSIC(Y,Y) with linear kernels; the ingredients of CKA."""
    k = x @ x.T
    m = y @ y.T
    return unbiased_hsic(k, m), unbiased_hsic(k, k), unbiased_hsic(m, m)


def _cka_from_hsic(xy: float, xx: float, yy: float) -> float:
    """The unbiased self-HSICs can be <= 0 on tiny or degenerate inputs; say so, not NaN."""
    if xx <= 0 or yy <= 0:
        raise WhichloraError(
            "unbiased CKA is undefined here (self-HSIC <= 0); use more examples or linear_cka."
        )
    return float(xy / np.sqrt(xx * yy))


def unbiased_cka(X: np.ndarray, Y: np.ndarray) -> float:  # noqa: N803 - matrix names
    """Linear CKA with the unbiased HSIC estimator (Nguyen et al. 2021).

    The plain estimator is biased upward when n is small relative to dim; this one is not.
    """
    x, y = _same_rows(X, Y, min_rows=4)
    return _cka_from_hsic(*_linear_hsic_triplet(x, y))


def minibatch_cka(
    X: np.ndarray,  # noqa: N803 - matrix names
    Y: np.ndarray,  # noqa: N803 - matrix names
    batch_size: int,
    seed: int = 0,
) -> float:
    """Unbiased CKA with HSIC averaged over shuffled minibatches (Nguyen et al. 2021).

    Bounds memory at about batch_size^2 per Gram matrix. Examples are split into near-equal
    batches (at most ``batch_size`` unless that would leave a batch under 4) so no tiny remainder
    batch adds noise; a single batch equals unbiased_cka.
    """
    x, y = _same_rows(X, Y, min_rows=4)
    if batch_size < 4:
        raise WhichloraError(f"batch_size must be at least 4 for unbiased HSIC, got {batch_size}.")
    n = x.shape[0]
    n_batches = -(-n // batch_size)
    if n // n_batches < 4:  # only possible when the last split would be tiny
        n_batches = max(1, n // 4)
    order = np.random.default_rng(seed).permutation(n)
    totals = np.zeros(3)
    for idx in np.array_split(order, n_batches):
        totals += _linear_hsic_triplet(x[idx], y[idx])
    return _cka_from_hsic(*(totals / n_batches))


# --------------------------------------------------------------------------- probe


def probe_accuracy(
    X: np.ndarray,  # noqa: N803 - matrix names
    labels: Sequence[str] | np.ndarray,
    folds: int = 5,
    seed: int = 0,
) -> float:
    """Cross-validated accuracy of a linear language-ID probe; high means language is encoded.

    Folds shrink to the smallest class size (at least 2) so small languages still get tested.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _as_matrix(X, "X")
    y = np.asarray(labels)
    if y.shape != (x.shape[0],):
        raise WhichloraError(f"labels need one entry per row of X ({x.shape[0]}), got {y.shape}.")
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise WhichloraError("the language probe needs at least 2 languages; got only one.")
    if counts.min() < 2:
        small = [str(c) for c, k in zip(classes, counts, strict=True) if k < 2]
        raise WhichloraError(f"the probe needs at least 2 examples per language; {small} have 1.")
    if folds < 2:
        raise WhichloraError(f"folds must be at least 2, got {folds}.")
    n_splits = int(min(folds, counts.min()))
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(model, x, y, cv=cv, scoring="accuracy")
    return float(np.mean(scores))


def control_labels(n_languages: int, n_per_language: int, seed: int = 0) -> np.ndarray:
    """Control task for the language-ID probe (Hewitt & Liang 2019): one random label per
    parallel sentence, shared by all its translations, drawn from as many classes as there are
    languages and balanced over them. Rows are grouped by language, sentence i at offset i.

    The same probe fits these labels only by recognising a sentence across its translations
    (what it learnt from the other languages' copies), never by telling languages apart, so
    selectivity = language-ID accuracy - control accuracy is high where a layer keeps languages
    apart and carries little shared content, and falls where it represents translations alike.
    """
    k = max(min(n_languages, n_per_language), 1)
    per_sentence = np.random.default_rng(seed).permutation(np.arange(n_per_language) % k)
    return np.tile(per_sentence, n_languages).astype(str)

