"""Similarity, LRDS/SADS, contribution scores, z-scores and key linguistic regions (METHOD.md, eq. 5-13).

Pure functions on arrays, usable without a model. Inputs: acts [N, M, F] (token-mean neurons of N
samples, M layers, F neurons per layer), lang [N] and sem [N] labels (ints, or anything numpy can sort).
Languages are the distinct values of `lang`, numbered 0..L-1 in sorted order of value: row l of every
[L, ...] result belongs to the l-th smallest language label. `sem` labels are only compared for
equality. Every language must have the same number n of samples (N = L·n).

Labels and shapes are checked with numpy outside jit; the math runs under jit in float32, matmuls at
HIGHEST precision (no bf16/TF32 passes), with jnp ops that also work with the neuron axis sharded.
One exception: `language_sums` (behind the contribution scores) reads host (numpy) activations in
place with float32 BLAS, since copying them to the device would cost more than the arithmetic.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

HIGHEST = jax.lax.Precision.HIGHEST


# --- validation (numpy, outside jit) -------------------------------------------------------------

def _check_acts(acts: ArrayLike) -> tuple[int, int, int]:
    """(N, M, F) of acts, or ValueError when acts is not 3-D."""
    shape = np.shape(acts)
    if len(shape) != 3:
        raise ValueError(f"acts must be 3-D [N, M, F] (samples, layers, neurons); got shape {shape}")
    return shape


def _check_sim(sim: ArrayLike) -> int:
    """N of a square similarity map S [N, N], or ValueError."""
    shape = np.shape(sim)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"sim must be a square [N, N] matrix; got shape {shape}")
    return shape[0]


def _encode(
    labels: ArrayLike, n: int, name: str, source: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels [N] -> (distinct values sorted, int32 codes [N] indexing them, count of each value)."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"{name} has shape {labels.shape} but {source} has {n} samples; expected ({n},)")
    values, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return values, codes.astype(np.int32), counts


def _languages(lang: ArrayLike, n: int, source: str) -> tuple[np.ndarray, int]:
    """lang [N] -> (language index 0..L-1 [N], L); at least two languages, all with the same count."""
    values, codes, counts = _encode(lang, n, "lang", source)
    if len(values) < 2:
        raise ValueError(f"need at least two languages; lang has {len(values)}: {values.tolist()}")
    if np.any(counts != counts[0]):
        per_language = dict(zip(values.tolist(), counts.tolist()))
        raise ValueError(f"every language needs the same number of samples; got {per_language}")
    return codes, len(values)


def _one_hot(codes: np.ndarray, num: int) -> np.ndarray:
    """float32 [N, num] membership matrix."""
    return np.eye(num, dtype=np.float32)[codes]


# --- sentence vectors and similarity (eq. 5-7) ---------------------------------------------------

@jax.jit
def _unit(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = x.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(x * x, axis=-1))
    return x / norm[..., None], norm


def _unit_rows(x: ArrayLike) -> jax.Array:
    """x [N, ..., D] divided by its L2 norm over D; ValueError for an all-zero or non-finite vector."""
    unit, norm = _unit(x)
    norm = np.asarray(norm)
    bad = np.argwhere((norm == 0) | ~np.isfinite(norm))
    if bad.size:
        where = ", ".join(f"{axis} {i}" for axis, i in zip(("sample", "layer"), bad[0]))
        raise ValueError(
            f"{where}: activation vector is all zeros (or not finite) and cannot be normalised, "
            f"e.g. an empty sentence ({len(bad)} such vector(s) in all)"
        )
    return unit


def normalize(acts: ArrayLike) -> jax.Array:
    """acts [N, M, F] -> a [N, M·F]: layers concatenated, each sample L2-normalised once (eq. 5-6)."""
    n, _, _ = _check_acts(acts)
    return _unit_rows(jnp.reshape(acts, (n, -1)))


def normalize_layers(acts: ArrayLike) -> jax.Array:
    """acts [N, M, F] -> [N, M, F] with each layer's block h̄_m(s) [F] L2-normalised on its own."""
    _check_acts(acts)
    return _unit_rows(acts)


