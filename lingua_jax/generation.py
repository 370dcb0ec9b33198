"""Greedy decoding with a KV cache, prefill and every step in one jit-compiled program.

Shapes: B prompts, P padded prompt length (left padding), N new tokens, S = P + N cache slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lingua_jax.data import make_batches, tokenize_each
from lingua_jax.data.batching import padding_id
from lingua_jax.lm import LM
from lingua_jax.sharding import to_host


def init_cache(lm: LM, batch: int, slots: int) -> tuple[jax.Array, jax.Array]:
    """Zeroed keys and values, each [M, B, S, KV, hd] in the model's dtype."""
    s = lm.spec
    kv_heads = getattr(s, "num_kv_heads", s.num_heads)
    shape = (s.num_layers, batch, slots, kv_heads, s.head_dim)
    return jnp.zeros(shape, lm.dtype), jnp.zeros(shape, lm.dtype)


@partial(jax.jit, static_argnames=("module", "max_new_tokens"))
def _greedy(module, params, input_ids, attention_mask, neuron_mask, eos_id, pad_id, cache, max_new_tokens):
    batch, prompt_len = input_ids.shape
    key_mask = jnp.concatenate([attention_mask, jnp.zeros((batch, max_new_tokens), attention_mask.dtype)], 1)

    def next_token(ids, key_mask, index, cache):
        hidden, cache = module.apply({"params": params}, ids, key_mask, neuron_mask, output="hidden",
                                     cache=cache, cache_index=index)
        logits = module.apply({"params": params}, hidden[:, -1], method="logits")
        finite = jnp.all(jnp.isfinite(logits), axis=-1)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), finite, cache

    token, finite, cache = next_token(input_ids, key_mask, jnp.int32(0), cache)
    done = token == eos_id
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)

    def step(i, carry):
        out, token, done, finite, key_mask, cache = carry
        slot = prompt_len + i - 1  # where the previous token goes
        key_mask = key_mask.at[:, slot].set(1)
        token, step_finite, cache = next_token(token[:, None], key_mask, slot, cache)
        finite = finite & (step_finite | done)
        token = jnp.where(done, pad_id, token)  # finished sequences emit padding, as HF generate
        return out.at[:, i].set(token), token, done | (token == eos_id), finite, key_mask, cache

    out, _, _, finite, *_ = jax.lax.fori_loop(1, max_new_tokens, step, (out, token, done, finite, key_mask, cache))
    return out, finite


def greedy(lm: LM, input_ids, attention_mask, max_new_tokens: int, neuron_mask=None,
           eos_token_id: int | None = None, pad_token_id: int = 0) -> np.ndarray:
    """Greedy continuation of left-padded prompts input_ids [B, P] (attention_mask [B, P]).

    Returns int32 [B, max_new_tokens]: the new tokens; after a sequence emits `eos_token_id` the rest
    of its row is `pad_token_id`. `neuron_mask` [M, F] or [B, M, F] zeroes neurons in every step.
    Non-finite logits of a row that is still generating are a FloatingPointError naming the row.
    """
    out, finite = _greedy_rows(lm, input_ids, attention_mask, max_new_tokens, neuron_mask, eos_token_id,
                               pad_token_id)
    bad = np.flatnonzero(~finite)
    if bad.size:
        raise FloatingPointError(f"generation: row {bad[0]} of the batch ({bad.size} of {len(out)} rows) met "
                                 "non-finite logits: NaN or Inf in the model's weights?")
    return out


def _greedy_rows(lm: LM, input_ids, attention_mask, max_new_tokens: int, neuron_mask, eos_token_id: int | None,
                 pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(new tokens int32 [B, max_new_tokens], bool [B]: the row's logits stayed finite) on the host."""
    if np.any(np.asarray(attention_mask)[:, -1] == 0):
        raise ValueError("prompts must be left-padded: the last position of every row must be a real token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    input_ids, attention_mask, neuron_mask = lm.check_inputs(input_ids, attention_mask, neuron_mask)
    cache = init_cache(lm, input_ids.shape[0], input_ids.shape[1] + max_new_tokens)
    eos = -1 if eos_token_id is None else eos_token_id
    out, finite = _greedy(lm.module, lm.params, input_ids, attention_mask, neuron_mask, jnp.int32(eos),
                          jnp.int32(pad_token_id), cache, max_new_tokens=max_new_tokens)
    return to_host(out), to_host(finite)


def generate(lm: LM, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, neuron_mask=None,
             add_special_tokens: bool = True) -> list[str]:
    """Greedy continuations of `prompts` (the new text only), decoded without special tokens.

    Prompts are tokenized as `tokenizer(prompt)` does by default and left-padded to one bucket length
    (a power of two), so a few prompt lengths share one compile; the batch is completed to a multiple
    of the data axis with filler rows whose output is dropped. Decoding stops at the tokenizer's EOS.
    `neuron_mask` is [M, F], or [len(prompts), M, F]: one mask per prompt. Non-finite logits are a
    FloatingPointError naming the first prompt that met them.
    """
    if not prompts:
        raise ValueError("no prompts to generate from")
    batches = make_batches(tokenize_each(tokenizer, prompts, add_special_tokens),
                           batch_size=lm.rows_per_batch(len(prompts)), pad_id=padding_id(tokenizer),
                           padding_side="left")
    (batch,) = batches.batches
    attention_mask = batch.attention_mask.copy()
    attention_mask[~batch.valid, -1] = 1  # a filler row reads one padding token; its output is dropped
    if neuron_mask is not None and np.ndim(neuron_mask) == 3:
        if len(neuron_mask) != len(prompts):
            raise ValueError(f"{len(neuron_mask)} neuron masks for {len(prompts)} prompts")
        neuron_mask = np.asarray(neuron_mask)[np.maximum(batch.index, 0)]  # in the batch's row order
    new, finite = _greedy_rows(lm, batch.input_ids, attention_mask, max_new_tokens, neuron_mask,
                               tokenizer.eos_token_id, padding_id(tokenizer))
    bad = [int(i) for i in batch.index[~finite & batch.valid]]
    if bad:
        raise FloatingPointError(f"generation from prompt {min(bad)} ({prompts[min(bad)][:60]!r}; {len(bad)} "
                                 "prompts in all) met non-finite logits: NaN or Inf in the model's weights?")
    return tokenizer.batch_decode(batches.scatter([new]), skip_special_tokens=True)
