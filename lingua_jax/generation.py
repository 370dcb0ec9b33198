"""Greedy decoding with a KV cache, prefill and every step in one jit-compiled program; its inputs are
checked, rounded up to the data axis and placed by the forward service (`LM.prepare`).

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
from lingua_jax.lm import LM, Inputs
from lingua_jax.models.common import Intervention, Layout, as_intervention
from lingua_jax.progress import progress
from lingua_jax.sharding import to_host


def init_cache(spec: Any, dtype: Any, batch: int, slots: int) -> tuple[jax.Array, jax.Array]:
    """The zeroed KV cache (`Layout.empty_cache`) of `slots` slots for a model of `spec`."""
    kv_heads = getattr(spec, "num_kv_heads", spec.num_heads)
    return Layout.empty_cache(spec.num_layers, batch, slots, kv_heads, spec.head_dim, dtype)


def first_argmax(logits: jax.Array) -> jax.Array:
    """int32 [B]: the first index of each row's maximum of logits [B, V] (jnp.argmax's token), as a max
    and a min over the vocabulary: two reductions that XLA's CPU backend vectorises, 3x faster than
    argmax's reduction of (value, index) pairs at [64, 8000]. A row with a NaN gives V - 1."""
    vocab = logits.shape[-1]
    best = jnp.max(logits, axis=-1, keepdims=True)
    return jnp.min(jnp.where(logits == best, jnp.arange(vocab, dtype=jnp.int32), vocab - 1), axis=-1)


@partial(jax.jit, static_argnames=("module", "max_new_tokens"))
def _greedy(module, params, inputs: Inputs, intervention, eos_id, pad_id, max_new_tokens):
    """(new tokens int32 [B, N], bool [B]: the row's logits stayed finite) for placed `inputs`."""
    input_ids, attention_mask = inputs.input_ids, inputs.attention_mask
    batch, prompt_len = input_ids.shape
    key_mask = jnp.concatenate([attention_mask, jnp.zeros((batch, max_new_tokens), attention_mask.dtype)], 1)

    def next_token(ids, key_mask, index, cache):
        hidden, cache = module.apply({"params": params}, ids, key_mask, intervention, output="hidden",
                                     cache=cache, cache_index=index)
        logits = module.apply({"params": params}, hidden[:, -1], method="logits")
        finite = jnp.all(jnp.isfinite(logits), axis=-1)
        return first_argmax(logits), finite, cache

    cache = init_cache(module.spec, module.dtype, batch, prompt_len + max_new_tokens)
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
           eos_token_id: int | None = None, pad_token_id: int = 0, intervention: Intervention | None = None
           ) -> np.ndarray:
    """Greedy continuation of left-padded prompts input_ids [B, P] (attention_mask [B, P]).

    Returns int32 [B, max_new_tokens]: the new tokens; after a sequence emits `eos_token_id` the rest
    of its row is `pad_token_id`. `intervention` (or `neuron_mask`, its zeroing shorthand) over [M, F]
    or [B, M, F] edits the neurons in the prompt and in every step. Non-finite logits of a row that is
    still generating are a FloatingPointError naming the row.
    """
    out, finite = _greedy_rows(lm, input_ids, attention_mask, max_new_tokens, neuron_mask, intervention,
                               eos_token_id, pad_token_id)
    bad = np.flatnonzero(~finite)
    if bad.size:
        raise FloatingPointError(f"generation: row {bad[0]} of the batch ({bad.size} of {len(out)} rows) met "
                                 "non-finite logits: NaN or Inf in the model's weights?")
    return out


def _greedy_rows(lm: LM, input_ids, attention_mask, max_new_tokens: int, neuron_mask: Any,
                 intervention: Intervention | None, eos_token_id: int | None, pad_token_id: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(new tokens int32 [B, max_new_tokens], bool [B]: the row's logits stayed finite) on the host."""
    if np.any(np.asarray(attention_mask)[:, -1] == 0):
        raise ValueError("prompts must be left-padded: the last position of every row must be a real token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    inputs, edit, rows = lm.prepare(Inputs(input_ids, attention_mask), neuron_mask, intervention)
    eos = -1 if eos_token_id is None else eos_token_id
    out, finite = _greedy(lm.module, lm.params, inputs, edit, jnp.int32(eos), jnp.int32(pad_token_id),
                          max_new_tokens=max_new_tokens)
    return to_host(out)[:rows], to_host(finite)[:rows]


def generate(lm: LM, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, neuron_mask=None,
             add_special_tokens: bool = True, intervention: Intervention | None = None,
             batch_size: int | None = None) -> list[str]:
    """Greedy continuations of `prompts` (the new text only), decoded without special tokens.

    Prompts are tokenized as `tokenizer(prompt)` does by default, sorted by length into batches of
    `batch_size` (default: all at once, rounded up to the data axis) and left-padded to bucket lengths
    (powers of two), so a few shapes share compiles; filler rows complete the last batch and their
    output is dropped. Decoding stops at the tokenizer's EOS. `intervention` (or `neuron_mask`, its
    zeroing shorthand) is over [M, F], or [len(prompts), M, F]: one per prompt, kept with its prompt
    whatever batch it lands in. Non-finite logits are a FloatingPointError naming the first prompt that
    met them.
    """
    if not prompts:
        raise ValueError("no prompts to generate from")
    edit = as_intervention(neuron_mask, intervention)
    per_prompt = edit is not None and edit.mask.ndim == 3
    if per_prompt and len(edit.mask) != len(prompts):
        raise ValueError(f"{len(edit.mask)} interventions for {len(prompts)} prompts")
    batches = make_batches(tokenize_each(tokenizer, prompts, add_special_tokens),
                           batch_size=lm.rows_per_batch(batch_size or len(prompts)), pad_id=padding_id(tokenizer),
                           padding_side="left")
    outputs = []
    for batch in progress(batches.batches, len(batches.batches), f"generation ({len(prompts)} prompts)"):
        attention_mask = batch.attention_mask.copy()
        attention_mask[~batch.valid, -1] = 1  # a filler row reads one padding token; its output is dropped
        rows = jax.tree.map(lambda a: a[np.maximum(batch.index, 0)], edit) if per_prompt else edit
        new, finite = _greedy_rows(lm, batch.input_ids, attention_mask, max_new_tokens, None, rows,
                                   tokenizer.eos_token_id, padding_id(tokenizer))
        bad = [int(i) for i in batch.index[~finite & batch.valid]]
        if bad:
            raise FloatingPointError(f"generation from prompt {min(bad)} ({prompts[min(bad)][:60]!r}; {len(bad)} "
                                     "prompts of its batch) met non-finite logits: NaN or Inf in the model's weights?")
        outputs.append(new)
    return tokenizer.batch_decode(batches.scatter(outputs), skip_special_tokens=True)
