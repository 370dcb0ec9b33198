"""LLaMA(-2) in Flax linen with the semantics of transformers' LlamaForCausalLM.

Parameter names mirror the HF checkpoint (model.embed_tokens, layers.<i>.self_attn.q_proj,
mlp.gate_proj, ..., lm_head). Neurons are SiLU(gate_proj x) * up_proj x, the input of down_proj,
F = intermediate_size. Grouped-query attention when num_key_value_heads < num_attention_heads.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lingua_jax.models import common

ACTIVATIONS = {"silu": jax.nn.silu, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
               "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True), "relu": jax.nn.relu}


@dataclasses.dataclass(frozen=True)
class LlamaSpec:
    """The architecture fields of a LlamaConfig that the forward depends on."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    hidden_act: str = "silu"
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False

    @classmethod
    def from_hf(cls, config: Any) -> "LlamaSpec":
        rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"unsupported rope type {rope_type!r}: lingua_jax implements LLaMA-2's default RoPE")
        if config.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {config.hidden_act!r}; known: {sorted(ACTIVATIONS)}")
        heads = config.num_attention_heads
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            rms_norm_eps=config.rms_norm_eps,
            rope_theta=float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
            hidden_act=config.hidden_act,
            attention_bias=getattr(config, "attention_bias", False),
            mlp_bias=getattr(config, "mlp_bias", False),
            tie_word_embeddings=getattr(config, "tie_word_embeddings", False),
        )

    @property
    def num_neurons(self) -> int:
        return self.intermediate_size


def rotary_tables(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """float32 cos, sin [B, T, hd] in HF's layout (frequencies repeated over the two halves)."""
    with jax.ensure_compile_time_eval():  # as HF's (eagerly); folded under jit, it differed by an ulp
        inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, heads, hd] rotated with HF's rotate_half convention; cos, sin [B, T, hd]."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos, sin = cos[:, :, None].astype(x.dtype), sin[:, :, None].astype(x.dtype)
    return x * cos + rotated * sin


class LlamaAttention(nn.Module):
    spec: LlamaSpec
    dtype: Any

    @nn.compact
    def __call__(self, x, layout: common.Layout, cache):
        """x [B, T, D] -> ([B, T, D] without the residual, updated layer cache or None)."""
        b, t, _ = x.shape
        s = self.spec
        dense = lambda n, name: nn.Dense(n, use_bias=s.attention_bias, dtype=self.dtype, param_dtype=self.dtype,
                                         name=name)
        heads = lambda n, name: dense(n * s.head_dim, name)(x).reshape(b, t, n, s.head_dim)
        cos, sin = rotary_tables(layout.query_positions, s.head_dim, s.rope_theta)
        q = apply_rotary(heads(s.num_heads, "q_proj"), cos, sin)
        k = apply_rotary(heads(s.num_kv_heads, "k_proj"), cos, sin)
        k, v, cache = layout.update(cache, k, heads(s.num_kv_heads, "v_proj"))
        context = common.dot_product_attention(q, k, v, layout.mask, causal=layout.cache_index is None)
        return dense(s.hidden_size, "o_proj")(context.reshape(b, t, s.num_heads * s.head_dim)), cache


class LlamaMLP(nn.Module):
    spec: LlamaSpec
    dtype: Any
    capture: common.Capture

    @nn.compact
    def __call__(self, x, layer_edit, token_mask):
        """x [B, T, D] -> [B, T, D]; neurons = act(gate_proj x) * up_proj x [B, T, F]."""
        s = self.spec
        dense = lambda n, name: nn.Dense(n, use_bias=s.mlp_bias, dtype=self.dtype, param_dtype=self.dtype,
                                         name=name)
        activation = ACTIVATIONS[s.hidden_act](dense(s.intermediate_size, "gate_proj")(x))
        h = activation * dense(s.intermediate_size, "up_proj")(x)
        h = common.NeuronHook(self.capture, name="neurons")(h, layer_edit, token_mask, activation)
        return dense(s.hidden_size, "down_proj")(h)


class LlamaDecoderLayer(nn.Module):
    spec: LlamaSpec
    dtype: Any
    capture: common.Capture

    @nn.compact
    def __call__(self, hidden, layer_inputs, layout: common.Layout):
        layer_edit, cache = layer_inputs
        norm = lambda name: common.RMSNorm(self.spec.rms_norm_eps, self.dtype, name=name)
        attended, cache = LlamaAttention(self.spec, self.dtype, name="self_attn")(
            norm("input_layernorm")(hidden), layout, cache)
        hidden = hidden + attended
        hidden = hidden + LlamaMLP(self.spec, self.dtype, self.capture, name="mlp")(
            norm("post_attention_layernorm")(hidden), layer_edit, layout.token_mask)
        return hidden, cache


class LlamaModel(nn.Module):
    """LlamaModel: embed_tokens, the scanned decoder `layers`, the final RMSNorm `norm`."""

    spec: LlamaSpec
    dtype: Any
    capture: common.Capture

    def setup(self):
        s = self.spec
        self.embed_tokens = nn.Embed(s.vocab_size, s.hidden_size, dtype=self.dtype, param_dtype=self.dtype)
        self.layers = common.layer_stack(LlamaDecoderLayer, s.num_layers)(s, self.dtype, self.capture)
        self.norm = common.RMSNorm(s.rms_norm_eps, self.dtype)

    def __call__(self, input_ids, layout, layer_edits, cache, final_norm: bool):
        hidden, cache = self.layers(self.embed_tokens(input_ids), (layer_edits, cache), layout)
        return (self.norm(hidden) if final_norm else hidden), cache

    def attend(self, hidden):
        return self.embed_tokens.attend(hidden)


class LlamaForCausalLM(common.CausalLM):
    """LLaMA with its LM head, untied unless the config ties it."""

    spec: LlamaSpec
    dtype: Any = jnp.float32
    capture: common.Capture = "none"

    def setup(self):
        self.model = LlamaModel(self.spec, self.dtype, self.capture)
        if not self.spec.tie_word_embeddings:
            self.lm_head = nn.Dense(self.spec.vocab_size, use_bias=False, dtype=self.dtype,
                                    param_dtype=self.dtype)

    def backbone(self):
        return self.model
