"""common.dot_product_attention: jax.nn.dot_product_attention ("xla") against the blocked XLA path, and the
"auto" choice (choose_implementation), on the CPU in float32."""

import logging
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lingua_jax.models import bloom, common

B, T, HD = 2, 200, 16  # T > QUERY_BLOCK: several causal blocks
assert T > common.QUERY_BLOCK


def qkv(t, s, h, kv, hd=HD, b=B, dtype=jnp.float32, seed=0):
    """q [b, t, h, hd], k, v [b, s, kv, hd]."""
    kq, kk, kv_ = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(kq, (b, t, h, hd), dtype), jax.random.normal(kk, (b, s, kv, hd), dtype),
            jax.random.normal(kv_, (b, s, kv, hd), dtype))


def causal_mask(key_mask, t, index=0):
    """bool [B, 1, t, S]: query slot index + i sees real key slots j <= index + i (as Layout.build)."""
    key_mask = jnp.asarray(key_mask, bool)
    slots = index + jnp.arange(t)[:, None] >= jnp.arange(key_mask.shape[1])[None, :]
    return slots[None, None] & key_mask[:, None, None, :]


def padding(kind, t=T):
    """[B, t] key mask: row 0 all real, row 1 with 37 padding tokens on the `kind` side."""
    row = np.arange(t) >= 37 if kind == "left" else np.arange(t) < t - 37
    return np.stack([np.ones(t, bool), row])


def blocked_attention(*args, per_head: bool, **kwargs):
    """The "blocked" implementation, its causal blocks batched over all heads or one (batch row, kv head)
    at a time (the CPU's choice), whichever this machine would take."""
    with mock.patch.object(common, "_loop_over_heads", lambda: per_head):
        return common.dot_product_attention(*args, implementation="blocked", **kwargs)


def compare(mask, *args, **kwargs):
    """"xla" == "blocked", with and without the loop over heads, on every query that sees a key; all
    finite everywhere."""
    xla = common.dot_product_attention(*args, implementation="xla", **kwargs)
    seen = np.asarray(mask).any(-1)[:, 0]  # [B, T]
    for per_head in (False, True):
        blocked = blocked_attention(*args, per_head=per_head, **kwargs)
        assert xla.shape == blocked.shape and xla.dtype == blocked.dtype
        assert np.isfinite(np.asarray(blocked, np.float32)).all() and np.isfinite(np.asarray(xla, np.float32)).all()
        np.testing.assert_allclose(np.asarray(xla)[seen], np.asarray(blocked)[seen], atol=1e-5, rtol=1e-5)
    return blocked


@pytest.mark.parametrize("heads", [(8, 2), (4, 4)], ids=["gqa", "mha"])
def test_causal_no_padding(heads):
    q, k, v = qkv(T, T, *heads)
    mask = causal_mask(np.ones((B, T)), T)
    compare(mask, q, k, v, mask, causal=True)


@pytest.mark.parametrize("kind", ["left", "right"])
def test_padding(kind):
    q, k, v = qkv(T, T, 8, 2)
    mask = causal_mask(padding(kind), T)
    compare(mask, q, k, v, mask, causal=True)


def test_packed_segments():
    segments = np.zeros((B, T), int)  # 0 = padding
    segments[0, :60], segments[0, 60:150], segments[0, 150:] = 1, 2, 3
    segments[1, :130], segments[1, 130:190] = 1, 2
    same = (segments[:, :, None] == segments[:, None, :]) & (segments[:, None, :] > 0)
    mask = causal_mask(np.ones((B, T)), T) & same[:, None]
    q, k, v = qkv(T, T, 8, 2)
    compare(mask, q, k, v, mask, causal=True)


def test_alibi():
    key_mask = padding("left")
    mask = causal_mask(key_mask, T)
    positions = common.positions_from_mask(jnp.asarray(key_mask))
    alibi = jnp.asarray(bloom.alibi_slopes(8))[None, :, None, None] * positions[:, None, None, :].astype(jnp.float32)
    q, k, v = qkv(T, T, 8, 8)
    compare(mask, q, k, v, mask, bias=alibi, causal=True)


def test_sliding_window():
    window = 16
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    mask = causal_mask(padding("left"), T) & (j > i - window)[None, None]
    q, k, v = qkv(T, T, 8, 2)
    compare(mask, q, k, v, mask, causal=True)


