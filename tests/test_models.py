"""Flax BLOOM and LLaMA against PyTorch transformers on tiny random checkpoints (float32, 1e-4)."""

import jax
import numpy as np
import pytest
import torch

import lingua_jax as lj
import torch_reference as ref

ATOL = 1e-4
ALL = list(ref.CHECKPOINTS)


def padded_batch(seed: int, lengths=(7, 4, 1, 6), side: str = "right"):
    """Random token ids [B, T] and attention mask [B, T], T = max(lengths), padded on `side`."""
    rng = np.random.RandomState(seed)
    t = max(lengths)
    ids = rng.randint(0, ref.VOCAB, (len(lengths), t)).astype(np.int32)
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        if side == "right":
            mask[b, :n] = 1
        else:
            mask[b, t - n:] = 1
    return ids, mask


def valid(x, mask):
    """Rows of x [B, T, ...] at real tokens, concatenated: [sum(mask), ...]."""
    return np.asarray(x)[np.asarray(mask).astype(bool)]


def assert_edit_matches(out, torch_model, ids, mask, **edit):
    """`out` (capture="full") has the logits and neurons PyTorch gives under the same edit (`neuron_mask`
    or `edit`, see torch_reference.neuron_hooks), and the edit changes PyTorch's logits. Returns our
    neurons [B, T, M, F]."""
    logits, neurons = ref.forward(torch_model, ids, mask, **edit)
    unedited, _ = ref.forward(torch_model, ids, mask)
    assert np.abs(valid(logits - unedited, mask)).max() > 1e-2, "the edit should change the logits"
    np.testing.assert_allclose(valid(out.logits, mask), valid(logits, mask), atol=ATOL, rtol=0)
    ours = np.swapaxes(np.asarray(out.neurons), 1, 2)
    np.testing.assert_allclose(valid(ours, mask), valid(np.swapaxes(neurons, 1, 2), mask), atol=ATOL, rtol=0)
    return ours


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_and_neurons_match_pytorch(models, name, side):
    lm, torch_model = models(name)
    ids, mask = padded_batch(0, side=side)
    out = lm(ids, mask, capture="full")
    logits, neurons = ref.forward(torch_model, ids, mask)
    assert np.abs(logits).max() > 1.0, "the reference logits are too small for the test to mean anything"
    np.testing.assert_allclose(valid(out.logits, mask), valid(logits, mask), atol=ATOL, rtol=0)
    assert out.neurons.shape == (4, lm.num_layers, ids.shape[1], lm.num_neurons)
    ours = np.swapaxes(np.asarray(out.neurons), 1, 2)  # [B, T, M, F]
    np.testing.assert_allclose(valid(ours, mask), valid(np.swapaxes(neurons, 1, 2), mask), atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_long_sequences_are_as_exact_as_pytorch(models, name, side):
    """300 tokens: several blocks of causal attention (common.QUERY_BLOCK), positions far enough for
    float32 rounding to add up. Against float64 PyTorch (each sequence alone, unpadded), ours errs no
    more than PyTorch's float32 padded batch does (x1.25, + 1e-5). A RoPE table one ulp off, as once,
    erred 6x more."""
    lm, torch_model = models(name)
    ids, mask = padded_batch(0, (300, 170, 1, 260), side)
    assert ids.shape[1] > 2 * lj.models.common.QUERY_BLOCK
    out = lm(ids, mask, capture="full")
    ours = valid(out.logits, mask), valid(np.swapaxes(np.asarray(out.neurons), 1, 2), mask)
    logits, neurons = ref.forward(torch_model, ids, mask)
    theirs = valid(logits, mask), valid(np.swapaxes(neurons, 1, 2), mask)
    alone = [ref.forward(torch_model.double(), row[real.astype(bool)][None], np.ones((1, real.sum())))
             for row, real in zip(ids, mask)]
    torch_model.float()
    exact = (np.concatenate([logits[0] for logits, _ in alone]),
             np.concatenate([np.swapaxes(neurons[0], 0, 1) for _, neurons in alone]))
    for k, what in enumerate(("logits", "neurons")):
        error, torch_error = np.abs(ours[k] - exact[k]).max(), np.abs(theirs[k] - exact[k]).max()
        assert error <= 1.25 * torch_error + 1e-5, (what, error, torch_error)


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_equals_each_sequence_alone(models, name, side):
    """Each row's logits and pooled neurons equal transformers' for its sequence alone, unpadded."""
    lm, torch_model = models(name)
    ids, mask = padded_batch(1, side=side)
    out = lm(ids, mask, capture="pooled")
    pooled = lm.pooled(ids, mask)
    np.testing.assert_allclose(pooled, out.neurons, atol=1e-6)
    for b in range(ids.shape[0]):
        alone = ids[b][mask[b].astype(bool)][None]
        logits, neurons = ref.forward(torch_model, alone, np.ones_like(alone))
        np.testing.assert_allclose(valid(out.logits[b:b + 1], mask[b:b + 1]), logits[0], atol=ATOL)
        np.testing.assert_allclose(pooled[b], neurons[0].mean(axis=1), atol=ATOL)


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded"])
def test_neuron_mask_matches_pytorch_hook(models, name):
    lm, torch_model = models(name)
    ids, mask = padded_batch(2, side="left")
    rng = np.random.RandomState(0)
    neuron_mask = rng.rand(lm.num_layers, lm.num_neurons) < 0.3
    out = lm(ids, mask, neuron_mask=neuron_mask, capture="full")
    ours = assert_edit_matches(out, torch_model, ids, mask, neuron_mask=neuron_mask)
    assert np.all(ours[:, :, neuron_mask] == 0)


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded"])
def test_per_example_masks_equal_one_mask_at_a_time(models, name):
    lm, torch_model = models(name)
    ids, mask = padded_batch(3, side="right")
    rng = np.random.RandomState(1)
    masks = rng.rand(ids.shape[0], lm.num_layers, lm.num_neurons) < 0.5
    batched = lm(ids, mask, neuron_mask=masks, capture="pooled")
    logits, _ = ref.forward(torch_model, ids, mask, neuron_mask=masks)
    np.testing.assert_allclose(valid(batched.logits, mask), valid(logits, mask), atol=ATOL, rtol=0)
    for b in range(ids.shape[0]):
        one = lm(ids, mask, neuron_mask=masks[b], capture="pooled")
        np.testing.assert_allclose(batched.logits[b], one.logits[b], atol=1e-5)
        np.testing.assert_allclose(batched.neurons[b], one.neurons[b], atol=1e-6)


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded", "qwen3", "mistral", "gemma2", "gemma3", "cohere"])
def test_bfloat16_deviates_from_float32_no_more_than_pytorch(models, checkpoint, name):
    """bf16 parameters and matmuls: the logit error against float32 is measured and compared with
    the error of PyTorch's own bf16 forward of the same checkpoint (every family: its norms, caps, q/k
    norms and rotary layout keep float32 where transformers does)."""
    lm32, torch_model = models(name)
    lm16 = lj.load_pretrained(checkpoint(name), dtype="bfloat16")
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(lm16.params)} == {np.dtype("bfloat16")}
    ids, mask = padded_batch(4)
    reference = valid(lm32(ids, mask).logits, mask)
    ours = valid(lm16(ids, mask).logits, mask).astype(np.float32)
    torch16, _ = ref.forward(ref.load_model(checkpoint(name)).to(torch.bfloat16), ids, mask)
    theirs = valid(torch16, mask).astype(np.float32)
    err, torch_err = np.abs(ours - reference).max(), np.abs(theirs - reference).max()
    p32, p16 = np.asarray(lm32.pooled(ids, mask)), np.asarray(lm16.pooled(ids, mask))
    assert p16.dtype == np.float32
    pooled_err = np.abs(p16 - p32).max() / np.abs(p32).max()
    print(f"{name} bf16 vs fp32: max |logit err| ours {err:.3g}, pytorch {torch_err:.3g} "
          f"(logits up to {np.abs(reference).max():.3g}); pooled neurons max rel err {pooled_err:.3g}")
    assert 0 < err < 2 * torch_err
    assert 0 < pooled_err < 0.1


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded", "qwen3", "gemma3", "cohere"])
def test_active_counts_match_pytorch_activation_outputs(models, name):
    """LAPE's statistic: per neuron, the real tokens where the activation function's output is > 0
    (BLOOM: the GELU output; the GLU families: act(gate), SiLU or Gemma's tanh GELU, read with a hook on
    act_fn)."""
    lm, torch_model = models(name)
    ids, mask = padded_batch(5, side="left")
    counts = np.asarray(lm.active_counts(ids, mask))
    mlps = torch_model.transformer.h if name == "bloom" else torch_model.model.layers
    outputs = []
    handles = [(layer.mlp.gelu_impl if name == "bloom" else layer.mlp.act_fn).register_forward_hook(
        lambda mod, inp, out: outputs.append(out.detach().numpy())) for layer in mlps]
    ref.forward(torch_model, ids, mask)
    for h in handles:
        h.remove()
    expected = np.stack([np.einsum("btf,bt->bf", (o > 0).astype(np.float32), mask) for o in outputs], axis=1)
    assert counts.shape == (4, lm.num_layers, lm.num_neurons)
    np.testing.assert_array_equal(counts, expected)
    assert 0 < counts.sum() < mask.sum() * lm.num_layers * lm.num_neurons


