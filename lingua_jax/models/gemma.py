"""Gemma 2 in Flax linen, with the semantics of transformers' Gemma2ForCausalLM.

Parameter names mirror the HF checkpoint (model.embed_tokens, layers.<i>.self_attn.q_proj, mlp.gate_proj,
layers.<i>.pre_feedforward_layernorm, ...), so checkpoint loading and the sharding rules apply as for
LLaMA. What differs from LLaMA:

- the embeddings are multiplied by sqrt(hidden_size), the normalizer rounded to float32 and cast to the
  hidden dtype (HF's `embed_scale` buffer); the tied LM head reads the unscaled embedding matrix;
- RMSNorm computed in float32 and scaled by (1 + weight), then cast back (`GemmaRMSNorm`);
- four norms per layer: x + post_attention_layernorm(attn(input_layernorm(x))), then
  x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)));
- attention scores scaled by query_pre_attn_scalar ** -0.5 and soft-capped, tanh(s / cap) * cap, before
  the mask (attn_logit_softcapping); the LM head's logits soft-capped the same way
  (final_logit_softcapping) wherever logits are computed (`logits`, used by evaluation and generation);
- GeGLU MLP: neurons act(gate_proj x) * up_proj x with the config's hidden_activation (gelu tanh), the input
  of down_proj, F = intermediate_size; LAPE's "active" counts act(gate_proj x) > 0;
- sliding-window attention (config.sliding_window) in the layers config.layer_types names
  "sliding_attention" (every other layer by default), full causal attention in the others.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lingua_jax.models import common
from lingua_jax.models.llama import ACTIVATIONS, Rope, apply_rotary, rotary_tables


@dataclasses.dataclass(frozen=True)
class GemmaSpec:
    """The architecture fields of a Gemma2Config that the forward depends on.

    `query_pre_attn_scalar`: scores are scaled by its ** -0.5 (not head_dim's). `attn_logit_softcapping` /
    `final_logit_softcapping`: caps c of tanh(x / c) * c on the attention scores / the logits (None: none).
    `sliding_window` W (None: none) in the layers `sliding_layers` marks (None: every layer), as
    LlamaSpec's: a query at real-token position i sees the keys at positions i - W < j <= i.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    query_pre_attn_scalar: float
    rms_norm_eps: float = 1e-6
    rope: Rope = Rope()
    hidden_act: str = "gelu_pytorch_tanh"
    attention_bias: bool = False
    tie_word_embeddings: bool = True
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] | None = None

    @classmethod
    def from_hf(cls, config: Any) -> "GemmaSpec":
        act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
        if act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_activation {act!r}; known: {sorted(ACTIVATIONS)}")
        if getattr(config, "use_bidirectional_attention", False):
            raise NotImplementedError("use_bidirectional_attention is not implemented: lingua_jax's Gemma 2 "
                                      "attends causally")
        layer_types = getattr(config, "layer_types", None)
        heads = config.num_attention_heads
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            query_pre_attn_scalar=config.query_pre_attn_scalar,
            rms_norm_eps=config.rms_norm_eps,
            rope=Rope.from_hf(config.rope_parameters),
            hidden_act=act,
            attention_bias=getattr(config, "attention_bias", False),
            tie_word_embeddings=getattr(config, "tie_word_embeddings", True),
            attn_logit_softcapping=getattr(config, "attn_logit_softcapping", None),
            final_logit_softcapping=getattr(config, "final_logit_softcapping", None),
            sliding_window=getattr(config, "sliding_window", None),
            sliding_layers=None if layer_types is None else tuple(t == "sliding_attention" for t in layer_types),
        )

    def layer_slides(self) -> np.ndarray | None:
        """bool [M]: which layers attend through the window; None when none does."""
        return common.sliding_layers(self.sliding_window, self.sliding_layers, self.num_layers)

    @property
    def num_neurons(self) -> int:
        return self.intermediate_size


def softcap(x: jax.Array, cap: float | None) -> jax.Array:
    """tanh(x / cap) * cap (HF's order of operations); x unchanged when cap is None."""
    return x if cap is None else jnp.tanh(x / cap) * cap


class GemmaRMSNorm(nn.Module):
    """Gemma's RMSNorm: normalise in float32, scale by (1 + weight) in float32, cast back."""

    eps: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        weight = self.param("weight", nn.initializers.zeros, (x.shape[-1],), self.dtype)
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (normed * (1.0 + weight.astype(jnp.float32))).astype(x.dtype)