@pytest.mark.parametrize("t", [1, 5])
def test_kv_cache_decode(t):
    s, index = 37, 30  # t new tokens in slots [index, index + t) of a 37-slot cache, 4 left-padding slots
    key_mask = np.arange(s) >= 4
    key_mask = np.stack([np.ones(s, bool), key_mask & (np.arange(s) < index + t)])
    mask = causal_mask(key_mask, t, index)
    q, k, v = qkv(t, s, 8, 2)
    compare(mask, q, k, v, mask)


def test_scale():
    mask = causal_mask(padding("right"), T)
    q, k, v = qkv(T, T, 8, 2)
    compare(mask, q, k, v, mask, causal=True, scale=0.3)


def test_fully_masked_rows_finite():
    """Padding queries see no key at all (left padding, several causal blocks): finite outputs everywhere,
    also with a bias and under jit."""
    key_mask = np.stack([np.arange(T) >= 150, np.arange(T) >= 10])
    mask = causal_mask(key_mask, T)
    assert not np.asarray(mask).any(-1).all()
    q, k, v = qkv(T, T, 8, 2)
    bias = jnp.linspace(-3.0, 3.0, T)[None, None, None, :] * jnp.ones((B, 8, 1, 1))
    for name in ("auto", "blocked", "xla"):
        attend = jax.jit(lambda *a, name=name: common.dot_product_attention(*a, causal=True, implementation=name))
        for out in (attend(q, k, v, mask), attend(q, k, v, mask, bias)):
            assert np.isfinite(np.asarray(out)).all(), name


def test_bfloat16_xla_softmax_in_float32():
    """bfloat16 inputs: "xla" (float32 scores and softmax) stays within bfloat16 rounding of "blocked"."""
    q, k, v = qkv(T, T, 8, 2, dtype=jnp.bfloat16)
    mask = causal_mask(padding("right"), T)
    blocked, xla = (common.dot_product_attention(q, k, v, mask, causal=True, implementation=name)
                    for name in ("blocked", "xla"))
    assert xla.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(xla, np.float32), np.asarray(blocked, np.float32), atol=2e-2)


def test_softcap():
    q, k, v = qkv(T, T, 8, 2)
    mask = causal_mask(padding("left"), T)
    with pytest.raises(ValueError, match="softcap"):
        common.dot_product_attention(q, k, v, mask, causal=True, softcap=5.0, implementation="xla")
    with pytest.raises(ValueError, match="softcap"):
        common.dot_product_attention(q, k, v, mask, causal=True, softcap=5.0, implementation="cudnn")
    auto, blocked = (common.dot_product_attention(q, k, v, mask, causal=True, softcap=5.0, implementation=name)
                     for name in ("auto", "blocked"))
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(blocked))
    batched = blocked_attention(q, k, v, mask, causal=True, softcap=5.0, per_head=False)
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(batched), atol=1e-5, rtol=1e-5)
    uncapped = common.dot_product_attention(q, k, v, mask, causal=True, implementation="blocked")
    assert not np.allclose(np.asarray(blocked), np.asarray(uncapped), atol=1e-3)


def test_auto_is_blocked_on_cpu(monkeypatch, caplog):
    q, k, v = qkv(T, T, 8, 2)
    mask = causal_mask(padding("left"), T)
    monkeypatch.setattr(common, "_LOGGED", set())
    with caplog.at_level(logging.INFO, logger="absl"):
        auto = common.dot_product_attention(q, k, v, mask, causal=True)
        common.dot_product_attention(q, k, v, mask, causal=True)
    assert [r.getMessage() for r in caplog.records if r.getMessage().startswith("attention:")] == [
        "attention: blocked (no cuDNN on cpu)"]
    blocked = common.dot_product_attention(q, k, v, mask, causal=True, implementation="blocked")
    np.testing.assert_array_equal(np.asarray(auto), np.asarray(blocked))