@jax.jit
def _gram(a: jax.Array) -> jax.Array:
    """[..., N, D] -> [..., N, N] dot products."""
    return jnp.einsum("...id,...jd->...ij", a, a, precision=HIGHEST)


def similarity(acts: ArrayLike) -> jax.Array:
    """acts [N, M, F] -> S [N, N], S_ij = a(s_i)·a(s_j) on the normalised whole vectors (eq. 7)."""
    return _gram(normalize(acts))


# --- LRDS and SADS (eq. 8-9) ---------------------------------------------------------------------

def _lrds_sads(sim: jax.Array, lang: jax.Array, sem: jax.Array) -> tuple[jax.Array, jax.Array]:
    """sim [N, N], label codes [N] -> (LRDS, SADS), from label-equality masks.

    Each mask has a differing label, so i ≠ j holds in all of them. Both scores share the baseline
    mean(S | different language, different semantics).
    """
    same_lang = lang[:, None] == lang[None, :]
    same_sem = sem[:, None] == sem[None, :]

    def mean(mask: jax.Array) -> jax.Array:
        return jnp.sum(jnp.where(mask, sim, 0.0)) / jnp.sum(mask)

    baseline = mean(~same_lang & ~same_sem)
    return mean(same_lang & ~same_sem) - baseline, mean(same_sem & ~same_lang) - baseline


_lrds_sads_jit = jax.jit(_lrds_sads)


def _divergences(sim: ArrayLike, lang: ArrayLike, sem: ArrayLike) -> tuple[jax.Array, jax.Array]:
    n = _check_sim(sim)
    lang_codes, _ = _languages(lang, n, "sim")
    _, sem_codes, _ = _encode(sem, n, "sem", "sim")
    return _lrds_sads_jit(jnp.asarray(sim, jnp.float32), lang_codes, sem_codes)


def lrds(sim: ArrayLike, lang: ArrayLike, sem: ArrayLike) -> float:
    """Linguistic region development score of S [N, N] (eq. 8).

    mean(S_ij | same lang, different sem) − mean(S_ij | different lang, different sem). Lower: more
    language-agnostic.
    """
    return float(_divergences(sim, lang, sem)[0])


def sads(sim: ArrayLike, lang: ArrayLike, sem: ArrayLike) -> float:
    """Semantic alignment development score of S [N, N] (eq. 9).

    mean(S_ij | same sem, different lang) − mean(S_ij | different sem, different lang). Higher: more
    semantic alignment. NaN when no two samples of different languages share a sem label.
    """
    return float(_divergences(sim, lang, sem)[1])


@jax.jit
def _layerwise(a: jax.Array, lang: jax.Array, sem: jax.Array) -> tuple[jax.Array, jax.Array]:
    sims = _gram(jnp.swapaxes(a, 0, 1))  # [M, N, N]
    return jax.vmap(_lrds_sads, in_axes=(0, None, None))(sims, lang, sem)


