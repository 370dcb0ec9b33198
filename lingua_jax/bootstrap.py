"""Bootstrap intervals over sentence ids for LRDS, SADS (whole model and per layer) and the key regions.

With n = 100 sentences per language, a difference between two checkpoints smaller than these intervals
is noise (METHOD.md). A resample draws n sentence ids with replacement and keeps, in every language, the
translations of the drawn sentences, so the corpus stays parallel; the metrics are then the paper's,
computed on the resampled samples (a sentence drawn twice gives two samples with the same meaning).

Nothing is recomputed from the activations per resample. With w_i the number of times sentence i is
drawn and G_lm = a_l a_mᵀ the [n, n] blocks of the similarity map (once, [L, n, L, n]), the sums of S
over the pairs of a resample are T_lm = wᵀ G_lm w (all pairs) and D_lm = Σ_i w_i² (G_lm)_ii (the pairs of
equal meaning): O(L² n²) per resample. The contribution scores of a resample are
C_l(k) = ((Σ_i w_i a_lik)² − Σ_i w_i a_lik²) / 2 (eq. 10-12 with multiplicities): one weighted sum of
the normalised vectors per language.

Shapes: N = L·n samples, L languages, n sentences per language, M layers, F neurons, K = M·F, B resamples.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from lingua_jax import metrics

LEVEL = 0.95  # the interval's coverage: its ends are the 2.5th and 97.5th percentiles of the resamples
CHUNK_BYTES = 1 << 29  # float32 results of one device call stay under this: resamples per call, at most 256


def chunk(floats_per_resample: int) -> int:
    """Resamples per device call: as many as keep its float32 results under CHUNK_BYTES (1 to 256)."""
    return max(1, min(256, CHUNK_BYTES // (4 * floats_per_resample)))


def draws(n: int, samples: int = 1000, seed: int = 0) -> np.ndarray:
    """int [B, n]: the sentence ids of each resample, drawn uniformly with replacement (PCG64, `seed`)."""
    if n < 2 or samples < 1:
        raise ValueError(f"a bootstrap needs n >= 2 sentences and samples >= 1, got n={n}, samples={samples}")
    return np.random.default_rng(seed).integers(0, n, size=(samples, n))


def multiplicities(drawn: np.ndarray, n: int) -> np.ndarray:
    """float32 [B, n]: how many times each sentence id is drawn in each resample."""
    return np.stack([np.bincount(row, minlength=n) for row in drawn]).astype(np.float32)


def by_language(acts: ArrayLike, lang: ArrayLike, sem: ArrayLike) -> np.ndarray:
    """acts [N, ...] -> [L, n, ...]: sample i of language l at [l, i], in sem order; every language
    must hold the same sentences (a parallel corpus)."""
    lang, sem = np.asarray(lang), np.asarray(sem)
    languages = np.unique(lang)
    ids = [np.sort(sem[lang == code]) for code in languages]
    if any(len(i) != len(ids[0]) or np.any(i != ids[0]) for i in ids) or len(np.unique(ids[0])) != len(ids[0]):
        raise ValueError("a bootstrap over sentences needs every language to hold each sentence once")
    order = np.lexsort((sem, lang))
    return np.asarray(acts)[order].reshape(len(languages), len(ids[0]), *np.shape(acts)[1:])


@dataclasses.dataclass(frozen=True)
class Interval:
    """A statistic on the data (`value`) and the ends of its bootstrap interval."""

    value: float
    low: float
    high: float

    @classmethod
    def of(cls, value: float, resampled: np.ndarray, level: float = LEVEL) -> Interval:
        low, high = np.percentile(resampled, [50 * (1 - level), 50 * (1 + level)])
        return cls(float(value), float(low), float(high))


@jax.jit
def _divergences(gram: jax.Array, w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """gram [..., L, n, L, n], w [b, n] -> (LRDS, SADS), each [b, ...]."""
    num = gram.shape[-2]
    half = jnp.einsum("...limj,bj->b...lim", gram, w, precision=metrics.HIGHEST)  # one contraction at a time
    all_pairs = jnp.einsum("bi,b...lim->b...lm", w, half, precision=metrics.HIGHEST)
    diagonal = jnp.diagonal(gram, axis1=-3, axis2=-1)  # [..., L, L, n]: (G_lm)_ii
    same_sentence = jnp.einsum("bi,...lmi->b...lm", w * w, diagonal)
    squares = jnp.sum(w * w, axis=1).reshape((-1,) + (1,) * (gram.ndim - 4))
    pairs = jnp.sum(w, axis=1).reshape(squares.shape) ** 2 - squares  # ordered pairs of different meaning
    eye = jnp.eye(num, dtype=bool)
    differing = all_pairs - same_sentence
    same_lang = jnp.sum(jnp.where(eye, differing, 0.0), axis=(-2, -1)) / (num * pairs)
    other_lang = jnp.sum(jnp.where(eye, 0.0, differing), axis=(-2, -1)) / (num * (num - 1) * pairs)
    equal_meaning = jnp.sum(jnp.where(eye, 0.0, same_sentence), axis=(-2, -1)) / (num * (num - 1) * squares)
    return same_lang - other_lang, equal_meaning - other_lang


def _grams(acts: ArrayLike, lang: ArrayLike, sem: ArrayLike) -> tuple[jax.Array, jax.Array]:
    """(whole-vector Gram blocks [L, n, L, n], per-layer blocks [M, L, n, L, n])."""
    whole = jnp.asarray(by_language(metrics.normalize(acts), lang, sem))  # [L, n, K]
    layers = jnp.asarray(by_language(metrics.normalize_layers(acts), lang, sem))  # [L, n, M, F]
    return (jnp.einsum("lik,mjk->limj", whole, whole, precision=metrics.HIGHEST),
            jnp.einsum("lixf,mjxf->xlimj", layers, layers, precision=metrics.HIGHEST))


def divergences(acts: ArrayLike, lang: ArrayLike, sem: ArrayLike, drawn: np.ndarray) -> dict[str, np.ndarray]:
    """LRDS and SADS of every resample `drawn` [B, n]: {"lrds", "sads": [B], "lrds_layers",
    "sads_layers": [B, M]} (each layer normalised on its own, as `metrics.layerwise`)."""
    whole, layers = _grams(acts, lang, sem)
    parts, step = [], chunk(layers[..., 0].size)
    for start in range(0, len(drawn), step):
        w = jnp.asarray(multiplicities(drawn[start:start + step], whole.shape[1]))
        parts.append((*_divergences(whole, w), *_divergences(layers, w)))
    names = ("lrds", "sads", "lrds_layers", "sads_layers")
    out = {name: np.concatenate([np.asarray(p[i], np.float64) for p in parts]) for i, name in enumerate(names)}
    if not all(np.all(np.isfinite(v)) for v in out.values()):
        raise FloatingPointError("a resample drew a single sentence (no pairs of different meaning): n is too small")
    return out


@functools.partial(jax.jit, static_argnames=("threshold", "top_count"))
def _chunk_regions(units: jax.Array, unit_squares: jax.Array, w: jax.Array, full: jax.Array, threshold: float,
                   top_count: int) -> tuple[jax.Array, jax.Array]:
    """units and unit_squares (its elementwise square) [L, n, K], w [b, n], full bool [L, K] -> (how many
    of the b resamples' regions hold each neuron [L, K], each resample's Jaccard index with `full`
    [b, L]). The regions are those of `metrics.key_regions_from_scores` (top `top_count` z per language
    when it is > 0, else z > threshold)."""
    sums = jnp.einsum("bi,lik->blk", w, units, precision=metrics.HIGHEST)
    squares = jnp.einsum("bi,lik->blk", w, unit_squares, precision=metrics.HIGHEST)
    z = jax.vmap(metrics.zscores)((sums * sums - squares) / 2)
    regions = jax.vmap(lambda z: metrics.top_per_language(z, top_count))(z) if top_count else z > threshold
    both = jnp.sum(regions & full, axis=-1)
    union = jnp.sum(regions | full, axis=-1)
    return jnp.sum(regions, axis=0, dtype=jnp.int32), jnp.where(union > 0, both / jnp.maximum(union, 1), 1.0)


def region_stability(acts: ArrayLike, lang: ArrayLike, sem: ArrayLike, drawn: np.ndarray, threshold: float,
                     offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(frequency float32 [L, M, F]: the share of resamples whose key region holds each neuron,
    stability float64 [B, L]: each resample's Jaccard index with the full-data region, 1 where both are
    empty). Regions as `metrics.key_regions` (with `offset`); counted on the device, `chunk`
    resamples per call."""
    _, m, f = np.shape(acts)
    full = jnp.asarray(metrics.key_regions(acts, lang, threshold, offset)).reshape(-1, m * f)  # checks threshold
    units = jnp.asarray(by_language(metrics.normalize(acts) + offset, lang, sem))
    unit_squares = units * units
    top_count = round(threshold * m * f) if threshold < 1 else 0
    counts = jnp.zeros(full.shape, jnp.int32)
    jaccards = []
    step = chunk(full.size)
    for start in range(0, len(drawn), step):
        w = jnp.asarray(multiplicities(drawn[start:start + step], units.shape[1]))
        selected, jaccard = _chunk_regions(units, unit_squares, w, full, float(threshold), top_count)
        counts += selected
        jaccards.append(np.asarray(jaccard, np.float64))
    return (np.asarray(counts) / len(drawn)).astype(np.float32).reshape(-1, m, f), np.concatenate(jaccards)