class GemmaAttention(nn.Module):
    spec: GemmaSpec
    dtype: Any

    @nn.compact
    def __call__(self, x, layout: common.Layout, cache, slides=None):
        """x [B, T, D] -> ([B, T, D] without the residual, updated layer cache or None)."""
        b, t, _ = x.shape
        s = self.spec
        dense = lambda n, name: nn.Dense(n, use_bias=s.attention_bias, dtype=self.dtype, param_dtype=self.dtype,
                                         name=name)
        heads = lambda n, name: dense(n * s.head_dim, name)(x).reshape(b, t, n, s.head_dim)
        q, k = heads(s.num_heads, "q_proj"), heads(s.num_kv_heads, "k_proj")
        cos, sin = rotary_tables(layout.query_positions, s.rope.inverse_frequencies(s.head_dim))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v, cache = layout.update(cache, k, heads(s.num_kv_heads, "v_proj"))
        mask = layout.mask
        if slides is not None:
            mask = jnp.where(slides, layout.windowed_mask(s.sliding_window), mask)
        context = common.dot_product_attention(q, k, v, mask, causal=layout.cache_index is None,
                                               scale=s.query_pre_attn_scalar ** -0.5,
                                               softcap=s.attn_logit_softcapping)
        out = dense(s.hidden_size, "o_proj")(context.reshape(b, t, s.num_heads * s.head_dim))
        return out, cache


class GemmaMLP(nn.Module):
    spec: GemmaSpec
    dtype: Any
    capture: common.Capture

    @nn.compact
    def __call__(self, x, layer_edit, token_mask):
        """x [B, T, D] -> [B, T, D]; neurons = act(gate_proj x) * up_proj x [B, T, F]."""
        s = self.spec
        dense = lambda n, name: nn.Dense(n, use_bias=False, dtype=self.dtype, param_dtype=self.dtype, name=name)
        activation = ACTIVATIONS[s.hidden_act](dense(s.intermediate_size, "gate_proj")(x))
        h = activation * dense(s.intermediate_size, "up_proj")(x)
        h = common.NeuronHook(self.capture, name="neurons")(h, layer_edit, token_mask, activation)
        return dense(s.hidden_size, "down_proj")(h)


class GemmaDecoderLayer(nn.Module):
    spec: GemmaSpec
    dtype: Any
    capture: common.Capture

    @nn.compact
    def __call__(self, hidden, layer_inputs, layout: common.Layout):
        layer_edit, cache, slides = layer_inputs
        norm = lambda name: GemmaRMSNorm(self.spec.rms_norm_eps, self.dtype, name=name)
        attended, cache = GemmaAttention(self.spec, self.dtype, name="self_attn")(
            norm("input_layernorm")(hidden), layout, cache, slides)
        hidden = hidden + norm("post_attention_layernorm")(attended)
        fed = GemmaMLP(self.spec, self.dtype, self.capture, name="mlp")(
            norm("pre_feedforward_layernorm")(hidden), layer_edit, layout.token_mask)
        hidden = hidden + norm("post_feedforward_layernorm")(fed)
        return hidden, cache


class GemmaModel(nn.Module):
    """Gemma2Model: embed_tokens (scaled by sqrt(D)), the scanned decoder `layers`, the final norm `norm`."""

    spec: GemmaSpec
    dtype: Any
    capture: common.Capture

    def setup(self):
        s = self.spec
        self.embed_tokens = nn.Embed(s.vocab_size, s.hidden_size, dtype=self.dtype, param_dtype=self.dtype)
        self.layers = common.layer_stack(GemmaDecoderLayer, s.num_layers)(s, self.dtype, self.capture)
        self.norm = GemmaRMSNorm(s.rms_norm_eps, self.dtype)

    def __call__(self, input_ids, layout, layer_edits, cache, final_norm: bool):
        slides = self.spec.layer_slides()
        slides = None if slides is None else jnp.asarray(slides)
        embedded = self.embed_tokens(input_ids)
        # HF's embed_scale: a float32 buffer sqrt(D), cast to the weights' dtype
        embedded = embedded * jnp.asarray(np.float32(self.spec.hidden_size ** 0.5)).astype(embedded.dtype)
        hidden, cache = self.layers(embedded, (layer_edits, cache, slides), layout)
        return (self.norm(hidden) if final_norm else hidden), cache

    def attend(self, hidden):
        return self.embed_tokens.attend(hidden)


class GemmaForCausalLM(common.CausalLM):
    """Gemma 2 with its LM head (tied unless the config unties it) and final logit soft-capping."""

    spec: GemmaSpec
    dtype: Any = jnp.float32
    capture: common.Capture = "none"

    def setup(self):
        self.model = GemmaModel(self.spec, self.dtype, self.capture)
        if not self.spec.tie_word_embeddings:
            self.lm_head = nn.Dense(self.spec.vocab_size, use_bias=False, dtype=self.dtype,
                                    param_dtype=self.dtype)

    def backbone(self):
        return self.model

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final normed hidden states [..., D] -> soft-capped logits [..., V]."""
        return softcap(super().logits(hidden), self.spec.final_logit_softcapping)
