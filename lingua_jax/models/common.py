"""What BLOOM and LLaMA share: attention, the neuron hook, the scanned layer stack.

Shapes: B batch, T query length, S key length, H query heads, KV key/value heads, hd head size,
D hidden size, M layers, F neurons per layer.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

Capture = Literal["none", "pooled", "full", "active"]
Output = Literal["logits", "hidden", "none"]
CAPTURE_MODES = ("none", "pooled", "full", "active")
OUTPUT_MODES = ("logits", "hidden", "none")
NEURONS = "neurons"  # name of the sown intermediate
QUERY_BLOCK = 128  # queries per block of causal attention (2 CPU cores, T = 1024: 2.2x faster than whole)
Implementation = Literal["auto", "blocked", "xla", "cudnn"]
IMPLEMENTATIONS = ("auto", "blocked", "xla", "cudnn")


@flax.struct.dataclass
class Layout:
    """Where a call's T new tokens sit among the S key slots, shared by every layer.

    Without a KV cache S = T and the slots are the tokens. With one, the new tokens fill slots
    [cache_index, cache_index + T) of a cache of S slots and `key_mask` marks every real token so far.
    The whole cache rides in the layout: each layer reads its slice (`update`) and returns only its new
    keys and values, which `store` writes into every layer's slots at once after the last layer. (The
    scan over layers does not stack whole updated slices, which cost a copy of the cache per step:
    greedy decoding of 54 rows x 33 new tokens with the demo model, 186-193 ms against 221-249 ms.)
    The cache is stored heads first, the keys transposed (`empty_cache`): the layout the attention's
    einsums read, so that a decoding step does not copy every layer's cache into it (greedy decoding
    of 64 rows x 24 new tokens with the demo model: 98-133 ms against 150-181 ms).
    Positions count real tokens only (0, 1, 2, ... from the mask), so left padding is exact. `packed`
    builds the layout of rows that hold several sequences each. Nothing outside `models` builds one:
    `CausalLM.__call__` does, from an attention mask or segment ids.
    """

    query_positions: jax.Array  # int32 [B, T]
    key_positions: jax.Array  # int32 [B, S]
    mask: jax.Array  # bool [B, 1, T, S]: causal and real keys only (and, packed, the query's own sequence)
    token_mask: jax.Array  # [B, T]: 1 on the new real tokens, or [B, P, T]: one such row per sequence
    cache_index: jax.Array | None  # int32 scalar, or None without a cache
    lengths: jax.Array  # int32 [B, T]: per new token, the real tokens its sequence has by the end of this call
    cache: tuple[jax.Array, jax.Array] | None = None  # keys [M, B, KV, hd, S], values [M, B, KV, S, hd]

    @classmethod
    def build(cls, key_mask: jax.Array, num_new: int, cache_index: jax.Array | None = None,
              cache: tuple[jax.Array, jax.Array] | None = None) -> "Layout":
        """key_mask [B, S] (1 = real token); num_new = T; cache_index None means S == T, index 0; `cache`
        the keys and values before this call, as `empty_cache` lays them out (with cache_index)."""
        index = jnp.int32(0) if cache_index is None else cache_index
        key_positions = positions_from_mask(key_mask)
        query_slots = index + jnp.arange(num_new)
        causal = query_slots[:, None] >= jnp.arange(key_mask.shape[-1])[None, :]
        query_positions = jax.lax.dynamic_slice_in_dim(key_positions, index, num_new, axis=1)
        token_mask = jax.lax.dynamic_slice_in_dim(key_mask, index, num_new, axis=1)
        last = jnp.max(jnp.where(token_mask > 0, query_positions, -1), axis=1, keepdims=True)
        return cls(
            query_positions=query_positions,
            key_positions=key_positions,
            mask=causal[None, None] & key_mask[:, None, None, :].astype(bool),
            token_mask=token_mask,
            cache_index=cache_index,
            lengths=jnp.broadcast_to(last + 1, query_positions.shape).astype(jnp.int32),
            cache=cache,
        )

    @classmethod
    def packed(cls, segment_ids: jax.Array, num_segments: int = 0) -> "Layout":
        """Rows of several sequences each, no KV cache (S = T). segment_ids int [B, T]: 0 on padding,
        else the sequence (1..P) the token belongs to, each sequence's tokens contiguous. A token attends
        to the earlier tokens of its own sequence only, and positions restart at 0 in each sequence,
        so every sequence gets what it gets alone. token_mask (what pooling averages over): [B, P, T],
        row p - 1 marking sequence p, when `num_segments` P > 0; else [B, T], every real token."""
        segment_ids = segment_ids.astype(jnp.int32)
        t = segment_ids.shape[1]
        index = jnp.arange(t, dtype=jnp.int32)
        starts = jnp.concatenate([jnp.ones_like(segment_ids[:, :1], bool),
                                  segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
        first = jax.lax.cummax(jnp.where(starts, index, 0), axis=1)  # where each token's sequence starts
        real = segment_ids > 0
        positions = jnp.where(real, index - first, 0)
        same = segment_ids[:, :, None] == segment_ids[:, None, :]
        mask = (index[:, None] >= index[None, :]) & same & real[:, None, :]
        if num_segments:
            token_mask = segment_ids[:, None, :] == jnp.arange(1, num_segments + 1, dtype=jnp.int32)[None, :, None]
        else:
            token_mask = real
        return cls(query_positions=positions, key_positions=positions, mask=mask[:, None],
                   token_mask=token_mask.astype(jnp.int32), cache_index=None,
                   lengths=jnp.sum(same, axis=-1, dtype=jnp.int32))  # each token's sequence's length

    def windowed_mask(self, window: int) -> jax.Array:
        """`mask` [B, 1, T, S] narrowed to a sliding window of `window` tokens: a query at position i also
        needs key position j > i - window (transformers' `sliding_window_overlay`, `kv_idx > q_idx -
        sliding_window`). Positions count real tokens (within each packed sentence), so with padding or
        packing this is the window transformers applies to the sentence alone."""
        near = self.key_positions[:, None, None, :] > self.query_positions[:, None, :, None] - window
        return self.mask & near

    @staticmethod
    def empty_cache(layers: int, batch: int, slots: int, kv_heads: int, head_dim: int, dtype: Any
                    ) -> tuple[jax.Array, jax.Array]:
        """Zeroed keys [M, B, KV, hd, S] and values [M, B, KV, S, hd] in `dtype`: per layer and kv head,
        the keys as the score product's right operand and the values as the value product's."""
        return (jnp.zeros((layers, batch, kv_heads, head_dim, slots), dtype),
                jnp.zeros((layers, batch, kv_heads, slots, head_dim), dtype))

    def layers(self) -> jax.Array | None:
        """int32 [M]: each layer's index into the cache, what `layer_stack` hands each layer as its
        cache entry (None without a cache)."""
        return None if self.cache is None else jnp.arange(self.cache[0].shape[0], dtype=jnp.int32)

    def update(self, layer: jax.Array | None, k: jax.Array, v: jax.Array):
        """(keys, values, new): the keys and values to attend over, [B, S, KV, hd] with the new ones k, v
        [B, T, KV, hd] in their slots of layer `layer`'s cache, and new = (k, v) in the cache's layout
        and dtype for `store` (without a cache: k, v and None). The keys and values are views of the
        cache: the attention's own transposes to heads first cancel them."""
        if layer is None:
            return k, v, None
        keys, values = (jax.lax.dynamic_index_in_dim(c, layer, keepdims=False) for c in self.cache)
        new = (jnp.transpose(k, (0, 2, 3, 1)).astype(keys.dtype),  # [B, KV, hd, T]
               jnp.transpose(v, (0, 2, 1, 3)).astype(values.dtype))  # [B, KV, T, hd]
        keys = jax.lax.dynamic_update_slice(keys, new[0], (0, 0, 0, self.cache_index))
        values = jax.lax.dynamic_update_slice(values, new[1], (0, 0, self.cache_index, 0))
        return jnp.transpose(keys, (0, 3, 1, 2)), jnp.swapaxes(values, 1, 2), new

    def store(self, new: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        """The cache with every layer's new keys [M, B, KV, hd, T] and values [M, B, KV, T, hd] (the
        layers' `update` outputs, stacked) written into slots [cache_index, cache_index + T)."""
        keys, values = self.cache
        return (jax.lax.dynamic_update_slice(keys, new[0], (0, 0, 0, 0, self.cache_index)),
                jax.lax.dynamic_update_slice(values, new[1], (0, 0, 0, self.cache_index, 0)))


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """int32 [B, T]: 0, 1, 2, ... over real tokens, 0 on padding; left padding is therefore exact."""
    mask = attention_mask.astype(jnp.int32)
    return (jnp.cumsum(mask, axis=-1) - 1) * mask


def dot_product_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, bias: jax.Array | None = None,
    causal: bool = False, scale: float | None = None, softcap: float | None = None,
    implementation: Implementation = "auto",
) -> jax.Array:
    """Softmax attention with grouped key/value heads, scores and softmax in float32.

    q [B, T, H, hd]; k, v [B, S, KV, hd] with H % KV == 0 (query head h uses kv head h // (H / KV), as
    HF's repeat_kv); mask bool [B, 1, T, S]; bias float [B, H, 1, S] or None. Returns [B, T, H, hd].
    Scores are q . k * `scale` (None: 1 / sqrt(hd)), then, with a `softcap` c, tanh(scores / c) * c
    (Gemma 2's attention logit soft-capping), then + bias, then masked. A query that sees no key at all
    (padding) gets a finite output, whose value depends on the implementation.

    `causal` promises that S == T and that `mask` hides every key after its query (true without a KV
    cache). `implementation` (see `choose_implementation`): "blocked" is XLA einsums, causal queries
    QUERY_BLOCK at a time, each block over the keys up to its last query only, which skips the hidden
    half of the scores and bounds them to [B, H, QUERY_BLOCK, S] at a time; on the CPU it also takes
    one (batch row, kv head) at a time (`_loop_over_heads`); "xla" and "cudnn" are
    jax.nn.dot_product_attention (cuDNN flash attention on CUDA GPUs, without softcap).
    """
    name, reason = choose_implementation(implementation, q, k, v, softcap, causal=causal)
    _log_choice(name, reason)
    t = q.shape[1]
    if causal and k.shape[1] != t and (name != "blocked" or t > QUERY_BLOCK):
        raise ValueError(f"causal attention needs as many keys as queries: {k.shape[1]} keys, {t} queries")
    if name != "blocked":
        return _attend_jax_nn(q, k, v, mask, bias, causal, scale, name)
    b, _, h, hd = q.shape
    kv = k.shape[2]
    qh = jnp.transpose(q.reshape(b, t, kv, h // kv, hd), (0, 2, 3, 1, 4))  # [B, KV, G, T, hd]
    kh, vh = jnp.swapaxes(k, 1, 2), jnp.swapaxes(v, 1, 2)  # [B, KV, S, hd]
    bias = None if bias is None else bias.astype(jnp.float32).reshape(b, kv, h // kv, 1, -1)
    scale = 1.0 / hd**0.5 if scale is None else scale
    if not causal or t <= QUERY_BLOCK:
        out = _attend(qh, kh, vh, mask[:, :, None], bias, scale, softcap)
    elif _loop_over_heads():
        out = _attend_causal_per_head(qh, kh, vh, mask, bias, scale, softcap)
    else:
        out = _attend_causal(qh, kh, vh, mask[:, :, None], bias, scale, softcap)
    return jnp.transpose(out, (0, 3, 1, 2, 4)).reshape(b, t, h, hd)


def choose_implementation(implementation: Implementation, q: Any, k: Any, v: Any,
                          softcap: float | None = None, platform: str | None = None,
                          compute_capability: str | None = None, causal: bool = True) -> tuple[str, str]:
    """(implementation, reason) that `dot_product_attention` runs for q, k, v (anything with .shape
    [B, T|S, H|KV, hd] and .dtype, e.g. jax.ShapeDtypeStruct).

    "blocked", "xla" and "cudnn" are taken as asked ("xla" and "cudnn" raise ValueError with a softcap).
    "auto" is "cudnn" where cuDNN flash attention supports the call: a CUDA GPU, q, k, v all bfloat16
    or all float16, hd a multiple of 8 up to 128 (256 from compute capability 9.0), no softcap, and
    `causal` (a call with a KV cache is not: it reads keys and values stored for the einsums); else
    "blocked", also on CPU where it beats jax.nn's "xla" (causal B=2, T=1024, H=16, hd=64, float32,
    2 shared cores: blocked 1.2-1.4x faster, best of 20: 97 ms against 137 ms). `platform` ("cpu",
    "cuda", "rocm", "tpu") and `compute_capability` ("9.0") default to the default backend's first device.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, not {implementation!r}")
    if implementation != "auto":
        if softcap is not None and implementation != "blocked":
            raise ValueError(f"softcap is not supported by jax.nn.dot_product_attention (implementation="
                             f"{implementation!r}): use implementation='blocked' or 'auto'")
        return implementation, "requested"
    if softcap is not None:
        return "blocked", "softcap not supported by jax.nn.dot_product_attention"
    if platform is None:
        platform, compute_capability = _platform()
    if platform != "cuda":
        return "blocked", f"no cuDNN on {platform}"
    if not causal:
        return "blocked", "a KV cache: its keys and values are stored as the blocked einsums read them"
    dtypes = {jnp.dtype(x.dtype) for x in (q, k, v)}
    if len(dtypes) != 1 or dtypes - {jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)}:
        return "blocked", f"cuDNN needs q, k, v all bfloat16 or all float16, not {sorted(map(str, dtypes))}"
    hopper = compute_capability is not None and tuple(map(int, compute_capability.split("."))) >= (9, 0)
    max_head = 256 if hopper else 128
    head = q.shape[-1]
    if head % 8 or head > max_head:
        return "blocked", f"cuDNN needs a head size that is a multiple of 8 up to {max_head}, not {head}"
    return "cudnn", "cuDNN flash attention"


@functools.cache
def _platform() -> tuple[str, str | None]:
    """(platform, compute capability or None) of the default backend's first device."""
    device = jax.devices()[0]
    if device.platform != "gpu":
        return device.platform, None
    if "cuda" in device.client.platform_version.lower():
        return "cuda", getattr(device, "compute_capability", None)
    return "rocm", None


_LOGGED: set[tuple[str, str]] = set()


def _log_choice(name: str, reason: str) -> None:
    """Log an attention choice the first time it is made."""
    if (name, reason) not in _LOGGED:
        _LOGGED.add((name, reason))
        logging.info("attention: %s (%s)", name, reason)


def _attend_jax_nn(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, bias: jax.Array | None,
                   causal: bool, scale: float | None, implementation: str) -> jax.Array:
    """`dot_product_attention` through jax.nn.dot_product_attention, which takes the same [B, T, H, hd]
    and [B, S, KV, hd] layout and grouped kv heads, and the mask and bias as they are.

    "xla": scores in float32 (jax promotes them), softmax in float32, the probabilities rounded to
    v's dtype before the value product (the blocked path rounds the unnormalised ones); a fully masked
    row averages all the values, as "blocked". "cudnn": the mask becomes an additive bias of
    -2**41 in q's dtype, summed with `bias` (cast to q's dtype, as HF BLOOM's half-precision ALiBi)
    into [B, H|1, T, S]; `causal` also sets is_causal, exact since the mask already hides those keys,
    which lets the kernel skip them; a fully masked row averages the values up to its own position.
    """
    if implementation == "cudnn" and bias is not None:
        bias = bias.astype(q.dtype)
    return jax.nn.dot_product_attention(q, k, v, bias, mask, scale=scale,
                                        is_causal=causal and implementation == "cudnn",
                                        implementation=implementation)


def _loop_over_heads() -> bool:
    """Whether the blocked causal attention runs one (batch row, kv head) at a time: on the CPU.

    There each block's scores, [G, QUERY_BLOCK, S] for one kv head, stay in the core's cache between the
    score product, the mask, the softmax and the value product; batched over all heads they are [B, H,
    QUERY_BLOCK, S] and go through memory each time. On 2 shared CPU cores (AMD EPYC, float32, old and
    new alternating, best of 7): BLOOM-560m's attention (B = 2, T = 1024, H = 16, hd = 64, ALiBi) 56 ms
    against 102 ms batched; LLaMA-style grouped heads (H = 32, KV = 8, hd = 128) 185 against 254 ms;
    B = 8, T = 256: 29 against 44 ms. Accelerators keep the batched form: a loop of small matmuls would
    leave them idle.
    """
    return _platform()[0] == "cpu"


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, bias: jax.Array | None,
            scale: float, softcap: float | None = None) -> jax.Array:
    """Softmax attention over all the keys given, heads first, with any leading dims (...):
    q [..., G, T, hd] (the G query heads of one kv head), k, v [..., S, hd], mask bool [..., 1, T, S],
    bias float32 [..., G, 1, S] or None. Returns [..., G, T, hd] in v's dtype.

    Both products are batched matmuls with G·T rows (1.3-1.75x faster on 2 CPU cores than contracting
    the [B, T, H, hd] layout in place, at T = 128 and 1024, with and without grouped heads; the same
    numbers bit for bit). The softmax is normalised after the values are summed (over [.., T, hd] rather
    than [.., T, S]), in float32."""
    scores = jnp.einsum("...gtd,...sd->...gts", q, k, preferred_element_type=jnp.float32) * scale
    if softcap is not None:
        scores = jnp.tanh(scores / softcap) * softcap
    if bias is not None:
        scores = scores + bias
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
    total = jnp.sum(weights, axis=-1, keepdims=True)  # [..., G, T, 1]
    out = jnp.einsum("...gts,...sd->...gtd", weights.astype(v.dtype), v, preferred_element_type=jnp.float32)
    return (out / total).astype(v.dtype)


def _attend_causal(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, bias: jax.Array | None,
                   scale: float, softcap: float | None) -> jax.Array:
    """`_attend` with S == T, QUERY_BLOCK queries at a time over the keys up to the block's last query."""
    t = q.shape[-2]
    blocks = []
    for start in range(0, t, QUERY_BLOCK):
        end = min(start + QUERY_BLOCK, t)
        blocks.append(_attend(q[..., start:end, :], k[..., :end, :], v[..., :end, :],
                              mask[..., start:end, :end], None if bias is None else bias[..., :end],
                              scale, softcap))
    return jnp.concatenate(blocks, axis=-2)


def _attend_causal_per_head(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
                            bias: jax.Array | None, scale: float, softcap: float | None) -> jax.Array:
    """`_attend_causal` on q [B, KV, G, T, hd], k, v [B, KV, T, hd], mask [B, 1, T, T], bias [B, KV, G,
    1, T] or None, in a loop over the B·KV (batch row, kv head) pairs (see `_loop_over_heads`)."""
    b, kv, g, t, hd = q.shape
    rows = jnp.arange(b * kv) // kv  # the batch row of each pair, for its mask

    def one(pair):
        q, k, v, bias, row = pair
        return _attend_causal(q, k, v, jax.lax.dynamic_index_in_dim(mask, row, keepdims=False), bias,
                              scale, softcap)

    pairs = (q.reshape(b * kv, g, t, hd), k.reshape(b * kv, t, hd), v.reshape(b * kv, t, hd),
             None if bias is None else bias.reshape(b * kv, g, 1, t), rows)
    return jax.lax.map(one, pairs).reshape(b, kv, g, t, hd)


MODES = ("zero", "set", "add", "scale")


@flax.struct.dataclass
class Intervention:
    """An edit of MLP neurons (the activations down_proj reads: BLOOM's GELU output, LLaMA's
    act(gate) * up), made where the neuron hook sits, before anything reads or pools them.

    mask bool [M, F] (every example) or [B, M, F] (one per example); where it is True the neuron
    becomes 0 ("zero"), values ("set"), neuron + values ("add") or neuron * values ("scale"), and
    elsewhere stays as it is. values: float of the mask's shape (None for "zero"). A pytree whose mode
    is static: one compile per mode.
    """

    mask: jax.Array
    mode: str = flax.struct.field(pytree_node=False, default="zero")
    values: jax.Array | None = None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"intervention mode {self.mode!r}: one of {MODES}")
        if (self.values is None) != (self.mode == "zero"):
            raise ValueError(f"an intervention of mode {self.mode!r} " +
                             ("takes no values" if self.mode == "zero" else "needs values of the mask's shape"))

    def apply(self, h: jax.Array) -> jax.Array:
        """One layer's edit, mask and values [B or 1, F], on its neurons h [B, T, F]."""
        mask = self.mask[:, None, :]
        if self.mode == "zero":
            return jnp.where(mask, jnp.zeros((), h.dtype), h)
        values = self.values[:, None, :].astype(h.dtype)
        edited = {"set": lambda: jnp.broadcast_to(values, h.shape), "add": lambda: h + values,
                  "scale": lambda: h * values}[self.mode]()
        return jnp.where(mask, edited, h)


def as_intervention(neuron_mask: Any = None, intervention: Intervention | None = None) -> Intervention | None:
    """What a call edits: `intervention`, or `neuron_mask` (True = zeroed) as the "zero" shorthand;
    ValueError when both are given. The mask becomes bool and the values float32."""
    if neuron_mask is not None and intervention is not None:
        raise ValueError("give neuron_mask (zeroing) or intervention, not both")
    if intervention is None:
        return None if neuron_mask is None else Intervention(jnp.asarray(neuron_mask).astype(bool))
    values = None if intervention.values is None else jnp.asarray(intervention.values, jnp.float32)
    return intervention.replace(mask=jnp.asarray(intervention.mask).astype(bool), values=values)


def layer_interventions(intervention: Intervention | None) -> Intervention | None:
    """An intervention over [M, F] or [B, M, F] -> its arrays [M, B or 1, F], the layer axis first for
    the scan."""
    if intervention is None:
        return None
    return jax.tree.map(lambda a: a[:, None, :] if a.ndim == 2 else jnp.swapaxes(a, 0, 1), intervention)


class NeuronHook(nn.Module):
    """Edits the neurons (an Intervention's layer slice) and exposes them with `sow`, as the layer's
    MLP sees them.

    `capture="pooled"` sows the float32 mean over each sequence's real tokens, [B, F]; `"full"` sows
    [B, T, F]; `"active"` sows, per neuron, the number of real tokens where the activation function's
    output is > 0 (LAPE's counts), [B, F]. With a token mask per packed sequence ([B, P, T], see
    `Layout.packed`) "pooled" and "active" reduce over each sequence's tokens instead: [B, P, F], one
    einsum over the mask (the layer runs once for all P). Under the layer scan these stack to [M, B, ...].
    """

    capture: Capture = "none"

    @nn.compact
    def __call__(self, h: jax.Array, edit: Intervention | None, token_mask: jax.Array,
                 activation: jax.Array | None = None) -> jax.Array:
        """h [B, T, F]; edit: the layer's slice of `layer_interventions(...)` or None; token_mask
        [B, T] or [B, P, T] (`Layout.token_mask`); activation [B, T, F]: the activation function's
        output where it differs from h (LLaMA's SiLU(gate)), else None."""
        if edit is not None:
            h = edit.apply(h)
        weights = token_mask.astype(jnp.float32)
        reduce = "btf,bpt->bpf" if weights.ndim == 3 else "btf,bt->bf"
        if self.capture == "full":
            self.sow("intermediates", NEURONS, h)
        elif self.capture == "pooled":
            count = jnp.maximum(weights.sum(axis=-1), 1.0)[..., None]
            pooled = jnp.einsum(reduce, h, weights, preferred_element_type=jnp.float32) / count
            self.sow("intermediates", NEURONS, pooled)
        elif self.capture == "active":
            active = (h if activation is None else activation) > 0
            self.sow("intermediates", NEURONS, jnp.einsum(reduce, active.astype(jnp.float32), weights))
        return h


def sliding_layers(window: int | None, layers: tuple[bool, ...] | None, num_layers: int) -> np.ndarray | None:
    """bool [M]: which layers attend through a sliding `window` (`layers`: one flag per layer, None: every
    layer); None when none does (no window, or no sliding layer)."""
    if window is None:
        return None
    slides = np.ones(num_layers, bool) if layers is None else np.asarray(layers)
    if slides.shape != (num_layers,):
        raise ValueError(f"{len(slides)} layer types for {num_layers} layers")
    return slides if slides.any() else None


def layer_stack(block: type[nn.Module], num_layers: int) -> type[nn.Module]:
    """`block` scanned over layers: params and sown intermediates stack on a leading [M] axis.

    The block's call is `(hidden, (layer_edit, layer, ...), layout) -> (hidden, new)`: `layer_edit` is the
    layer's slice of `layer_interventions(...)`, `layer` its index into the KV cache (`Layout.layers`;
    either may be None), `new` what its attention's `layout.update(layer, k, v)` returned (the new keys
    and values, which `Layout.store` writes), any further entries other per-layer inputs of the family
    (LLaMA's sliding flag, [M] -> a scalar), and the Layout is shared by every layer.
    """
    return nn.scan(
        block,
        variable_axes={"params": 0, "intermediates": 0},
        split_rngs={"params": True},
        in_axes=(0, nn.broadcast),
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: LAYERS},  # the stacked params' leading logical axis
    )


# --- parameters with logical axes ------------------------------------------------------------------
# Every parameter names its axes where it is created (nn.with_logical_partitioning);
# lingua_jax.sharding maps the names to mesh axes, so a family needs no entry there.
VOCAB, EMBED, HEADS, KV_HEADS, MLP, HEAD_DIM, LAYERS = "vocab", "embed", "heads", "kv_heads", "mlp", "head_dim", "layers"


def dense(features: int, axes: tuple[str, str], dtype: Any, name: str | None = None, bias: bool = False) -> nn.Dense:
    """nn.Dense whose kernel [in, out] has the logical `axes` (in, out) and its bias [out] the second.
    Heads are flattened into their axis: q_proj's kernel is [D, H * hd] with axes (EMBED, HEADS)."""
    return nn.Dense(features, use_bias=bias, dtype=dtype, param_dtype=dtype, name=name,
                    kernel_init=nn.with_logical_partitioning(nn.linear.default_kernel_init, axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]))


def embedding(vocab_size: int, features: int, dtype: Any, name: str | None = None) -> nn.Embed:
    """nn.Embed whose table [V, D] has the logical axes (VOCAB, EMBED)."""
    return nn.Embed(vocab_size, features, dtype=dtype, param_dtype=dtype, name=name,
                    embedding_init=nn.with_logical_partitioning(nn.linear.default_embed_init, (VOCAB, EMBED)))


def vocab_projection(hidden: jax.Array, table: jax.Array, vocab_axis: int, dtype: Any, start: Any = 0,
                     size: int | None = None) -> jax.Array:
    """hidden [..., D] -> [..., size]: the LM head's outputs for vocabulary entries [start, start + size)
    (size None: all V), through `table`, the tied word embeddings [V, D] (vocab_axis 0) or an untied
    head's kernel [D, V] (vocab_axis 1), in `dtype` as nn.Embed.attend and nn.Dense compute. `start` may
    be traced; the slice is read in place, without copying the table."""
    if size is not None:
        table = jax.lax.dynamic_slice_in_dim(table, start, size, vocab_axis)
    hidden, table = nn.dtypes.promote_dtype(hidden, table, dtype=dtype)
    return jax.lax.dot_general(hidden, table, (((hidden.ndim - 1,), (1 - vocab_axis,)), ((), ())))


class Head(nn.Module):
    """An untied LM head: kernel [D, V] with the logical axes (EMBED, VOCAB), no bias (the parameters of
    `dense(V, (EMBED, VOCAB), dtype)`); called on hidden [..., D] with an optional vocabulary slice, as
    `vocab_projection`."""

    vocab_size: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden: jax.Array, start: Any = 0, size: int | None = None) -> jax.Array:
        kernel = self.param("kernel", logical(nn.linear.default_kernel_init, EMBED, VOCAB),
                            (hidden.shape[-1], self.vocab_size), self.dtype)
        return vocab_projection(hidden, kernel, 1, self.dtype, start, size)


def logical(init: Any, *axes: str) -> Any:
    """`init` for a parameter whose axes are the logical `axes` (norm weights: `logical(ones, EMBED)`)."""
    return nn.with_logical_partitioning(init, axes)


def logical_param_shapes(module: nn.Module) -> Any:
    """The params of a CausalLM `module` as ShapeDtypeStructs (nothing allocated), each wrapped in
    nn.LogicallyPartitioned with its logical axes (`nn.get_partition_spec` reads them, `nn.meta.unbox`
    drops them)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(module.init, jax.random.key(0), ids, jnp.ones_like(ids))["params"]


def init_params(module: nn.Module, key: jax.Array) -> Any:
    """Random params of a CausalLM `module` (Flax's initialisers), as plain arrays."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return nn.meta.unbox(module.init(key, ids, jnp.ones_like(ids))["params"])


def collect_neurons(intermediates: dict[str, Any], capture: Capture) -> jax.Array | None:
    """The stacked sown neurons [M, B, ...] with the layer axis moved: "full" [M, B, T, F] -> [B, M, T, F];
    "pooled"/"active" [M, B, F] -> [B, M, F], or per packed sequence [M, B, P, F] -> [B, P, M, F]
    (None when nothing was captured)."""
    if capture == "none":
        return None
    found = [v for path, v in jax.tree_util.tree_leaves_with_path(intermediates)
             if any(getattr(p, "key", None) == NEURONS for p in path)]
    if len(found) != 1:
        raise RuntimeError(f"expected one sown '{NEURONS}' entry, found {len(found)}")
    return jnp.swapaxes(found[0], 0, 1) if capture == "full" else jnp.moveaxis(found[0], 0, -2)


class CausalLM(nn.Module):
    """The call contract shared by every family's ...ForCausalLM.

    Subclasses set up their backbone (returned by `backbone()`, with `__call__(input_ids, layout,
    intervention, layers, final_norm) -> (hidden, new keys and values)` (`layer_stack`) and
    `attend(hidden, start, size)`, the tied head's `vocab_projection`) and, when the config unties the
    head, `lm_head` (a `Head`); a family whose logits are scaled or capped overrides `transform_logits`.

    `__call__(input_ids [B, T], attention_mask [B, T], intervention (an Intervention over [M, F] or
    [B, M, F], or None), output)` returns logits [B, T, V] ("logits"), the final normed hidden states
    [B, T, D] ("hidden") or None ("none"); with `capture` "pooled", "active" or "full" the neurons are
    sown in "intermediates" (see NeuronHook). `lingua_jax.lm.LM` is what calls it.
    """

    def backbone(self) -> nn.Module:
        raise NotImplementedError

    def __call__(self, input_ids, attention_mask=None, intervention=None, output: Output = "logits",
                 cache=None, cache_index=None, segment_ids=None, num_segments: int = 0):
        """With a KV cache (k, v) (`Layout.empty_cache`), `attention_mask` is the key mask [B, S]
        over all slots, the T new tokens fill slots [cache_index, cache_index + T), and the result is
        (output, updated cache). Packed rows instead: `segment_ids` int [B, T] (0 = padding, 1..P the
        sequences of a row; `attention_mask` unused), no cache, and with `num_segments` P > 0 the
        neurons pool per sequence (`Layout.packed`)."""
        if segment_ids is not None:
            layout = Layout.packed(segment_ids, num_segments)
        else:
            layout = Layout.build(attention_mask, input_ids.shape[1], cache_index, cache)
        hidden, new = self.backbone()(input_ids, layout, layer_interventions(intervention),
                                      layout.layers(), final_norm=output != "none")
        cache = None if cache is None else layout.store(new)
        if output == "logits":
            hidden = self.logits(hidden)
        elif output == "none":
            hidden = None
        return hidden if cache is None else (hidden, cache)

    def logits(self, hidden: jax.Array, start: Any = 0, size: int | None = None) -> jax.Array:
        """Final normed hidden states [..., D] -> logits [..., V], or [..., size]: those of vocabulary
        entries [start, start + size) (`start` may be traced; scoring walks the vocabulary in blocks)."""
        head = self.backbone().attend if self.spec.tie_word_embeddings else self.lm_head
        return self.transform_logits(head(hidden, start, size))

    def transform_logits(self, logits: jax.Array) -> jax.Array:
        """The family's elementwise map from the head's outputs to its logits (none here)."""
        return logits
