"""The rotary GLU decoders in Flax linen, one module for LLaMA (2 and 3), Qwen2, Qwen3, Mistral, Gemma 2,
Gemma 3 (text) and Cohere (Command R, Aya Expanse), with the semantics of their transformers classes. The
families differ in `DecoderSpec` fields only; the registry (models/__init__.py) says which fields each
family fixes.

Parameter names mirror the HF checkpoints (model.embed_tokens, layers.<i>.self_attn.q_proj,
mlp.gate_proj, ..., lm_head). Neurons are act(gate_proj x) * up_proj x, the input of down_proj,
F = intermediate_size; LAPE's "active" counts act(gate_proj x) > 0. Grouped-query attention when
num_key_value_heads < num_attention_heads. What the fields switch:

- norms (`norm`): LLaMA's RMSNorm (weight * normed cast back), Gemma's (normed * (1 + weight) in float32,
  then cast), or Cohere's LayerNorm without bias (mean subtracted, weight * normed in float32);
- the layer (`block`): pre-norm residuals x + attn(norm(x)), x + mlp(norm(x)) ("sequential"); Gemma's four
  norms x + post_attention_layernorm(attn(input_layernorm(x))), then
  x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x))) ("sandwich"); Cohere's attention and
  MLP side by side on one norm, x + attn(n) + mlp(n), n = input_layernorm(x) ("parallel");
- biases on q/k/v (`qkv_bias`, Qwen2) and o_proj (`o_proj_bias`); per-head q/k norms before the rotary
  embedding (`qk_norm`: one weight [hd] for every head, Qwen3 and Gemma 3; a weight per head [heads, hd],
  Cohere's use_qk_norm);
- the rotary embedding (`Rope`, possibly scaled), its layout (`rope_interleaved`: Cohere rotates
  neighbouring pairs, in float32, where the others rotate the two halves) and Gemma 3's second rotary
  embedding for its sliding layers (`local_rope`);
- sliding-window attention (`sliding_window`) in the layers `sliding_layers` marks (Mistral: all);
- Gemma's embeddings times sqrt(hidden_size) (`embed_scale`), attention scale query_pre_attn_scalar ** -0.5
  and soft caps tanh(x / c) * c of the attention scores (before the mask) and of the logits;
- Cohere's logits times `logit_scale`.
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
ROPE_TYPES = ("default", "linear", "llama3", "yarn", "dynamic")
NORMS = ("rms", "gemma_rms", "layer")
BLOCKS = ("sequential", "sandwich", "parallel")
QK_NORMS = (None, "shared", "per_head")


@dataclasses.dataclass(frozen=True)
class Rope:
    """The rotary embedding as transformers 5 configures it (`config.rope_parameters`, same field names).

    "default": inverse frequencies theta^(-2i/hd); "linear": all divided by `factor` (positions
    interpolated); "llama3" (LLaMA 3.1): wavelengths above original_max_position_embeddings /
    low_freq_factor divided by `factor`, below original_max_position_embeddings / high_freq_factor kept,
    and a smooth blend in between; "yarn" (Qwen2.5 and Qwen3 past 32k tokens): frequencies that turn
    fewer than beta_slow times over the original context divided by `factor`, more than beta_fast times
    kept, a linear ramp between, and cos and sin times `attention_scaling()`; "dynamic" (dynamic NTK): a
    sequence of L > max_position_embeddings tokens rotates with theta * (factor L /
    max_position_embeddings - factor + 1) ^ (hd / (hd - 2)) in place of theta (`frequencies`).

    transformers' dynamic RoPE recomputes its frequencies from the longest sequence of each forward and
    keeps them grown across calls, so there a sequence's result depends on its batch and on earlier calls.
    lingua_jax gives each sequence what transformers gives it alone in a freshly loaded model: L is the
    length of the sequence by the end of the call (`Layout.lengths`), so a prompt is rotated with its own
    length and each generated token with the length so far, as in HF generate for that prompt alone.
    """

    rope_type: str = "default"
    rope_theta: float = 10000.0
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True
    max_position_embeddings: int | None = None  # dynamic: the length beyond which theta grows

    @classmethod
    def from_hf(cls, rope_parameters: dict[str, Any], max_position_embeddings: int | None = None) -> "Rope":
        """From `config.rope_parameters`; yarn without a factor takes max_position_embeddings /
        original_max_position_embeddings, as transformers does."""
        rope_type = rope_parameters.get("rope_type", "default")
        if rope_type not in ROPE_TYPES:
            raise NotImplementedError(f"rope_type {rope_type!r} is not implemented; lingua_jax implements "
                                      f"{list(ROPE_TYPES)}")
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in rope_parameters.items() if k in names and v is not None}
        if rope_type == "yarn" and "factor" not in fields:
            fields["factor"] = max_position_embeddings / fields["original_max_position_embeddings"]
        if rope_type == "dynamic":
            fields["max_position_embeddings"] = max_position_embeddings
        return cls(**fields)

    def frequencies(self, head_dim: int, lengths: jax.Array) -> Any:
        """Inverse frequencies: `inverse_frequencies` [hd / 2], or for "dynamic" float32 [B, T, hd / 2],
        each token's from the length of its sequence, lengths int [B, T] (`Layout.lengths`), computed
        in float32 in transformers' order."""
        if self.rope_type != "dynamic":
            return self.inverse_frequencies(head_dim)
        f32 = jnp.float32
        length = jnp.maximum(lengths, self.max_position_embeddings).astype(f32)[..., None]
        growth = (f32(self.factor) * length / f32(self.max_position_embeddings)) - f32(self.factor - 1)
        base = f32(self.rope_theta) * growth ** f32(head_dim / (head_dim - 2))
        return 1.0 / (base ** (jnp.arange(0, head_dim, 2, dtype=f32) / head_dim))

    def attention_scaling(self) -> float:
        """What cos and sin are multiplied by: yarn's attention factor (0.1 ln(factor) + 1 unless the config
        sets it or mscale / mscale_all_dim), else 1."""
        if self.rope_type != "yarn":
            return 1.0
        if self.attention_factor is not None:
            return self.attention_factor
        mscale = lambda m: 1.0 if self.factor <= 1 else 0.1 * m * math.log(self.factor) + 1.0
        if self.mscale and self.mscale_all_dim:
            return float(mscale(self.mscale) / mscale(self.mscale_all_dim))
        return mscale(1)

    def inverse_frequencies(self, head_dim: int) -> np.ndarray:
        """float32 [hd / 2], with transformers' float32 operations in its order (wavelength 2 pi / f)."""
        with jax.ensure_compile_time_eval():  # pow as HF's (eagerly); folded under jit, it differed by an ulp
            exponents = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
            powers = np.asarray(self.rope_theta ** exponents)
            inv_freq = np.asarray(1.0 / jnp.asarray(powers))
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
        elif self.rope_type == "yarn":
            def correction(rotations: float) -> float:  # the dimension whose frequency turns `rotations` times
                context = self.original_max_position_embeddings
                return head_dim * math.log(context / (rotations * 2 * math.pi)) / (2 * math.log(self.rope_theta))

            low, high = correction(self.beta_fast), correction(self.beta_slow)
            if self.truncate:
                low, high = math.floor(low), math.ceil(high)
            low, high = max(low, 0), min(high, head_dim - 1)
            high = high + 0.001 if low == high else high
            ramp = np.clip((np.arange(head_dim // 2, dtype=f32) - f32(low)) / f32(high - low), f32(0), f32(1))
            kept = f32(1) - ramp
            inv_freq = (f32(1) / (f32(self.factor) * powers)) * (f32(1) - kept) + inv_freq * kept
        return inv_freq


@dataclasses.dataclass(frozen=True)
class DecoderSpec:
    """The architecture fields of an HF config that the forward depends on (see the module docstring).

    `sliding_window` W (None: none): in a sliding layer a query at real-token position i sees the keys at
    positions i - W < j <= i only (transformers' `sliding_window_overlay`: kv_idx > q_idx - sliding_window,
    on top of the causal mask). `sliding_layers`: which layers slide (and use `local_rope`, where there is
    one), one bool per layer from the config's `layer_types`; None means every layer (Mistral, whose
    attention ignores `layer_types`).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    norm_eps: float = 1e-6
    norm: str = "rms"
    block: str = "sequential"
    rope: Rope = Rope()
    local_rope: Rope | None = None
    rope_interleaved: bool = False
    hidden_act: str = "silu"
    qkv_bias: bool = False
    o_proj_bias: bool = False
    mlp_bias: bool = False
    qk_norm: str | None = None
    embed_scale: bool = False
    query_pre_attn_scalar: float | None = None
    attn_logit_softcapping: float | None = None
    final_logit_softcapping: float | None = None
    logit_scale: float | None = None
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    sliding_layers: tuple[bool, ...] | None = None

    def __post_init__(self):
        for name, allowed in (("norm", NORMS), ("block", BLOCKS), ("qk_norm", QK_NORMS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"DecoderSpec.{name}={getattr(self, name)!r}: one of {allowed}")

    @classmethod
    def from_hf(cls, config: Any) -> "DecoderSpec":
        """The fields an HF config states, under the names its family uses (rms_norm_eps or Cohere's
        layer_norm_eps, hidden_act or Gemma's hidden_activation, one rope_parameters or Gemma 3's per layer
        type); what a family fixes comes from its registry entry."""
        act = getattr(config, "hidden_activation", None) or config.hidden_act
        if act not in ACTIVATIONS:
            raise ValueError(f"unsupported hidden activation {act!r}; known: {sorted(ACTIVATIONS)}")
        if getattr(config, "use_bidirectional_attention", False):
            raise NotImplementedError("use_bidirectional_attention is not implemented: lingua_jax's decoders "
                                      "attend causally")
        rope, local_rope = config.rope_parameters, None
        context = getattr(config, "max_position_embeddings", None)
        if "full_attention" in rope:  # Gemma 3: one rotary embedding per layer type
            rope, local_rope = rope["full_attention"], Rope.from_hf(rope["sliding_attention"], context)
        layer_types = getattr(config, "layer_types", None)
        heads = config.num_attention_heads
        bias = getattr(config, "attention_bias", False)
        eps = getattr(config, "rms_norm_eps", None)
        return cls(
            vocab_size=config.vocab_size,
            hidden_size=config.hidden_size,
            intermediate_size=config.intermediate_size,
            num_layers=config.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            norm_eps=config.layer_norm_eps if eps is None else eps,
            rope=Rope.from_hf(rope, context),
            local_rope=local_rope,
            hidden_act=act,
            qkv_bias=bias,
            o_proj_bias=bias,
            mlp_bias=getattr(config, "mlp_bias", False),
            qk_norm="per_head" if getattr(config, "use_qk_norm", False) else None,
            query_pre_attn_scalar=getattr(config, "query_pre_attn_scalar", None),
            attn_logit_softcapping=getattr(config, "attn_logit_softcapping", None),
            final_logit_softcapping=getattr(config, "final_logit_softcapping", None),
            logit_scale=getattr(config, "logit_scale", None),
            tie_word_embeddings=getattr(config, "tie_word_embeddings", False),
            sliding_window=getattr(config, "sliding_window", None),  # Qwen2: None without use_sliding_window
            sliding_layers=None if layer_types is None else tuple(t == "sliding_attention" for t in layer_types),
        )

    def layer_slides(self) -> np.ndarray | None:
        """bool [M]: which layers attend through the window; None when none does (no window)."""
        return common.sliding_layers(self.sliding_window, self.sliding_layers, self.num_layers)

    def local_layers(self) -> np.ndarray | None:
        """bool [M]: the layers that slide or use `local_rope`, scanned with the layers as one flag each (one
        compiled layer body); None when every layer is alike."""
        if self.local_rope is None:
            return self.layer_slides()
        return np.ones(self.num_layers, bool) if self.sliding_layers is None else np.asarray(self.sliding_layers)

    @property
    def num_neurons(self) -> int:
        return self.intermediate_size


class Norm(nn.Module):
    """The family's norm over the last axis, computed in float32 (`kind`: "rms", "gemma_rms" or "layer",
    see the module docstring). Its weight spans the trailing dimensions that `axes` names: (EMBED,) for
    the hidden size, (HEAD_DIM,) for one weight shared by all heads, (HEADS or KV_HEADS, HEAD_DIM) for a
    weight per head."""

    kind: str
    eps: float
    dtype: Any = jnp.float32
    axes: tuple[str, ...] = (common.EMBED,)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        init = nn.initializers.zeros if self.kind == "gemma_rms" else nn.initializers.ones
        weight = self.param("weight", common.logical(init, *self.axes), x.shape[-len(self.axes):], self.dtype)
        x32 = x.astype(jnp.float32)
        if self.kind == "layer":
            x32 = x32 - jnp.mean(x32, axis=-1, keepdims=True)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.kind == "rms":
            return weight * normed.astype(x.dtype)
        scale = weight.astype(jnp.float32)
        if self.kind == "gemma_rms":
            scale = scale + 1.0
        return (normed * scale).astype(x.dtype)


def rotary_tables(positions: jax.Array, inv_freq: jax.Array, interleaved: bool = False, scaling: Any = 1.0
                  ) -> tuple[jax.Array, jax.Array]:
    """float32 cos, sin [B, T, hd] of positions [B, T] and inverse frequencies [hd / 2] (or [B, T, hd / 2]),
    in HF's layout: the frequencies repeated over the two halves, or each twice in a row (`interleaved`);
    both times `scaling` (yarn's attention factor) unless it is 1."""
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.repeat(freqs, 2, axis=-1) if interleaved else jnp.concatenate([freqs, freqs], axis=-1)
    cos, sin = jnp.cos(emb), jnp.sin(emb)
    if isinstance(scaling, float) and scaling == 1.0:
        return cos, sin
    scaling = jnp.asarray(scaling, jnp.float32)
    return cos * scaling, sin * scaling


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array, interleaved: bool = False) -> jax.Array:
    """x [B, T, heads, hd] rotated with HF's rotate_half convention; cos, sin [B, T, hd] (cast to x's
    dtype, as HF's). `interleaved`: Cohere's, each pair (x[2i], x[2i + 1]) rotated, computed in float32."""
    cos, sin = cos[:, :, None].astype(x.dtype), sin[:, :, None].astype(x.dtype)
    if not interleaved:
        half = x.shape[-1] // 2
        return x * cos + jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1) * sin
    x32 = x.astype(jnp.float32)
    rotated = jnp.stack([-x32[..., 1::2], x32[..., ::2]], axis=-1).reshape(x.shape)
    return (x32 * cos.astype(jnp.float32) + rotated * sin.astype(jnp.float32)).astype(x.dtype)


class Attention(nn.Module):
    spec: DecoderSpec
    dtype: Any
    attention: common.Implementation = "auto"

    @nn.compact
    def __call__(self, x, layout: common.Layout, layer, local=None):
        """x [B, T, D] -> ([B, T, D] without the residual, its new keys and values or None). `local`: bool scalar,
        this layer slides and uses `local_rope` (None: every layer is alike)."""
        b, t, _ = x.shape
        s = self.spec
        def heads(n: int, axis: str, name: str) -> jax.Array:  # [B, T, n, hd]
            projected = common.dense(n * s.head_dim, (common.EMBED, axis), self.dtype, name, s.qkv_bias)(x)
            return projected.reshape(b, t, n, s.head_dim)

        def head_norm(axis: str, name: str) -> Norm:  # over each head's hd features
            axes = (axis, common.HEAD_DIM) if s.qk_norm == "per_head" else (common.HEAD_DIM,)
            return Norm(s.norm, s.norm_eps, self.dtype, axes, name=name)

        q, k = heads(s.num_heads, common.HEADS, "q_proj"), heads(s.num_kv_heads, common.KV_HEADS, "k_proj")
        if s.qk_norm is not None:
            q, k = head_norm(common.HEADS, "q_norm")(q), head_norm(common.KV_HEADS, "k_norm")(k)
        inv_freq, scaling = s.rope.frequencies(s.head_dim, layout.lengths), s.rope.attention_scaling()
        if s.local_rope is not None and local is not None:
            inv_freq = jnp.where(local, s.local_rope.frequencies(s.head_dim, layout.lengths), inv_freq)
            if scaling != s.local_rope.attention_scaling():
                scaling = jnp.where(local, s.local_rope.attention_scaling(), scaling)
        cos, sin = rotary_tables(layout.query_positions, inv_freq, s.rope_interleaved, scaling)
        q, k = (apply_rotary(y, cos, sin, s.rope_interleaved) for y in (q, k))
        k, v, new = layout.update(layer, k, heads(s.num_kv_heads, common.KV_HEADS, "v_proj"))
        mask = layout.mask
        if s.sliding_window is not None and local is not None:
            mask = jnp.where(local, layout.windowed_mask(s.sliding_window), mask)
        scale = None if s.query_pre_attn_scalar is None else s.query_pre_attn_scalar ** -0.5
        context = common.dot_product_attention(q, k, v, mask, causal=layout.cache_index is None, scale=scale,
                                               softcap=s.attn_logit_softcapping, implementation=self.attention)
        o_proj = common.dense(s.hidden_size, (common.HEADS, common.EMBED), self.dtype, "o_proj", s.o_proj_bias)
        out = o_proj(context.reshape(b, t, s.num_heads * s.head_dim))
        return out, new


class MLP(nn.Module):
    spec: DecoderSpec
    dtype: Any
    capture: common.Capture

    @nn.compact
    def __call__(self, x, layer_edit, token_mask):
        """x [B, T, D] -> [B, T, D]; neurons = act(gate_proj x) * up_proj x [B, T, F]."""
        s = self.spec
        dense = lambda n, axes, name: common.dense(n, axes, self.dtype, name, s.mlp_bias)
        up = (common.EMBED, common.MLP)
        activation = ACTIVATIONS[s.hidden_act](dense(s.intermediate_size, up, "gate_proj")(x))
        h = activation * dense(s.intermediate_size, up, "up_proj")(x)
        h = common.NeuronHook(self.capture, name="neurons")(h, layer_edit, token_mask, activation)
        return dense(s.hidden_size, (common.MLP, common.EMBED), "down_proj")(h)


class DecoderLayer(nn.Module):
    spec: DecoderSpec
    dtype: Any
    capture: common.Capture
    attention: common.Implementation = "auto"

    @nn.compact
    def __call__(self, hidden, layer_inputs, layout: common.Layout):
        layer_edit, layer, local = layer_inputs
        s = self.spec
        norm = lambda name: Norm(s.norm, s.norm_eps, self.dtype, name=name)
        attention = Attention(s, self.dtype, self.attention, name="self_attn")
        mlp = lambda x: MLP(s, self.dtype, self.capture, name="mlp")(x, layer_edit, layout.token_mask)
        if s.block == "parallel":
            normed = norm("input_layernorm")(hidden)
            attended, new = attention(normed, layout, layer, local)
            return hidden + attended + mlp(normed), new
        attended, new = attention(norm("input_layernorm")(hidden), layout, layer, local)
        if s.block == "sandwich":
            hidden = hidden + norm("post_attention_layernorm")(attended)
            return hidden + norm("post_feedforward_layernorm")(mlp(norm("pre_feedforward_layernorm")(hidden))), new
        hidden = hidden + attended
        return hidden + mlp(norm("post_attention_layernorm")(hidden)), new


class DecoderModel(nn.Module):
    """The backbone: embed_tokens (times sqrt(D) with `embed_scale`), the scanned decoder `layers`, the
    final norm `norm`."""

    spec: DecoderSpec
    dtype: Any
    capture: common.Capture
    attention: common.Implementation = "auto"

    def setup(self):
        s = self.spec
        self.embed_tokens = common.embedding(s.vocab_size, s.hidden_size, self.dtype)
        self.layers = common.layer_stack(DecoderLayer, s.num_layers)(s, self.dtype, self.capture, self.attention)
        self.norm = Norm(s.norm, s.norm_eps, self.dtype)

    def __call__(self, input_ids, layout, layer_edits, layers, final_norm: bool):
        local = self.spec.local_layers()
        local = None if local is None else jnp.asarray(local)
        hidden = self.embed_tokens(input_ids)
        if self.spec.embed_scale:  # HF's embed_scale: a float32 buffer sqrt(D), cast to the weights' dtype
            hidden = hidden * jnp.asarray(np.float32(self.spec.hidden_size ** 0.5)).astype(hidden.dtype)
        hidden, new = self.layers(hidden, (layer_edits, layers, local), layout)
        return (self.norm(hidden) if final_norm else hidden), new

    def attend(self, hidden, start=0, size=None):
        return common.vocab_projection(hidden, self.embed_tokens.embedding, 0, self.dtype, start, size)


class DecoderForCausalLM(common.CausalLM):
    """The decoder with its LM head (untied unless the config ties it), the logits scaled (Cohere) and
    soft-capped (Gemma) wherever they are computed (`logits`, used by scoring and generation too)."""

    spec: DecoderSpec
    dtype: Any = jnp.float32
    capture: common.Capture = "none"
    attention: common.Implementation = "auto"

    def setup(self):
        self.model = DecoderModel(self.spec, self.dtype, self.capture, self.attention)
        if not self.spec.tie_word_embeddings:
            self.lm_head = common.Head(self.spec.vocab_size, self.dtype)

    def backbone(self):
        return self.model

    def transform_logits(self, logits: jax.Array) -> jax.Array:
        if self.spec.logit_scale is not None:
            logits = logits * self.spec.logit_scale
        cap = self.spec.final_logit_softcapping
        return logits if cap is None else jnp.tanh(logits / cap) * cap