def layerwise(acts: ArrayLike, lang: ArrayLike, sem: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """acts [N, M, F] -> (LRDS [M], SADS [M]), each layer's block normalised on its own (paper Fig. 3).

    Holds the M similarity maps [M, N, N] at once.
    """
    n, _, _ = _check_acts(acts)
    lang_codes, _ = _languages(lang, n, "acts")
    _, sem_codes, _ = _encode(sem, n, "sem", "acts")
    return _layerwise(normalize_layers(acts), lang_codes, sem_codes)


@jax.jit
def _block_map(sim: jax.Array, members: jax.Array) -> jax.Array:
    off_diagonal = 1.0 - jnp.eye(sim.shape[0], dtype=jnp.float32)
    totals = jnp.einsum("il,ij,jk->lk", members, sim * off_diagonal, members, precision=HIGHEST)
    pairs = jnp.einsum("il,ij,jk->lk", members, off_diagonal, members, precision=HIGHEST)
    return totals / pairs


def block_map(sim: ArrayLike, lang: ArrayLike) -> jax.Array:
    """S [N, N] -> [L, L] mean similarity between the samples of language l and of language l'.

    Diagonal blocks exclude i == j; off-diagonal blocks average all n² pairs, translations included.
    """
    codes, num = _languages(lang, _check_sim(sim), "sim")
    return _block_map(jnp.asarray(sim, jnp.float32), _one_hot(codes, num))


# --- contribution scores, z-scores, key regions (eq. 10-13) -------------------------------------

COLUMN_BLOCK = 4096  # `language_sums` reads acts [N, K] this many columns at a time for the sums
NORM_BLOCK = 32768  # and this many for the squared norms (float32 partial sums, added in float64)


@jax.jit
def _block_squared_norms(block: jax.Array) -> jax.Array:
    block = block.astype(jnp.float32)
    return jnp.sum(block * block, axis=1)


@jax.jit
def weighted_sums(block: jax.Array, weights: jax.Array, square_weights: jax.Array) -> tuple[jax.Array, jax.Array]:
    """block [N, c], weights [N, L] -> (weights^T block, square_weights^T block²), each [L, c]."""
    block = block.astype(jnp.float32)
    sums = jnp.einsum("nl,nc->lc", weights, block, precision=HIGHEST)
    squares = jnp.einsum("nl,nc->lc", square_weights, block * block, precision=HIGHEST)
    return sums, squares


def _rows_of(codes: np.ndarray, language: int) -> slice | np.ndarray:
    """The rows of one language: a slice when they are contiguous (no copy), else their indices."""
    rows = np.flatnonzero(codes == language)
    return slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] + 1 == len(rows) else rows


def language_sums(acts: ArrayLike, lang: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """acts [N, M, F] -> (Σ_i a(s_i), Σ_i a(s_i)²) over each language's samples, each float32 [L, M, F],
    with a(s) the sample's normalised whole vector (eq. 6).

    Two passes over acts, a block of columns at a time: the squared norms (accumulated in float64),
    then both sums with 1/‖x‖ and 1/‖x‖² folded into per-sample weights, so the normalised vectors
    are never materialised. Host (numpy) acts are read in place with BLAS matrix-vector products per
    language (copying 1.8 GB to the device would cost more than the arithmetic); device arrays
    (jax.Array, possibly sharded) stay on the device. An all-zero or non-finite vector is a
    ValueError, as in `normalize`.
    """
    n, m, f = _check_acts(acts)
    codes, num = _languages(lang, n, "acts")
    on_device = isinstance(acts, jax.Array)
    x = (acts if on_device else np.asarray(acts, np.float32)).reshape(n, m * f)
    squared = _device_squared_norms(x) if on_device else _host_squared_norms(x)
    bad = np.flatnonzero((squared == 0) | ~np.isfinite(squared))
    if bad.size:
        raise ValueError(f"sample {bad[0]}: activation vector is all zeros (or not finite) and cannot be "
                         f"normalised, e.g. an empty sentence ({bad.size} such vector(s) in all)")
    weights, square_weights = (1.0 / np.sqrt(squared)).astype(np.float32), (1.0 / squared).astype(np.float32)
    if on_device:
        members = _one_hot(codes, num)
        parts = [weighted_sums(x[:, start:start + COLUMN_BLOCK], members * weights[:, None],
                             members * square_weights[:, None]) for start in range(0, m * f, COLUMN_BLOCK)]
        sums, squares = (jnp.concatenate(p, axis=1) for p in zip(*parts))
    else:
        sums, squares = map(jnp.asarray, _host_sums(x, codes, num, weights, square_weights))
    return sums.reshape(num, m, f), squares.reshape(num, m, f)


def _device_squared_norms(x: jax.Array) -> np.ndarray:
    return sum(np.asarray(_block_squared_norms(x[:, start:start + NORM_BLOCK]), np.float64)
               for start in range(0, x.shape[1], NORM_BLOCK))


def _in_threads(work: Callable[[int], None], starts: range) -> None:
    """work(start) for every start, on one thread per CPU core (numpy and BLAS release the GIL)."""
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(work, starts))


