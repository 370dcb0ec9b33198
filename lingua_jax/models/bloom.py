"""BLOOM in Flax linen with the semantics of transformers' BloomForCausalLM.

Parameter names mirror the HF checkpoint (transformer.word_embeddings, h.<i>.self_attention.
query_key_value, mlp.dense_h_to_4h, ...), so loading is a rename and transpose. Neurons are the outputs
of BLOOM's tanh GELU, F = 4 * hidden_size.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lingua_jax.models import common


@dataclasses.dataclass(frozen=True)
class BloomSpec:
    """The architecture fields of a BloomConfig that the forward depends on."""

    vocab_size: int
    hidden_size: int
    num_heads: int
    num_layers: int
    layer_norm_epsilon: float = 1e-5
    apply_residual_connection_post_layernorm: bool = False
    tie_word_embeddings: bool = True

    @classmethod
    def from_hf(cls, config: Any) -> "BloomSpec":
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            num_heads=config.n_head,
            num_layers=config.n_layer,
            layer_norm_epsilon=config.layer_norm_epsilon,
            apply_residual_connection_post_layernorm=config.apply_residual_connection_post_layernorm,
            tie_word_embeddings=getattr(config, "tie_word_embeddings", True),
        )

    @property
    def num_neurons(self) -> int:
        return 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


def alibi_slopes(num_heads: int) -> np.ndarray:
    """float32 [H]: ALiBi slopes for any head count, as HF's _get_alibi_slopes (also non powers of 2)."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = 2.0 ** (-(2.0 ** -(math.log2(closest) - 3)))
    slopes = [base**p for p in range(1, closest + 1)]
    if closest != num_heads:
        extra_base = 2.0 ** (-(2.0 ** -(math.log2(2 * closest) - 3)))
        remaining = min(closest, num_heads - closest)
        slopes += [extra_base**p for p in range(1, 2 * remaining, 2)]
    return np.asarray(slopes, dtype=np.float32)


def bloom_gelu(x: jax.Array) -> jax.Array:
    """BLOOM's tanh GELU with its exact constants (transformers' bloom_gelu_forward)."""
    return x * 0.5 * (1.0 + jnp.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def layer_norm_of(spec: BloomSpec, dtype: Any, name: str | None = None) -> nn.LayerNorm:
    """BLOOM's LayerNorm over the hidden size, its scale and bias on the logical axis EMBED."""
    init = lambda base: common.logical(base, common.EMBED)
    return nn.LayerNorm(epsilon=spec.layer_norm_epsilon, dtype=dtype, param_dtype=dtype, name=name,
                        scale_init=init(nn.initializers.ones), bias_init=init(nn.initializers.zeros))


class BloomAttention(nn.Module):
    spec: BloomSpec
    dtype: Any
    attention: common.Implementation = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, layout: common.Layout, layer):
        """x [B, T, D] -> ([B, T, D] without the residual, its new keys and values or None)."""
        b, t, _ = x.shape
        s = self.spec
        dense = lambda n, axes, name: common.dense(n, axes, self.dtype, name, bias=True)
        fused = dense(3 * s.hidden_size, (common.EMBED, common.HEADS), "query_key_value")(x)
        fused = fused.reshape(b, t, s.num_heads, 3, s.head_dim)
        k, v, new = layout.update(layer, fused[..., 1, :], fused[..., 2, :])
        slopes = jnp.asarray(alibi_slopes(s.num_heads))
        alibi = slopes[None, :, None, None] * layout.key_positions[:, None, None, :].astype(jnp.float32)
        context = common.dot_product_attention(fused[..., 0, :], k, v, layout.mask, bias=alibi,
                                               causal=layout.cache_index is None, implementation=self.attention)
        return dense(s.hidden_size, (common.HEADS, common.EMBED), "dense")(context.reshape(b, t, s.hidden_size)), new


class BloomMLP(nn.Module):
    spec: BloomSpec
    dtype: Any
    capture: common.Capture

    @nn.compact
    def __call__(self, x, layer_edit, token_mask):
        """x [B, T, D] -> [B, T, D] (no residual); neurons = GELU output [B, T, 4D]."""
        dense = lambda n, axes, name: common.dense(n, axes, self.dtype, name, bias=True)
        h = bloom_gelu(dense(self.spec.num_neurons, (common.EMBED, common.MLP), "dense_h_to_4h")(x))
        h = common.NeuronHook(self.capture, name="neurons")(h, layer_edit, token_mask)
        return dense(self.spec.hidden_size, (common.MLP, common.EMBED), "dense_4h_to_h")(h)


class BloomBlock(nn.Module):
    spec: BloomSpec
    dtype: Any
    capture: common.Capture
    attention: common.Implementation = "auto"

    @nn.compact
    def __call__(self, hidden, layer_inputs, layout: common.Layout):
        layer_edit, layer = layer_inputs
        layer_norm = lambda name: layer_norm_of(self.spec, self.dtype, name)
        post_ln_residual = self.spec.apply_residual_connection_post_layernorm
        normed = layer_norm("input_layernorm")(hidden)
        residual = normed if post_ln_residual else hidden
        attended, new = BloomAttention(self.spec, self.dtype, self.attention, name="self_attention")(
            normed, layout, layer)
        hidden = residual + attended
        normed = layer_norm("post_attention_layernorm")(hidden)
        residual = normed if post_ln_residual else hidden
        hidden = residual + BloomMLP(self.spec, self.dtype, self.capture, name="mlp")(
            normed, layer_edit, layout.token_mask)
        return hidden, new


class BloomTransformer(nn.Module):
    """BloomModel: embeddings, their LayerNorm, the scanned blocks `h`, ln_f."""

    spec: BloomSpec
    dtype: Any
    capture: common.Capture
    attention: common.Implementation = "auto"

    def setup(self):
        s = self.spec
        self.word_embeddings = common.embedding(s.vocab_size, s.hidden_size, self.dtype)
        self.word_embeddings_layernorm = layer_norm_of(s, self.dtype)
        self.ln_f = layer_norm_of(s, self.dtype)
        self.h = common.layer_stack(BloomBlock, s.num_layers)(s, self.dtype, self.capture, self.attention)

    def __call__(self, input_ids, layout, layer_edits, layers, final_norm: bool):
        hidden = self.word_embeddings_layernorm(self.word_embeddings(input_ids))
        hidden, new = self.h(hidden, (layer_edits, layers), layout)
        return (self.ln_f(hidden) if final_norm else hidden), new

    def attend(self, hidden, start=0, size=None):
        return common.vocab_projection(hidden, self.word_embeddings.embedding, 0, self.dtype, start, size)


class BloomForCausalLM(common.CausalLM):
    """BLOOM with its LM head, tied to the word embeddings unless the config unties it."""

    spec: BloomSpec
    dtype: Any = jnp.float32
    capture: common.Capture = "none"
    attention: common.Implementation = "auto"

    def setup(self):
        self.transformer = BloomTransformer(self.spec, self.dtype, self.capture, self.attention)
        if not self.spec.tie_word_embeddings:
            self.lm_head = common.Head(self.spec.vocab_size, self.dtype)

    def backbone(self):
        return self.transformer
