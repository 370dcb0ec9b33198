"""LAPE (Tang et al., ACL 2024): activation probabilities of every neuron in every language, counted
on the model's tokens (`lingua_jax.methods` compares LAPE's neurons with the other definitions).

Shapes: L languages (in `corpus.languages` order), M layers, F neurons per layer. The selection itself
is `lingua_jax.metrics.lape_regions`; `lape_entropy` is re-exported from there.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lingua_jax import sharding
from lingua_jax.data import Batch, ParallelCorpus, batch_texts
from lingua_jax.lm import LM
from lingua_jax.metrics import lape_entropy
from lingua_jax.progress import progress

__all__ = ["activation_probabilities", "lape_entropy"]


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
