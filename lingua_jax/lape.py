"""LAPE (Tang et al., ACL 2024): activation probabilities of every neuron in every language, and the
comparison of LAPE's language-specific neurons with the key linguistic regions of METHOD.md.

Shapes: L languages (in `corpus.languages` order), M layers, F neurons per layer. The selection itself
is `lingua_jax.metrics.lape_regions`; `lape_entropy` is re-exported from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.typing import ArrayLike

from lingua_jax import sharding
from lingua_jax.data import Batch, ParallelCorpus, batch_texts
from lingua_jax.lm import LM
from lingua_jax.metrics import counts_per_layer, lape_entropy
from lingua_jax.progress import progress

__all__ = ["activation_probabilities", "compare_layers", "compare_regions", "lape_entropy"]


def activation_probabilities(lm: LM, tokenizer: Any, corpus: ParallelCorpus, *, batch_size: int = 16,
                             add_special_tokens: bool = False, **batching: Any) -> np.ndarray:
    """float32 [L, M, F]: per language, the share of its tokens where each neuron's activation function
    output is > 0 (BLOOM: GELU output; LLaMA: SiLU(gate)).

    Counts come from `lm.active_counts` (reduced inside the layer: no [B, M, T, F] activations), are
    summed per language on the device, and accumulated on the host in float64; the denominator is the
    language's number of real tokens. Each sentence is tokenized alone, as in `extract.extract`
    (`batching` goes to `data.batch_texts`). The public code (activation.py) counts over one long token
    stream per language (up to ~100M tokens) cut into max-length windows; the statistic is the same.
    """
    batches = batch_texts(tokenizer, corpus.texts, lm.rows_per_batch(batch_size),
                          add_special_tokens=add_special_tokens, **batching)
    logging.info("counting active neurons of %d sentences in %d batches of %d shapes %s", batches.num_samples,
                 len(batches), len(batches.shapes), batches.shapes)
    num, lang = len(corpus.languages), corpus.lang
    counts = np.zeros((num, lm.num_layers, lm.num_neurons), np.float64)
    tokens = np.zeros(num, np.float64)
    for batch in progress(batches, len(batches), "active counts"):
        members = _members(batch, lang, num)
        per_language = _per_language(lm.active_counts(batch.input_ids, batch.attention_mask), lm.place(members))
        counts += sharding.to_host(per_language)
        tokens += members.T @ batch.attention_mask.sum(axis=1)
    return (counts / tokens[:, None, None]).astype(np.float32)


def _members(batch: Batch, lang: np.ndarray, num: int) -> np.ndarray:
    """float32 [B, L] one-hot language of each row; filler rows all zero."""
    members = np.zeros((len(batch.index), num), np.float32)
    rows = np.flatnonzero(batch.valid)
    members[rows, lang[batch.index[rows]]] = 1.0
    return members


@jax.jit
def _per_language(counts: jax.Array, members: jax.Array) -> jax.Array:
    """counts [B, M, F], members [B, L] -> [L, M, F] sums; HIGHEST keeps integer counts exact (no bf16/TF32)."""
    return jnp.einsum("bmf,bl->lmf", counts, members, precision=jax.lax.Precision.HIGHEST)


def _check_pair(zscore: ArrayLike, lape: ArrayLike, languages: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Both region sets as numpy bool [L, M, F], or ValueError."""
    zscore, lape = np.asarray(zscore), np.asarray(lape)
    for name, regions in (("zscore_regions", zscore), ("lape_regions", lape)):
        if regions.dtype != bool or regions.ndim != 3:
            raise ValueError(f"{name} must be bool [L, M, F]; got {regions.dtype}{regions.shape}")
    if zscore.shape != lape.shape:
        raise ValueError(f"zscore_regions {zscore.shape} and lape_regions {lape.shape} must have the same shape")
    if len(languages) != zscore.shape[0]:
        raise ValueError(f"{len(languages)} languages {list(languages)} for {zscore.shape[0]} region rows")
    return zscore, lape


def compare_regions(zscore_regions: ArrayLike, lape_regions: ArrayLike, languages: Sequence[str]
                    ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Two bool [L, M, F] region sets -> (rows, intersection bool [L, M, F]).

    One row per language: {"language", "zscore", "lape", "both", "jaccard"}: the sizes of each
    method's region, of their intersection, and |both| / |union| (None, "n/a", when both are empty).
    """
    zscore, lape = _check_pair(zscore_regions, lape_regions, languages)
    both = zscore & lape
    rows = []
    for l, language in enumerate(languages):
        sizes = int(zscore[l].sum()), int(lape[l].sum()), int(both[l].sum())
        union = sizes[0] + sizes[1] - sizes[2]
        rows.append({"language": language, "zscore": sizes[0], "lape": sizes[1], "both": sizes[2],
                     "jaccard": sizes[2] / union if union else None})
    return rows, both


def compare_layers(zscore_regions: ArrayLike, lape_regions: ArrayLike, languages: Sequence[str]
                   ) -> list[dict[str, Any]]:
    """Per-layer counts side by side: one row per (language, layer m = 1..M) with {"language", "layer",
    "zscore", "lape", "both"} neuron counts."""
    zscore, lape = _check_pair(zscore_regions, lape_regions, languages)
    counts = [np.asarray(counts_per_layer(r)) for r in (zscore, lape, zscore & lape)]
    return [{"language": language, "layer": m + 1, "zscore": int(counts[0][l, m]), "lape": int(counts[1][l, m]),
             "both": int(counts[2][l, m])}
            for l, language in enumerate(languages) for m in range(zscore.shape[1])]