def random_edit(rng, shape, mode):
    """(mask, mode, values) over `shape`: about 30% of the neurons, values of both signs (scale: 0.5 to 3)."""
    mask = rng.rand(*shape) < 0.3
    values = rng.uniform(0.5, 3.0, shape) if mode == "scale" else rng.normal(0.0, 2.0, shape)
    return mask, mode, values.astype(np.float32)


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded"])
@pytest.mark.parametrize("mode", ["set", "add", "scale"])
def test_interventions_match_pytorch_hooks(models, name, mode):
    """set / add / scale on one [M, F] edit and one edit per example [B, M, F], left padded, against
    hooks that edit the same neurons with torch.where; per-example edits equal one-at-a-time runs."""
    lm, torch_model = models(name)
    ids, mask = padded_batch(4, side="left")
    rng = np.random.RandomState(2)
    for shape in [(lm.num_layers, lm.num_neurons), (ids.shape[0], lm.num_layers, lm.num_neurons)]:
        edit = random_edit(rng, shape, mode)
        out = lm(ids, mask, capture="full", intervention=lj.Intervention(*edit))
        assert_edit_matches(out, torch_model, ids, mask, edit=edit)
    pooled = lm.pooled(ids, mask, intervention=lj.Intervention(*edit))
    for b in range(ids.shape[0]):
        one = lj.Intervention(edit[0][b], mode, edit[2][b])
        np.testing.assert_allclose(out.logits[b], lm(ids, mask, intervention=one).logits[b], atol=1e-5)
        np.testing.assert_allclose(pooled[b], lm.pooled(ids, mask, intervention=one)[b], atol=1e-6)


def test_intervention_errors(models):
    lm, _ = models("bloom")
    ids, mask = padded_batch(0)
    layers = (lm.num_layers, lm.num_neurons)
    with pytest.raises(ValueError, match="mode 'shift'"):
        lj.Intervention(np.ones(layers, bool), "shift", np.ones(layers))
    with pytest.raises(ValueError, match="needs values"):
        lj.Intervention(np.ones(layers, bool), "set")
    with pytest.raises(ValueError, match="takes no values"):
        lj.Intervention(np.ones(layers, bool), "zero", np.ones(layers))
    with pytest.raises(ValueError, match="values have shape"):
        lm(ids, mask, intervention=lj.Intervention(np.ones(layers, bool), "add", np.ones((1, *layers))))
    with pytest.raises(ValueError, match="intervention mask has shape"):
        lm(ids, mask, intervention=lj.Intervention(np.ones((3, *layers), bool), "add", np.ones((3, *layers))))
    with pytest.raises(ValueError, match="not both"):
        lm(ids, mask, neuron_mask=np.ones(layers, bool), intervention=lj.Intervention(np.ones(layers, bool)))
