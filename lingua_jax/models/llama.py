"""LLaMA (2 and 3) and its variants Qwen2, Qwen3 and Mistral in Flax linen, with the semantics of
transformers' LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM and MistralForCausalLM.

Parameter names mirror the HF checkpoint (model.embed_tokens, layers.<i>.self_attn.q_proj,
mlp.gate_proj, ..., lm_head). Neurons are SiLU(gate_proj x) * up_proj x, the input of down_proj,
F = intermediate_size. Grouped-query attention when num_key_value_heads < num_attention_heads. The
variants differ only in spec fields: Qwen2 has biases on q/k/v_proj (not o_proj), Qwen3 an RMSNorm over
each query and key head (q_norm, k_norm) before the rotary embedding; the rotary embedding may be scaled
(`Rope`). Mistral (and Qwen2/Qwen3 with use_sliding_window) attend through a sliding window in some or
all layers (`LlamaSpec.sliding_window`).
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

ACTIVATIONS = {"silu": jax.nn.silu, "gelu": lambda x: jax.nn.gelu(x, approximate=False),
               "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True), "relu": jax.nn.relu}
ROPE_TYPES = ("default", "linear", "llama3")


@dataclasses.dataclass(frozen=True)
class Rope:
    """The rotary embedding as transformers 5 configures it (`config.rope_parameters`, same field names).

    "default": inverse frequencies theta^(-2i/hd); "linear": all divided by `factor` (positions
    interpolated); "llama3" (LLaMA 3.1): wavelengths above original_max_position_embeddings /
    low_freq_factor divided by `factor`, below original_max_position_embeddings / high_freq_factor kept,
    and a smooth blend in between.
    """

    rope_type: str = "default"
    rope_theta: float = 10000.0
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    @classmethod
    def from_hf(cls, rope_parameters: dict[str, Any]) -> "Rope":
        rope_type = rope_parameters.get("rope_type", "default")
        if rope_type == "dynamic":
            raise NotImplementedError(
                "rope_type 'dynamic' (dynamic NTK scaling) is not implemented: transformers recomputes its "
                "frequencies from the longest sequence of each forward (max position id + 1) and keeps them "
                "grown for later calls, so a sequence's result would depend on its batch and on earlier calls "
                "(up to max_position_embeddings it is 'default'); lingua_jax implements "
                f"{list(ROPE_TYPES)}")
        if rope_type not in ROPE_TYPES:
            raise NotImplementedError(f"rope_type {rope_type!r} is not implemented; lingua_jax implements "
                                      f"{list(ROPE_TYPES)}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in rope_parameters.items() if k in names})

    def inverse_frequencies(self, head_dim: int) -> np.ndarray:
        """float32 [hd / 2], with transformers' float32 operations in its order (wavelength 2 pi / f)."""
        with jax.ensure_compile_time_eval():  # pow as HF's (eagerly); folded under jit, it differed by an ulp
            exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
            inv_freq = np.asarray(1.0 / (self.rope_theta ** exponents))
        # The scaling in numpy (XLA divides by a constant through its reciprocal, an ulp off torch), each
        # Python scalar rounded to float32 where it meets the array, as in torch.
        f32 = np.float32
        if self.rope_type == "linear":
            inv_freq = inv_freq / f32(self.factor)
        elif self.rope_type == "llama3":
            context, low, high = self.original_max_position_embeddings, self.low_freq_factor, self.high_freq_factor
            wavelength = (f32(1) / inv_freq) * f32(2 * math.pi)
            long = wavelength > f32(context / low)
            inv_freq = np.where(long, inv_freq / f32(self.factor), inv_freq)
            smooth = ((f32(1) / wavelength) * f32(context) - f32(low)) / f32(high - low)
            medium = ~(wavelength < f32(context / high)) & ~long
            smoothed = (f32(1) - smooth) * inv_freq / f32(self.factor) + smooth * inv_freq
            inv_freq = np.where(medium, smoothed, inv_freq)
        return inv_freq