def _host_squared_norms(x: np.ndarray) -> np.ndarray:
    """float64 [N]: squared row norms of x [N, K], float32 partial sums of NORM_BLOCK columns."""
    squared = np.zeros(x.shape[0])
    rows = max(1, -(-x.shape[0] // (os.cpu_count() or 1)))

    def work(start: int) -> None:
        block = x[start:start + rows]
        squared[start:start + rows] = sum(
            np.einsum("nc,nc->n", block[:, c:c + NORM_BLOCK], block[:, c:c + NORM_BLOCK]).astype(np.float64)
            for c in range(0, x.shape[1], NORM_BLOCK))

    _in_threads(work, range(0, x.shape[0], rows))
    return squared


def _host_sums(x: np.ndarray, codes: np.ndarray, num: int, weights: np.ndarray, square_weights: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """float32 [L, K] Σ_i w_i x_i and Σ_i w²_i x_i² per language: BLAS matrix-vector products on
    COLUMN_BLOCK columns at a time (so x_i² stays in cache), blocks spread over the cores."""
    sums, squares = np.empty((2, num, x.shape[1]), np.float32)
    groups = [_rows_of(codes, language) for language in range(num)]

    def work(start: int) -> None:
        cols = slice(start, start + COLUMN_BLOCK)
        block = x[:, cols]
        for language, rows in enumerate(groups):
            rows_block = block[rows]
            sums[language, cols] = weights[rows] @ rows_block
            squares[language, cols] = square_weights[rows] @ (rows_block * rows_block)

    _in_threads(work, range(0, x.shape[1], COLUMN_BLOCK))
    return sums, squares


REFERENCE_OFFSET = 1e-5  # what the public code adds to every normalised value before scoring (METHOD.md)


def contribution_scores(acts: ArrayLike, lang: ArrayLike, offset: float = 0.0) -> jax.Array:
    """acts [N, M, F] -> C [L, M, F], C_l(k) = Σ_{i<j} a_k(s_i) a_k(s_j) over language l's samples.

    a is the normalised whole vector (eq. 6), plus `offset` in every entry (the reference code's
    REFERENCE_OFFSET; 0 in the paper's equations); computed in O(N·K) by the closed form from
    `language_sums`, see `contribution_scores_from_sums`.
    """
    sums, squares = language_sums(acts, lang)
    return contribution_scores_from_sums(sums, squares, offset, count=len(np.asarray(lang)) // sums.shape[0])


def contribution_scores_from_sums(sums: ArrayLike, sums_of_squares: ArrayLike, offset: float = 0.0,
                                  count: int | None = None) -> jax.Array:
    """C = ((Σ_i a_k)² − Σ_i a_k²) / 2 from per-language running sums, each [L, M, F] -> [L, M, F].

    sums[l] = Σ_{i in l} a(s_i) and sums_of_squares[l] = Σ_{i in l} a(s_i)², with a(s) the sample's
    normalised whole vector reshaped to [M, F]; both can be accumulated batch by batch. A nonzero
    `offset` scores a(s) + offset instead, from the same sums and the `count` of samples per language:
    Σ(a + ε) = Σa + nε and Σ(a + ε)² = Σa² + 2εΣa + nε².
    """
    if np.shape(sums) != np.shape(sums_of_squares):
        raise ValueError(
            f"sums {np.shape(sums)} and sums_of_squares {np.shape(sums_of_squares)} must have the same shape"
        )
    if offset and not count:
        raise ValueError("an offset needs the count of samples per language")
    return _closed_form(sums, sums_of_squares, jnp.float32(offset), jnp.float32(count or 0))


@jax.jit
def _closed_form(sums: jax.Array, squares: jax.Array, offset: jax.Array, count: jax.Array) -> jax.Array:
    sums, squares = sums.astype(jnp.float32), squares.astype(jnp.float32)
    squares = squares + 2 * offset * sums + count * offset * offset
    sums = sums + count * offset
    return (sums * sums - squares) / 2


@jax.jit
def zscores(scores: ArrayLike) -> jax.Array:
    """C [L, M, F] -> z [L, M, F] = (C − mean over languages) / population std over languages (ddof 0).

    A neuron whose scores are equal in every language (std 0) gets NaN: it has no z-score. Language 0's
    score is subtracted first (z is shift-invariant), so equal scores give a std of exactly 0 in float32.
    """
    scores = jnp.asarray(scores, jnp.float32)
    shifted = scores - scores[:1]
    centred = shifted - _mean_over_languages(shifted)
    std = jnp.sqrt(_mean_over_languages(centred * centred))
    return jnp.where(std > 0, centred / std, jnp.nan)


def _mean_over_languages(x: jax.Array) -> jax.Array:
    """x [L, ...] -> mean over the L languages, as L - 1 elementwise adds: one fused loop, where a
    reduction over the leading axis runs several times slower on XLA:CPU (L is small)."""
    return sum(x[l] for l in range(x.shape[0])) / x.shape[0]


@partial(jax.jit, static_argnums=1)
def top_per_language(score: ArrayLike, count: int) -> jax.Array:
    """score [L, M, F] -> bool [L, M, F]: each language's `count` neurons with the highest score, ties
    to the lower flat index m·F + f; NaN (no score) is never selected, so fewer may be."""
    flat = jnp.reshape(score, (score.shape[0], -1))
    _, top = jax.lax.top_k(jnp.where(jnp.isnan(flat), -jnp.inf, flat), count)
    picked = jnp.zeros(flat.shape, bool).at[jnp.arange(flat.shape[0])[:, None], top].set(True)
    return (picked & ~jnp.isnan(flat)).reshape(score.shape)


def key_regions_from_scores(scores: ArrayLike, threshold: float = 2.0) -> jax.Array:
    """C [L, M, F] -> bool [L, M, F]: neuron k is in language l's key region (eq. 13).

    threshold >= 1: z_l(k) > threshold (the paper's τ = 2). Since z <= √(L−1), a threshold at or above
    √(L−1) is a ValueError, not an empty region.
    0 < threshold < 1 (the reference's percentile mode): per language, the round(threshold·M·F)
    neurons with the highest z. Neurons without a z-score (NaN) are in no region in either mode.
    """
    shape = np.shape(scores)
    if len(shape) != 3:
        raise ValueError(f"scores must be 3-D [L, M, F] (languages, layers, neurons); got shape {shape}")
    num, m, f = shape
    check_threshold(threshold, num, m * f)
    if threshold < 1:
        return top_per_language(zscores(scores), round(threshold * m * f))
    return zscores(scores) > threshold


def check_threshold(threshold: float, num_languages: int, neurons: int) -> None:
    """ValueError when `threshold` cannot select anything for `num_languages` and M*F `neurons`."""
    if num_languages < 2:
        raise ValueError(f"need at least two languages; got {num_languages}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0 (a z-score, or a fraction below 1); got {threshold}")
    if threshold < 1:
        if round(threshold * neurons) == 0:
            raise ValueError(f"top fraction {threshold} of {neurons} neurons per language selects none")
        return
    reach = math.sqrt(num_languages - 1)
    if threshold >= reach:
        raise ValueError(
            f"τ={threshold:g} is unreachable with {num_languages} languages: max z-score is "
            f"√{num_languages - 1} = {round(reach, 3)}; use more languages or a lower threshold"
        )


def key_regions(acts: ArrayLike, lang: ArrayLike, threshold: float = 2.0, offset: float = 0.0) -> jax.Array:
    """acts [N, M, F] -> bool [L, M, F] key linguistic regions; see `key_regions_from_scores` (and
    `contribution_scores` for `offset`). The threshold is checked before any work."""
    n, m, f = _check_acts(acts)
    check_threshold(threshold, _languages(lang, n, "acts")[1], m * f)
    return key_regions_from_scores(contribution_scores(acts, lang, offset), threshold)


# --- region statistics ---------------------------------------------------------------------------

def sklr(regions: ArrayLike) -> int:
    """Size of key linguistic regions: Σ_l |region_l| over bool [L, M, F]."""
    return int(jnp.sum(jnp.asarray(regions), dtype=jnp.int32))


@jax.jit
def counts_per_layer(regions: ArrayLike) -> jax.Array:
    """bool [L, M, F] -> int32 [L, M]: key neurons of each language in each layer (Fig. 5-6)."""
    return jnp.sum(regions, axis=-1, dtype=jnp.int32)


@jax.jit
def overlap(regions: ArrayLike) -> jax.Array:
    """bool [L, M, F] -> int32 [L, L] intersection counts |region_l ∩ region_l'| (diagonal: sizes)."""
    flat = jnp.reshape(regions, (regions.shape[0], -1)).astype(jnp.int32)
    return jnp.einsum("lk,jk->lj", flat, flat, preferred_element_type=jnp.int32)


@jax.jit
def jaccard(regions: ArrayLike) -> jax.Array:
    """bool [L, M, F] -> float32 [L, L] Jaccard index |r_l ∩ r_l'| / |r_l ∪ r_l'| (NaN: both empty)."""
    shared = overlap(regions)
    sizes = jnp.diagonal(shared)
    union = sizes[:, None] + sizes[None, :] - shared
    return jnp.where(union > 0, shared / jnp.maximum(union, 1), jnp.nan).astype(jnp.float32)


# --- LAPE: language activation probability entropy (Tang et al., ACL 2024) ---------------------
#
# A second definition of language-specific neurons, from activation probabilities probs [L, M, F]:
# probs[l, m, f] is the share of language l's tokens where neuron (m, f)'s activation function output
# is > 0 (`lingua_jax.lape.activation_probabilities`). The selection follows the authors' public code
# (RUCAIBox/Language-Specific-Neurons, identify.py), which fixes what the paper's text leaves open; see
# `lape_regions`.

def _check_probs(probs: ArrayLike) -> tuple[int, int, int]:
    """(L, M, F) of activation probabilities, or ValueError: 3-D, L >= 2, every value in [0, 1]."""
    shape = np.shape(probs)
    if len(shape) != 3:
        raise ValueError(f"probs must be 3-D [L, M, F] (languages, layers, neurons); got shape {shape}")
    if shape[0] < 2:
        raise ValueError(f"need at least two languages; probs has {shape[0]}")
    if not bool(_in_unit_interval(probs)):
        raise ValueError("probs must be activation probabilities in [0, 1] (no NaN or inf)")
    return shape


@jax.jit
def _in_unit_interval(probs: jax.Array) -> jax.Array:
    return jnp.all((probs >= 0) & (probs <= 1))  # NaN fails both comparisons


def _rank(size: int, rate: float, name: str) -> int:
    """round(size · rate), the public code's count (Python's round, halves to even); ValueError unless
    0 < rate <= 1 and the count is at least 1."""
    if not 0 < rate <= 1:
        raise ValueError(f"{name} must be in (0, 1]; got {rate}")
    count = round(size * rate)
    if count < 1:
        raise ValueError(f"{name}={rate} of {size} values is round({size * rate:g}) = 0: it selects nothing")
    return count


@jax.jit
def _entropy(probs: jax.Array) -> jax.Array:
    """probs [L, M, F] -> [M, F] entropy of the probabilities normalised over languages (0·log 0 = 0;
    a neuron that never fires has entropy 0, as in the public code)."""
    probs = probs.astype(jnp.float32)
    total = jnp.sum(probs, axis=0)
    normed = jnp.where(total > 0, probs / jnp.where(total > 0, total, 1.0), 0.0)
    logs = jnp.log(jnp.where(normed > 0, normed, 1.0))
    return -jnp.sum(normed * logs, axis=0)


def lape_entropy(probs: ArrayLike) -> jax.Array:
    """probs [L, M, F] -> LAPE [M, F] float32 = −Σ_l p̃_l log p̃_l, p̃ = probs normalised over languages."""
    _check_probs(probs)
    return _entropy(jnp.asarray(probs))


@partial(jax.jit, static_argnums=(1, 2, 3))
def _lape_select(probs: jax.Array, filter_rank: int, top_count: int, bar_rank: int) -> jax.Array:
    """bool [L, M, F]; the ranks are 1-based positions in the ascending order of all L·M·F probs."""
    probs = probs.astype(jnp.float32)
    ordered = jnp.sort(probs.reshape(-1))
    filter_value, bar = ordered[filter_rank - 1], ordered[bar_rank - 1]
    candidates = jnp.any(probs > filter_value, axis=0).reshape(-1)
    entropy = _entropy(probs).reshape(-1)
    _, lowest = jax.lax.top_k(jnp.where(candidates, -entropy, -jnp.inf), top_count)
    kept = jnp.zeros(entropy.shape, bool).at[lowest].set(True) & candidates
    return (probs > bar) & kept.reshape(probs.shape[1:])


def lape_regions(probs: ArrayLike, top_rate: float = 0.01, filter_rate: float = 0.95,
                 bar_ratio: float = 0.95) -> jax.Array:
    """probs [L, M, F] activation probabilities -> bool [L, M, F] LAPE language-specific neurons.

    As the public code (identify.py) does it, with P = all L·M·F values of probs flattened and
    kth(P, k) its k-th smallest value (1-based, torch.kthvalue), counts rounded with Python's round:
    1. entropy LAPE(m, f) = −Σ_l p̃_l log p̃_l, p̃ = probs[:, m, f] / Σ_l probs[l, m, f] (`lape_entropy`);
    2. candidates: neurons with some probs[l, m, f] > kth(P, round(|P| · filter_rate)) (strictly);
    3. kept: the round(M·F · top_rate) candidates with the lowest entropy, over all layers at once
       (ties: the lower flat index m·F + f first);
    4. neuron (m, f) is in language l's region when it is kept and probs[l, m, f] >
       kth(P, round(|P| · bar_ratio)); a kept neuron may belong to several languages, or to none.
    The paper's text speaks of the 95th percentile and the top 1%; the public code's order statistics
    above are what it ran. Its identify.py exists with top_rate 0.01 (commit fdecc8d) and 0.05 (commit
    1ec944c), the rest identical; the default here is the paper's 1%. One departure: where fewer than
    round(M·F · top_rate) neurons are candidates, the public code's top-k fills up with filtered-out
    neurons (entropy +inf, in an unspecified order); here only candidates are kept. That can matter
    only when bar_ratio < filter_rate: otherwise no filtered-out neuron passes the bar anyway.
    """
    num, m, f = _check_probs(probs)
    size = num * m * f
    return _lape_select(jnp.asarray(probs), _rank(size, filter_rate, "filter_rate"),
                        _rank(m * f, top_rate, "top_rate"), _rank(size, bar_ratio, "bar_ratio"))


@partial(jax.jit, static_argnums=(1, 2))
def _lape_ranking(probs: jax.Array, filter_rank: int, bar_rank: int) -> jax.Array:
    probs = probs.astype(jnp.float32)
    ordered = jnp.sort(probs.reshape(-1))
    eligible = jnp.any(probs > ordered[filter_rank - 1], axis=0) & (probs > ordered[bar_rank - 1])
    return jnp.where(eligible, -_entropy(probs), jnp.nan)


def lape_ranking(probs: ArrayLike, filter_rate: float = 0.95, bar_ratio: float = 0.95) -> jax.Array:
    """probs [L, M, F] -> float32 [L, M, F]: −LAPE(m, f) where `lape_regions` could give neuron (m, f) to
    language l (a candidate by filter_rate whose probs[l, m, f] passes the bar_ratio bar), NaN elsewhere.
    LAPE's order of each language's neurons, lowest entropy first, for a selection of any size
    (`top_per_language`) in place of LAPE's top_rate over all languages at once."""
    num, m, f = _check_probs(probs)
    size = num * m * f
    return _lape_ranking(jnp.asarray(probs), _rank(size, filter_rate, "filter_rate"),
                         _rank(size, bar_ratio, "bar_ratio"))
