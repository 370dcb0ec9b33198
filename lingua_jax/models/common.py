"""What BLOOM and LLaMA share: attention, the neuron hook, the scanned layer stack.

Shapes: B batch, T query length, S key length, H query heads, KV key/value heads, hd head size,
D hidden size, M layers, F neurons per layer.
"""

from __future__ import annotations

from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

Capture = Literal["none", "pooled", "full"]
Output = Literal["logits", "hidden", "none"]
CAPTURE_MODES = ("none", "pooled", "full")
OUTPUT_MODES = ("logits", "hidden", "none")
NEURONS = "neurons"  # name of the sown intermediate


def causal_mask(attention_mask: jax.Array) -> jax.Array:
    """bool [B, 1, T, T]: query t may see key s when s <= t and s is a real token."""
    t = attention_mask.shape[-1]
    causal = jnp.tril(jnp.ones((t, t), dtype=bool))
    return causal[None, None] & attention_mask[:, None, None, :].astype(bool)


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """int32 [B, T]: 0, 1, 2, ... over real tokens, 0 on padding; left padding is therefore exact."""
    mask = attention_mask.astype(jnp.int32)
    return (jnp.cumsum(mask, axis=-1) - 1) * mask


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, bias: jax.Array | None = None
) -> jax.Array:
    """Softmax attention with grouped key/value heads, scores and softmax in float32.

    q [B, T, H, hd]; k, v [B, S, KV, hd] with H % KV == 0 (query head h uses kv head h // (H / KV), as
    HF's repeat_kv); mask bool [B, 1, T, S]; bias float [B, H, 1, S] or None. Returns [B, T, H, hd].
    """
    b, t, h, hd = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, h // kv, hd)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = scores * (1.0 / jnp.sqrt(jnp.float32(hd)))
    if bias is not None:
        scores = scores + bias.astype(jnp.float32).reshape(b, kv, h // kv, 1, -1)
    scores = jnp.where(mask[:, :, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, hd)


class NeuronHook(nn.Module):
    """Zeroes masked neurons and exposes them with `sow`, as the layer's MLP sees them.

    `capture="pooled"` sows the float32 mean over each sequence's real tokens, [B, F]; `"full"` sows
    [B, T, F]; under the layer scan these stack to [M, B, F] and [M, B, T, F].
    """

    capture: Capture = "none"

    @nn.compact
    def __call__(self, h: jax.Array, layer_mask: jax.Array | None, token_mask: jax.Array) -> jax.Array:
        """h [B, T, F]; layer_mask bool [B or 1, F] (True = zeroed) or None; token_mask [B, T]."""
        if layer_mask is not None:
            h = jnp.where(layer_mask[:, None, :], jnp.zeros((), h.dtype), h)
        if self.capture == "full":
            self.sow("intermediates", NEURONS, h)
        elif self.capture == "pooled":
            weights = token_mask.astype(jnp.float32)
            count = jnp.maximum(weights.sum(axis=1, keepdims=True), 1.0)
            pooled = jnp.einsum("btf,bt->bf", h, weights, preferred_element_type=jnp.float32) / count
            self.sow("intermediates", NEURONS, pooled)
        return h


def layer_masks(neuron_mask: jax.Array | None) -> jax.Array | None:
    """[M, F] or [B, M, F] neuron mask -> bool [M, B or 1, F], the layer axis first for the scan."""
    if neuron_mask is None:
        return None
    mask = neuron_mask.astype(bool)
    return mask[:, None, :] if mask.ndim == 2 else jnp.swapaxes(mask, 0, 1)


def layer_stack(block: type[nn.Module], num_layers: int, num_broadcast: int) -> type[nn.Module]:
    """`block` scanned over layers: params and sown intermediates stack on a leading [M] axis.

    The block's call is `(hidden, layer_mask, *broadcast) -> (hidden, None)`, where `layer_mask` is the
    layer's slice of `layer_masks(...)` (or None) and the `num_broadcast` other arguments are shared
    by every layer.
    """
    return nn.scan(
        block,
        variable_axes={"params": 0, "intermediates": 0},
        split_rngs={"params": True},
        in_axes=(0,) + (nn.broadcast,) * num_broadcast,
        length=num_layers,
    )


def collect_neurons(intermediates: dict[str, Any], capture: Capture) -> jax.Array | None:
    """The stacked sown neurons [M, B, ...] -> [B, M, ...] (None when nothing was captured)."""
    if capture == "none":
        return None
    found = [v for path, v in jax.tree_util.tree_leaves_with_path(intermediates)
             if any(getattr(p, "key", None) == NEURONS for p in path)]
    if len(found) != 1:
        raise RuntimeError(f"expected one sown '{NEURONS}' entry, found {len(found)}")
    return jnp.swapaxes(found[0], 0, 1)


class RMSNorm(nn.Module):
    """LLaMA's RMSNorm with HF semantics: normalise in float32, cast back, then scale."""

    eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = self.param("weight", nn.initializers.ones, (x.shape[-1],), self.dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return weight * normed.astype(x.dtype)


class CausalLM(nn.Module):
    """The call contract shared by BloomForCausalLM and LlamaForCausalLM.

    Subclasses set up their backbone (returned by `backbone()`, with `__call__(input_ids,
    attention_mask, neuron_mask, final_norm)` and `attend(hidden)`) and, when the config unties the
    head, `lm_head`. `__call__(input_ids [B, T], attention_mask [B, T], neuron_mask [M, F] | [B, M, F]
    | None, output)` returns logits [B, T, V] ("logits"), the final normed hidden states [B, T, D]
    ("hidden") or None ("none"); with `capture` "pooled" or "full" the neurons are sown in
    "intermediates" (see NeuronHook).
    """

    def backbone(self) -> nn.Module:
        raise NotImplementedError

    def __call__(self, input_ids, attention_mask, neuron_mask=None, output: Output = "logits"):
        hidden = self.backbone()(input_ids, attention_mask, neuron_mask, final_norm=output != "none")
        if output == "logits":
            return self.logits(hidden)
        return hidden if output == "hidden" else None

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final normed hidden states [..., D] -> logits [..., V]."""
        return self.backbone().attend(hidden) if self.spec.tie_word_embeddings else self.lm_head(hidden)