@dataclasses.dataclass(frozen=True)
class LlamaSpec:
    """The architecture fields of a LlamaConfig (Qwen2Config, Qwen3Config, MistralConfig) that the forward
    depends on.

    `qkv_bias` / `o_proj_bias`: biases on the q, k, v projections / on o_proj (LLaMA's and Qwen3's
    attention_bias sets both; Qwen2 has the first only). `qk_norm`: Qwen3's per-head RMSNorm of queries
    and keys. `head_dim` may differ from hidden_size / num_heads (Qwen3).

    `sliding_window` W (None: none): in a sliding layer a query at real-token position i sees the keys at
    positions i - W < j <= i only (transformers' `sliding_window_overlay`: kv_idx > q_idx - sliding_window,
    on top of the causal mask). `sliding_layers` says which layers slide, one bool per layer (from the
    config's `layer_types`); None means every layer (Mistral, whose attention ignores `layer_types`).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope: Rope = Rope()
    hidden_act: str = "silu"
    qkv_bias: bool = False
    o_proj_bias: bool = False
    qk_norm: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] | None = None

    @classmethod
    def from_hf(cls, config: Any) -> "LlamaSpec":
        """The fields an HF config states; a family's architecture facts come from its registry entry."""
        if config.hidden_act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden_act {config.hidden_act!r}; known: {sorted(ACTIVATIONS)}")
        window = getattr(config, "sliding_window", None)  # Qwen2Config sets it to None without use_sliding_window
        layer_types = getattr(config, "layer_types", None)
        sliding_layers = None if layer_types is None else tuple(t == "sliding_attention" for t in layer_types)
        heads = config.num_attention_heads
        bias = getattr(config, "attention_bias", False)
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            rms_norm_eps=config.rms_norm_eps,
            rope=Rope.from_hf(config.rope_parameters),
            hidden_act=config.hidden_act,
            qkv_bias=bias,
            o_proj_bias=bias,
            mlp_bias=getattr(config, "mlp_bias", False),
            tie_word_embeddings=getattr(config, "tie_word_embeddings", False),
            sliding_window=window,
            sliding_layers=sliding_layers,
        )

    def layer_slides(self) -> np.ndarray | None:
        """bool [M]: which layers attend through the window; None when none does (no window)."""
        return common.sliding_layers(self.sliding_window, self.sliding_layers, self.num_layers)

    @property
    def num_neurons(self) -> int:
        return self.intermediate_size


def rotary_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """float32 cos, sin [B, T, hd] in HF's layout (frequencies [hd / 2] repeated over the two halves)."""
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
    def __call__(self, x, layout: common.Layout, cache, slides=None):
        """x [B, T, D] -> ([B, T, D] without the residual, updated layer cache or None). `slides`: bool
        scalar, this layer attends through `spec.sliding_window` (None: it does not)."""
        b, t, _ = x.shape
        s = self.spec
        dense = lambda n, bias, name: nn.Dense(n, use_bias=bias, dtype=self.dtype, param_dtype=self.dtype,
                                               name=name)
        heads = lambda n, name: dense(n * s.head_dim, s.qkv_bias, name)(x).reshape(b, t, n, s.head_dim)
        q, k = heads(s.num_heads, "q_proj"), heads(s.num_kv_heads, "k_proj")
        if s.qk_norm:  # over each head's hd features
            q = common.RMSNorm(s.rms_norm_eps, self.dtype, name="q_norm")(q)
            k = common.RMSNorm(s.rms_norm_eps, self.dtype, name="k_norm")(k)
        cos, sin = rotary_tables(layout.query_positions, s.rope.inverse_frequencies(s.head_dim))
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v, cache = layout.update(cache, k, heads(s.num_kv_heads, "v_proj"))
        mask = layout.mask
        if slides is not None:
            mask = jnp.where(slides, layout.windowed_mask(s.sliding_window), mask)
        context = common.dot_product_attention(q, k, v, mask, causal=layout.cache_index is None)
        out = dense(s.hidden_size, s.o_proj_bias, "o_proj")(context.reshape(b, t, s.num_heads * s.head_dim))
        return out, cache


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
        layer_edit, cache, slides = layer_inputs
        norm = lambda name: common.RMSNorm(self.spec.rms_norm_eps, self.dtype, name=name)
        attended, cache = LlamaAttention(self.spec, self.dtype, name="self_attn")(
            norm("input_layernorm")(hidden), layout, cache, slides)
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
        slides = self.spec.layer_slides()  # bool [M], scanned with the layers (one compiled body), or None
        slides = None if slides is None else jnp.asarray(slides)
        hidden, cache = self.layers(self.embed_tokens(input_ids), (layer_edits, cache, slides), layout)
        return (self.norm(hidden) if final_norm else hidden), cache

    def attend(self, hidden):
        return self.embed_tokens.attend(hidden)


class LlamaForCausalLM(common.CausalLM):
    """LLaMA (Qwen2, Qwen3) with its LM head, untied unless the config ties it."""

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
