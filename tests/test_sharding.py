"""Forwards on (data, model) meshes of 8 fake CPU devices equal the single-device results."""

import jax
import numpy as np
import pytest

import lingua_jax as lj
from lingua_jax import evaluate, metrics, sharding

MESHES = [(8, 1), (4, 2), (2, 4), (1, 8)]
VOCAB = 128  # divides every model axis


def assert_close(actual, desired, tol=1e-5):
    """Max deviation within `tol` of the largest value: reductions split across devices add in another
    order, and with these large random weights float32 rounding grows through the layers."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert np.abs(actual - desired).max() <= tol * np.abs(desired).max()


def batch(seed=0):
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, VOCAB, (8, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[:3, :4] = 0  # left padding
    mask[5:, 6:] = 0  # right padding
    return ids, mask


TOKENS = np.random.RandomState(2).randint(0, VOCAB, 4 * 16)  # a stream of four 16-token windows


def regions_of(pooled):
    """Key regions of pooled activations [8, M, F] read as 4 languages x 2 sentences (tau = 0.05)."""
    return metrics.key_regions(pooled, np.repeat(np.arange(4), 2), threshold=0.05)


@pytest.fixture(scope="module", params=["bloom_mesh", "llama_mesh"])
def single(request, checkpoint):
    path = checkpoint(request.param, VOCAB)
    lm = lj.load_pretrained(path)
    ids, mask = batch()
    neuron_mask = np.random.RandomState(1).rand(8, lm.num_layers, lm.num_neurons) < 0.3
    ppl = evaluate.perplexity(lm, TOKENS, 16, neuron_mask[0], batch_size=8)
    return path, lm(ids, mask, capture="pooled"), lm(ids, mask, neuron_mask=neuron_mask), neuron_mask, ppl


@pytest.mark.parametrize("shape", MESHES)
def test_mesh_forward_equals_single_device(single, shape):
    assert len(jax.devices()) == 8
    path, reference, masked, neuron_mask, ppl = single
    lm = lj.load_pretrained(path, mesh=sharding.make_mesh(shape))
    ids, mask = batch()
    out = lm(ids, mask, capture="pooled")
    assert_close(out.logits, reference.logits)
    assert_close(out.neurons, reference.neurons)
    assert_close(lm.pooled(ids, mask), reference.neurons)
    assert_close(lm(ids, mask, neuron_mask=neuron_mask).logits, masked.logits)
    assert abs(evaluate.perplexity(lm, TOKENS, 16, neuron_mask[0], batch_size=8) / ppl - 1) < 1e-5
    np.testing.assert_array_equal(regions_of(out.neurons), regions_of(reference.neurons))
    up = lm.params["transformer"]["h"]["mlp"]["dense_h_to_4h"] if lm.family == "bloom" else \
        lm.params["model"]["layers"]["mlp"]["up_proj"]
    assert up["kernel"].sharding.spec == jax.sharding.PartitionSpec(None, None, "model")
    assert len(up["kernel"].addressable_shards[0].data.shape) == 3
    assert up["kernel"].addressable_shards[0].data.shape[-1] == lm.num_neurons // shape[1]


def test_fsdp_also_splits_over_data(checkpoint):
    lm = lj.load_pretrained(checkpoint("bloom_mesh", VOCAB), mesh=sharding.make_mesh((2, 4)), fsdp=True)
    qkv = lm.params["transformer"]["h"]["self_attention"]["query_key_value"]["kernel"]
    assert qkv.sharding.spec == jax.sharding.PartitionSpec(None, "data", "model")
    reference = lj.load_pretrained(checkpoint("bloom_mesh", VOCAB))
    ids, mask = batch()
    assert_close(lm.pooled(ids, mask), reference.pooled(ids, mask))


def test_indivisible_heads_and_batches_are_clear_errors(checkpoint):
    with pytest.raises(ValueError, match="num_heads=6 is not divisible by the mesh's model axis"):
        lj.load_pretrained(checkpoint("bloom", 128), mesh=sharding.make_mesh((2, 4)))
    lm = lj.load_pretrained(checkpoint("bloom_mesh", VOCAB), mesh=sharding.make_mesh((4, 2)))
    with pytest.raises(ValueError, match="batch of 6 rows does not divide over the mesh's data axis"):
        lm.place(np.zeros((6, 5), np.int32))  # forwards round such a batch up (test_forward_service)
    with pytest.raises(ValueError, match="does not fit 8 devices"):
        sharding.make_mesh((3, 2))


def test_orbax_checkpoint_restores_onto_another_mesh(checkpoint, tmp_path):
    saved_on = lj.load_pretrained(checkpoint("llama_mesh", VOCAB), mesh=sharding.make_mesh((2, 4)))
    lj.save_pretrained(saved_on, tmp_path / "orbax", format="orbax")
    assert not (tmp_path / "orbax" / "model.safetensors").exists()
    restored = lj.load_pretrained(tmp_path / "orbax", mesh=sharding.make_mesh((4, 2)))
    kernel = restored.params["model"]["layers"]["mlp"]["up_proj"]["kernel"]
    assert kernel.sharding.mesh.shape == {"data": 4, "model": 2}
    for a, b in zip(jax.tree_util.tree_leaves(restored.params), jax.tree_util.tree_leaves(saved_on.params)):
        np.testing.assert_array_equal(a, b)
    ids, mask = batch()
    np.testing.assert_array_equal(lj.load_pretrained(tmp_path / "orbax").pooled(ids, mask),
                                  lj.load_pretrained(checkpoint("llama_mesh", VOCAB)).pooled(ids, mask))
    assert restored.source["path"] == str((tmp_path / "orbax").resolve())


def test_generation_and_metrics_on_a_mesh(checkpoint):
    from jax.sharding import NamedSharding, PartitionSpec

    from lingua_jax import generation, metrics

    path = checkpoint("llama_mesh", VOCAB)
    mesh = sharding.make_mesh((2, 4))
    single, sharded = lj.load_pretrained(path), lj.load_pretrained(path, mesh=mesh)
    ids, _ = batch(3)
    mask = np.ones_like(ids)
    mask[:3, :4] = 0  # left padding, as generation needs
    np.testing.assert_array_equal(generation.greedy(sharded, ids, mask, 6), generation.greedy(single, ids, mask, 6))

    rng = np.random.RandomState(0)
    acts = rng.rand(9 * 8, 2, 128).astype(np.float32)
    lang, sem = np.repeat(np.arange(9), 8), np.tile(np.arange(8), 9)
    acts[lang == 3, 1, :5] += 2.0  # planted language neurons
    split = jax.device_put(acts, NamedSharding(mesh, PartitionSpec(None, None, "model")))
    np.testing.assert_array_equal(metrics.key_regions(split, lang), metrics.key_regions(acts, lang))
    assert metrics.key_regions(split, lang)[3, 1, :5].all()
    assert_close(metrics.contribution_scores(split, lang), metrics.contribution_scores(acts, lang))
    assert abs(metrics.sads(metrics.similarity(split), lang, sem)
               - metrics.sads(metrics.similarity(acts), lang, sem)) < 1e-6


@pytest.mark.parametrize("name", ["bloom_mesh", "llama_mesh", "qwen3", "mistral", "gemma2", "gemma3", "cohere"])
@pytest.mark.parametrize("fsdp", [False, True])
def test_every_family_shards_by_the_logical_axes_its_parameters_declare(name, fsdp):
    """No family has an entry in sharding.py: its parameters' logical axes decide. On a (2, 4) mesh the
    projections into heads and neurons split their outputs over "model", the projections out of them
    their inputs, the embedding its vocabulary; kv heads (2 of them in most of these) and a vocabulary
    (101) that do not divide 4 are replicated; FSDP puts the hidden size on "data"."""
    import torch_reference as ref
    from jax.sharding import PartitionSpec as P

    config_cls, kwargs, _ = ref.CHECKPOINTS[name]
    vocab = VOCAB if name.endswith("_mesh") else ref.VOCAB
    module, _ = lj.lm.build_module(config_cls(vocab_size=vocab, **kwargs))
    spec = module.spec
    shardings = sharding.param_shardings(module, sharding.make_mesh((2, 4)), fsdp=fsdp)
    specs = {jax.tree_util.keystr(k): s.spec for k, s in jax.tree_util.tree_leaves_with_path(shardings)}
    embed, vocab_axis = ("data" if fsdp else None), ("model" if vocab % 4 == 0 else None)
    kv = "model" if getattr(spec, "num_kv_heads", spec.num_heads) % 4 == 0 else None
    if name.startswith("bloom"):
        stack = "['transformer']['h']"
        expected = {"['self_attention']['query_key_value']['kernel']": P(None, embed, "model"),
                    "['self_attention']['dense']['kernel']": P(None, "model", embed),
                    "['mlp']['dense_h_to_4h']['kernel']": P(None, embed, "model"),
                    "['mlp']['dense_4h_to_h']['kernel']": P(None, "model", embed),
                    "['input_layernorm']['scale']": P(None, embed)}
        table = "['transformer']['word_embeddings']['embedding']"
    else:
        stack = "['model']['layers']"
        expected = {"['self_attn']['q_proj']['kernel']": P(None, embed, "model"),
                    "['self_attn']['k_proj']['kernel']": P(None, embed, kv),
                    "['self_attn']['o_proj']['kernel']": P(None, "model", embed),
                    "['mlp']['gate_proj']['kernel']": P(None, embed, "model"),
                    "['mlp']['down_proj']['kernel']": P(None, "model", embed),
                    "['input_layernorm']['weight']": P(None, embed)}
        if spec.qk_norm == "per_head":
            expected["['self_attn']['q_norm']['weight']"] = P(None, "model", None)
            expected["['self_attn']['k_norm']['weight']"] = P(None, kv, None)
        elif spec.qk_norm == "shared":
            expected["['self_attn']['q_norm']['weight']"] = P(None, None)
        table = "['model']['embed_tokens']['embedding']"
    for path, want in expected.items():
        assert specs[stack + path] == want, path
    assert specs[table] == P(vocab_axis, embed)
    if "['lm_head']['kernel']" in specs:
        assert specs["['lm_head']['kernel']"] == P(embed, vocab_axis)


def test_a_parameter_without_logical_axes_is_a_clear_error():
    import types

    import flax.linen as nn
    import jax.numpy as jnp

    class Bare(nn.Module):
        spec: types.SimpleNamespace

        @nn.compact
        def __call__(self, input_ids, attention_mask):
            return nn.Dense(4, name="proj")(jnp.ones((1, 4)))

    spec = types.SimpleNamespace(num_heads=4, num_neurons=8, vocab_size=8, hidden_size=4)
    with pytest.raises(TypeError, match=r"parameter \['proj'\]\['(bias|kernel)'\] declares no logical axes"):
        sharding.param_shardings(Bare(spec), sharding.make_mesh((2, 4)))
