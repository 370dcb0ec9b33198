"""The forward service (`LM.forward`): batches of any size on a mesh (rows rounded up to the data axis,
filler dropped) equal one device; packed rows pool each sequence as it pools alone; the chunked target
log-probabilities equal a full float32 log-softmax, gradient included; one compile per shape and mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lingua_jax as lj
import torch_reference as ref
from lingua_jax import evaluate, generation, sharding, throughput
from lingua_jax.lm import Inputs, apply_model, target_logprobs

VOCAB = 128  # divides every model axis


def assert_close(actual, desired, tol=1e-5):
    """Max deviation within `tol` of the largest value (sharded reductions add in another order)."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape and np.all(np.isfinite(desired))
    assert np.abs(actual - desired).max() <= tol * np.abs(desired).max()


def padded(rows, length=9, seed=0, vocab=VOCAB):
    rng = np.random.RandomState(seed)
    ids = rng.randint(0, vocab, (rows, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[0, :3] = 0  # left padding
    mask[-1, 6:] = 0  # right padding
    return ids, mask


def packed_rows(lengths_per_row, length, seed=0, vocab=VOCAB):
    """(input_ids, segment_ids [B, T], the sentences [B][S] as token lists): rows packed with sentences
    of the given lengths, padding after them."""
    rng = np.random.RandomState(seed)
    ids = np.zeros((len(lengths_per_row), length), np.int32)
    segments = np.zeros_like(ids)
    sentences = []
    for r, lengths in enumerate(lengths_per_row):
        start, row = 0, []
        for s, n in enumerate(lengths):
            tokens = rng.randint(1, vocab, n)
            ids[r, start:start + n] = tokens
            segments[r, start:start + n] = s + 1
            row.append(tokens)
            start += n
        sentences.append(row)
    return ids, segments, sentences


# --- rows that do not divide the data axis ------------------------------------------------------

@pytest.mark.parametrize("name", ["bloom_mesh", "llama_mesh"])
def test_batches_of_any_size_on_a_mesh_equal_one_device(checkpoint, name):
    """6 rows (and 3, 5) on a data axis of 4: every output of the service (logits, pooled, active counts,
    per-row edits, log-probs with edit ids, packed pooling, greedy decoding, window NLLs in batches of 3)
    equals the single-device one."""
    assert len(jax.devices()) == 8
    path = checkpoint(name, VOCAB)
    one, lm = lj.load_pretrained(path), lj.load_pretrained(path, mesh=sharding.make_mesh((4, 2)))
    m, f = one.num_layers, one.num_neurons
    rng = np.random.RandomState(1)
    rows = 6
    ids, mask = padded(rows)
    out, ref = lm(ids, mask, capture="pooled"), one(ids, mask, capture="pooled")
    assert out.logits.shape == (rows, 9, VOCAB) and out.neurons.shape == (rows, m, f)
    assert_close(out.logits, ref.logits)
    assert_close(out.neurons, ref.neurons)
    assert_close(lm.active_counts(ids, mask), one.active_counts(ids, mask), tol=0)
    edit = lj.Intervention(rng.rand(rows, m, f) < 0.3, "add", rng.normal(0, 1, (rows, m, f)).astype(np.float32))
    assert_close(lm.pooled(ids, mask, intervention=edit), one.pooled(ids, mask, intervention=edit))

    edits = lj.Intervention(rng.rand(3, m, f) < 0.3)
    inputs = Inputs(ids, mask, targets=np.roll(ids, -1, 1), scored=mask.astype(bool),
                    edit_ids=np.arange(rows, dtype=np.int32) % 3)
    sums, _ = lm.forward(inputs, output="logprobs", intervention=edits, chunk=4)
    assert sums.shape == (rows, 3)
    assert_close(sums, one.forward(inputs, output="logprobs", intervention=edits, chunk=4)[0])

    p_ids, segments, _ = packed_rows([[3, 4], [5], [2, 2, 3]] * (rows // 3), 9)
    packed = Inputs(p_ids, segment_ids=segments, num_segments=3)
    _, pooled = lm.forward(packed, capture="pooled", output="none")
    assert pooled.shape == (rows, 3, m, f)
    assert_close(pooled, one.forward(packed, capture="pooled", output="none")[1])

    ids, mask = padded(3)
    mask[-1] = 1  # generation needs left padding only
    np.testing.assert_array_equal(generation.greedy(lm, ids, mask, 5), generation.greedy(one, ids, mask, 5))
    windows = np.random.RandomState(2).randint(0, VOCAB, (5, 16))
    np.testing.assert_allclose(evaluate.window_nll(lm, windows, batch_size=3),
                               evaluate.window_nll(one, windows, batch_size=3), rtol=1e-5)


def test_one_compile_per_padded_shape_and_mode(checkpoint):
    """5 and 7 rows both run as 8 on a data axis of 8: one compile of the service's kernel, and one
    more for another mode."""
    lm = lj.load_pretrained(checkpoint("bloom_mesh", VOCAB), mesh=sharding.make_mesh((8, 1)))
    with throughput.CompileCounter() as compiles:
        for rows in (5, 7, 8):
            assert lm.pooled(*padded(rows)).shape[0] == rows
    assert compiles.names["jit(apply_model)"] == 1
    with throughput.CompileCounter() as compiles:
        lm.active_counts(*padded(6))
        lm.pooled(*padded(6))
    assert compiles.names["jit(apply_model)"] == 1


# --- packed rows --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded", "mistral"])
def test_packed_pooling_equals_one_sentence_at_a_time(models, name):
    """Per-sequence means of packed rows (Mistral: a window of 4, shorter than the sentences) equal
    transformers' for each sentence alone, and their active counts ours for each sentence in a row of its
    own; empty segment slots pool to zeros."""
    lm, torch_model = models(name)
    lengths = [[7, 5, 9], [12], [3, 6, 4]]
    ids, segments, sentences = packed_rows(lengths, 24, seed=3, vocab=lm.spec.vocab_size)
    inputs = Inputs(ids, segment_ids=segments, num_segments=4)
    _, pooled = lm.forward(inputs, capture="pooled", output="none")
    _, counts = lm.forward(inputs, capture="active", output="none")
    assert pooled.shape == (3, 4, lm.num_layers, lm.num_neurons) and np.all(np.isfinite(pooled))
    alone = [tokens for row in sentences for tokens in row]  # one sentence per row, right-padded
    one_per_row = np.zeros((len(alone), max(map(len, alone))), np.int32)
    for i, tokens in enumerate(alone):
        one_per_row[i, :len(tokens)] = tokens
    counts_alone = iter(lm.active_counts(one_per_row, one_per_row > 0))  # packed_rows' tokens are > 0
    for r, row in enumerate(sentences):
        for s, tokens in enumerate(row):
            np.testing.assert_allclose(pooled[r, s], ref.pooled_alone(torch_model, tokens), atol=1e-4, rtol=1e-5)
            np.testing.assert_array_equal(counts[r, s], next(counts_alone))
        assert not np.any(pooled[r, len(row):]) and not np.any(counts[r, len(row):])
    # without num_segments a packed row pools over all its real tokens
    _, whole = lm.forward(Inputs(ids, segment_ids=segments), capture="pooled", output="none")
    weights = np.array([[len(t) for t in row] + [0] * (4 - len(row)) for row in sentences], np.float32)
    expected = np.einsum("bsmf,bs->bmf", np.asarray(pooled), weights) / weights.sum(1)[:, None, None]
    np.testing.assert_allclose(whole, expected, atol=1e-5, rtol=1e-5)


def test_packed_logits_equal_one_sentence_at_a_time(models):
    lm, _ = models("llama_gqa_sharded")
    ids, segments, sentences = packed_rows([[6, 8], [10]], 16, seed=4, vocab=lm.spec.vocab_size)
    logits, _ = lm.forward(Inputs(ids, segment_ids=segments))
    assert np.all(np.isfinite(logits))
    for r, row in enumerate(sentences):
        start = 0
        for tokens in row:
            alone = lm(tokens[None]).logits[0]
            np.testing.assert_allclose(logits[r, start:start + len(tokens)], alone, atol=1e-4, rtol=1e-5)
            start += len(tokens)


# --- the chunked log-probabilities --------------------------------------------------------------

@pytest.mark.parametrize("name", ["bloom", "gemma2", "gemma3", "cohere"])
def test_chunked_logprobs_equal_a_full_log_softmax(models, name):
    """Any chunk (one position, one not dividing T, one longer than T) and any vocabulary block (one not
    dividing V, one longer than V): the chunk sums add up to Σ log_softmax(logits)[target] over the
    scored positions (of the soft-capped logits for Gemma 2, the scaled ones for Cohere, through an
    untied head for Gemma 3), and (BLOOM, Gemma 2) the gradient of their mean equals that of the
    full-logits cross entropy."""
    lm, _ = models(name)
    ids, mask = padded(3, length=12, seed=5, vocab=lm.spec.vocab_size)
    targets = np.roll(ids, -1, axis=1)
    scored = (mask * np.roll(mask, -1, axis=1)).astype(bool)
    scored[:, -1] = False
    logp = jax.nn.log_softmax(np.asarray(lm(ids, mask).logits, np.float64), axis=-1)
    expected = np.where(scored, np.take_along_axis(np.asarray(logp), targets[..., None], -1)[..., 0], 0).sum(1)
    for chunk in (1, 5, 40):
        sums, _ = lm.forward(Inputs(ids, mask, targets=targets, scored=scored), output="logprobs", chunk=chunk)
        assert sums.shape == (3, -(-12 // chunk)) and sums.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(sums, np.float64).sum(1), expected, rtol=1e-5)
    placed = lm.prepare(Inputs(ids, mask, targets=targets, scored=scored))[0]
    for block in (16, 2 * lm.spec.vocab_size):
        sums, _ = apply_model(lm.module, lm.params, placed, None, output="logprobs", chunk=5, vocab_block=block)
        assert sums.shape == (3, 3) and sums.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(sums, np.float64).sum(1), expected, rtol=1e-5)
    if name not in ("bloom", "gemma2"):
        return

    def chunked(params):
        hidden = lm.module.apply({"params": params}, ids, mask, output="hidden")
        return -target_logprobs(lm.module, params, hidden, targets, scored, 5).sum() / scored.sum()

    def full(params):
        logits = lm.module.apply({"params": params}, ids, mask).astype(jnp.float32)
        picked = jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], -1)[..., 0]
        return -jnp.where(scored, picked, 0).sum() / scored.sum()

    (a, grad_a), (b, grad_b) = (jax.jit(jax.value_and_grad(fn))(lm.params) for fn in (chunked, full))
    np.testing.assert_allclose(a, b, rtol=1e-5)
    for x, y in zip(jax.tree.leaves(grad_a), jax.tree.leaves(grad_b)):
        np.testing.assert_allclose(x, y, atol=1e-5 * max(1.0, float(np.abs(y).max())))


def test_scoring_walks_the_vocabulary_in_blocks_on_cpu(checkpoint):
    """A vocabulary above VOCAB_BLOCK is scored in blocks on CPU, with chunks of about BLOCK_ROWS
    positions, and the result equals the whole-vocabulary log-softmax; a model axis splitting the
    vocabulary keeps it whole."""
    path = checkpoint("bloom", 4096)
    lm = lj.load_pretrained(path)
    assert lm.vocab_block() == lj.lm.VOCAB_BLOCK
    assert lj.lm.logits_chunk(4, 2048, 4096, lm.vocab_block()) == lj.lm.BLOCK_ROWS // 4
    assert lj.load_pretrained(path, mesh=sharding.make_mesh((4, 2))).vocab_block() is None
    assert lj.load_pretrained(path, mesh=sharding.make_mesh((8, 1))).vocab_block() == lj.lm.VOCAB_BLOCK
    ids, mask = padded(3, length=20, seed=8, vocab=4096)
    inputs = Inputs(ids, mask, targets=np.roll(ids, -1, 1), scored=mask.astype(bool))
    blocked, _ = lm.forward(inputs, output="logprobs")
    whole, _ = apply_model(lm.module, lm.params, lm.prepare(inputs)[0], None, output="logprobs", chunk=20)
    np.testing.assert_allclose(blocked.sum(1), whole.sum(1), rtol=1e-5)


def test_logprobs_pick_their_edit(models):
    """edit_ids: each row scored under its own edit of K equals the row scored under that edit alone."""
    lm, _ = models("bloom")
    ids, mask = padded(4, seed=6, vocab=lm.spec.vocab_size)
    edits = lj.Intervention(np.random.RandomState(7).rand(3, lm.num_layers, lm.num_neurons) < 0.5)
    picks = np.array([2, 0, 1, 2], np.int32)
    inputs = Inputs(ids, mask, targets=np.roll(ids, -1, 1), scored=mask.astype(bool), edit_ids=picks)
    sums, _ = lm.forward(inputs, output="logprobs", intervention=edits)
    for row, k in enumerate(picks):
        alone, _ = lm.forward(inputs.replace(edit_ids=None), output="logprobs", neuron_mask=edits.mask[k])
        np.testing.assert_allclose(sums[row], alone[row], rtol=1e-6)
    assert apply_model(lm.module, lm.params, lm.prepare(inputs, intervention=edits)[0],
                       lm.place(edits, batched=False), output="logprobs", chunk=9)[0].shape == (4, 1)


# --- errors -------------------------------------------------------------------------------------

def test_service_errors(models):
    lm, _ = models("bloom")
    ids, mask = padded(2, vocab=lm.spec.vocab_size)
    layers = (lm.num_layers, lm.num_neurons)
    with pytest.raises(ValueError, match="integer array"):
        lm.forward(Inputs(ids.astype(np.float32)))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        lm.forward(Inputs(ids, mask[:, :4]))
    with pytest.raises(ValueError, match="not both"):
        lm.forward(Inputs(ids, mask, segment_ids=mask))
    with pytest.raises(ValueError, match="needs segment_ids"):
        lm.forward(Inputs(ids, mask, num_segments=2), capture="pooled")
    with pytest.raises(ValueError, match="needs targets"):
        lm.forward(Inputs(ids, mask), output="logprobs")
    with pytest.raises(ValueError, match="together"):
        lm.forward(Inputs(ids, mask, targets=ids), output="logprobs")
    with pytest.raises(ValueError, match="output must be one of"):
        lm.forward(Inputs(ids, mask), output="probs")
    with pytest.raises(ValueError, match="capture must be one of"):
        lm.forward(Inputs(ids, mask), capture="some")
    with pytest.raises(ValueError, match="edit_ids pick"):
        lm.forward(Inputs(ids, mask, edit_ids=np.zeros(2, np.int32)))
    with pytest.raises(ValueError, match=r"edit_ids must be in \[0, 3\)"):
        lm.forward(Inputs(ids, mask, edit_ids=np.array([0, 3], np.int32)),
                   intervention=lj.Intervention(np.zeros((3, *layers), bool)))
    with pytest.raises(ValueError, match="K edits picked by edit_ids"):
        lm.forward(Inputs(ids, mask, edit_ids=np.zeros(2, np.int32)), neuron_mask=np.zeros(layers, bool))