def test_blocked_loops_over_heads_on_the_cpu_only(monkeypatch):
    """On the CPU the blocked causal attention is one loop over the B·KV (batch row, kv head) pairs; on
    an accelerator (platform patched) it is batched, with no loop; short or non-causal calls never loop."""
    q, k, v = qkv(T, T, 8, 2)
    mask = causal_mask(padding("left"), T)
    hlo = lambda t=T, causal=True: jax.jit(lambda *a: common.dot_product_attention(
        *a, causal=causal, implementation="blocked")).lower(q[:, :t], k[:, :t], v[:, :t], mask[..., :t, :t]).as_text()
    assert common._loop_over_heads()
    assert "stablehlo.while" in hlo() and f"tensor<{B * 2}x" in hlo()
    assert "stablehlo.while" not in hlo(t=common.QUERY_BLOCK) and "stablehlo.while" not in hlo(causal=False)
    monkeypatch.setattr(common, "_platform", lambda: ("tpu", None))
    assert not common._loop_over_heads() and "stablehlo.while" not in hlo()


def spec(hd=64, dtype=jnp.bfloat16, kv_dtype=None):
    """q, k, v shapes (H=8, KV=2) for choose_implementation."""
    q = jax.ShapeDtypeStruct((B, T, 8, hd), dtype)
    k = jax.ShapeDtypeStruct((B, T, 2, hd), kv_dtype or dtype)
    return q, k, k


@pytest.mark.parametrize("args, kwargs, expected", [
    (spec(), {}, "cudnn"),
    (spec(dtype=jnp.float16), {}, "cudnn"),
    (spec(dtype=jnp.float32), {}, "blocked"),
    (spec(kv_dtype=jnp.float32), {}, "blocked"),
    (spec(hd=100), {}, "blocked"),
    (spec(hd=256), {}, "blocked"),
    (spec(hd=256), {"compute_capability": "9.0"}, "cudnn"),
    (spec(), {"softcap": 50.0}, "blocked"),
    (spec(), {"causal": False}, "blocked"),
    (spec(), {"platform": "rocm"}, "blocked"),
    (spec(), {"platform": "tpu"}, "blocked"),
    (spec(), {"platform": "cpu"}, "blocked"),
])
def test_choose_implementation_auto(args, kwargs, expected):
    kwargs = {"platform": "cuda", "compute_capability": "8.0"} | kwargs
    name, reason = common.choose_implementation("auto", *args, **kwargs)
    assert name == expected and reason
    if "softcap" in kwargs:
        assert reason == "softcap not supported by jax.nn.dot_product_attention"


def test_choose_implementation_explicit():
    assert common.choose_implementation("auto", *spec()) == ("blocked", "no cuDNN on cpu")  # this machine
    for name in ("blocked", "xla", "cudnn"):
        assert common.choose_implementation(name, *spec(), platform="cpu") == (name, "requested")
    assert common.choose_implementation("blocked", *spec(), softcap=50.0)[0] == "blocked"
    with pytest.raises(ValueError, match="softcap"):
        common.choose_implementation("cudnn", *spec(), softcap=50.0, platform="cuda")
    with pytest.raises(ValueError, match="flash"):
        common.choose_implementation("flash", *spec())


@pytest.mark.parametrize("name", ["bloom", "mistral", "gemma3", "cohere"])
def test_models_take_the_implementation_they_are_loaded_with(checkpoint, name):
    """load_pretrained(..., attention="xla") runs jax.nn.dot_product_attention in every layer: the same
    logits as the default (blocked on CPU) with ALiBi, sliding windows, two rotary embeddings and left
    padding, and a different compiled program."""
    import lingua_jax as lj
    from test_models import padded_batch, valid

    path = checkpoint(name)
    blocked, xla = lj.load_pretrained(path), lj.load_pretrained(path, attention="xla")
    assert (blocked.module.attention, xla.module.attention) == ("auto", "xla")
    ids, mask = padded_batch(0, (40, 23, 1, 30), "left")
    np.testing.assert_allclose(valid(np.asarray(xla(ids, mask).logits), mask),
                               valid(np.asarray(blocked(ids, mask).logits), mask), atol=1e-5, rtol=0)
    lowered = lambda lm: jax.jit(lambda p, i: lm.module.apply({"params": p}, i, jnp.ones_like(i))).lower(
        lm.params, jnp.asarray(ids)).as_text()
    assert lowered(xla) != lowered(blocked)


def test_a_softcapped_model_refuses_a_kernel_without_softcap(checkpoint):
    import lingua_jax as lj

    with pytest.raises(ValueError, match="softcap is not supported"):  # at load: building the params traces
        lj.load_pretrained(checkpoint("gemma2"), attention="xla")
