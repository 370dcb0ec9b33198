"""LAPE against slow references: probabilities vs PyTorch hooks, entropies and the
public code's selection written out in plain Python, a planted structure, and the method comparison."""

import math

import numpy as np
import pytest

import lingua_jax as lj
import torch_reference as ref
from lingua_jax import data, lape, metrics

VOCAB = 300


# --- slow references, written from the definitions -----------------------------------------------

def reference_probabilities(model, tokenizer, corpus):
    """[L, M, F] float64: per language, (Σ over its sentences' tokens where the activation function's
    output (LLaMA: SiLU(gate), read from act_fn; BLOOM: GELU) is > 0) / (its number of tokens), from
    one right-padded PyTorch batch of all sentences."""
    ids = tokenizer(corpus.texts, add_special_tokens=False)["input_ids"]
    length = max(map(len, ids))
    padded = np.asarray([t + [0] * (length - len(t)) for t in ids])
    mask = np.asarray([[1] * len(t) + [0] * (length - len(t)) for t in ids])
    bloom = model.config.model_type == "bloom"
    outputs = []
    hooks = [(layer.mlp.gelu_impl if bloom else layer.mlp.act_fn).register_forward_hook(
        lambda mod, inp, out: outputs.append(out.detach().numpy())) for layer in
        (model.transformer.h if bloom else model.model.layers)]
    ref.forward(model, padded, mask)
    for h in hooks:
        h.remove()
    active = np.stack([((o > 0) & mask[:, :, None].astype(bool)).sum(axis=1) for o in outputs], axis=1)  # [N, M, F]
    members = np.eye(len(corpus.languages))[corpus.lang]  # [N, L]
    return np.einsum("nl,nmf->lmf", members, active) / (members.T @ mask.sum(axis=1))[:, None, None]


def reference_entropy(vector):
    total = sum(float(p) for p in vector)
    if total == 0:
        return 0.0
    return -sum(p / total * math.log(p / total) for p in map(float, vector) if p > 0)


def kth_smallest(values, rate):
    """torch.kthvalue(values, round(len · rate)): 1-based."""
    return sorted(values)[round(len(values) * rate) - 1]


def reference_regions(probs, top_rate=0.01, filter_rate=0.95, bar_ratio=0.95):
    num, m, f = probs.shape
    values = probs.ravel().tolist()
    filter_value, bar = kth_smallest(values, filter_rate), kth_smallest(values, bar_ratio)
    candidates = [(reference_entropy(probs[:, i, j]), i * f + j, i, j) for i in range(m) for j in range(f)
                  if max(probs[:, i, j]) > filter_value]
    regions = np.zeros(probs.shape, bool)
    for _, _, i, j in sorted(candidates)[:round(m * f * top_rate)]:
        regions[:, i, j] = probs[:, i, j] > bar
    return regions


# --- activation probabilities ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    return data.train_bpe_tokenizer(data.bundled_sample().texts, VOCAB)


def test_probabilities_equal_pytorch_counts(checkpoint, tokenizer):
    """LLaMA's SiLU(gate) path (BLOOM's GELU counts are checked per batch in test_models): batches of
    sentences of mixed languages, left padded, the last one completed with filler rows."""
    corpus = data.bundled_sample(("en", "fr", "zh")).select(5, seed=1)
    path = checkpoint("llama_gqa_sharded", VOCAB)
    lm = lj.load_pretrained(path)
    probs = lape.activation_probabilities(lm, tokenizer, corpus, batch_size=4, padding_side="left",
                                            buckets=[64])
    expected = reference_probabilities(ref.load_model(path), tokenizer, corpus)
    assert probs.shape == (3, lm.num_layers, lm.num_neurons) and probs.dtype == np.float32
    np.testing.assert_array_equal(probs, expected.astype(np.float32))
    assert probs.std() > 0.05, "the model should give a spread of probabilities"


# --- entropy and selection on random data ---------------------------------------------------------

def random_probs(seed, shape=(4, 3, 500)):
    """Random probabilities with a few exact zeros and one neuron that never fires."""
    rng = np.random.default_rng(seed)
    probs = rng.beta(0.7, 1.5, shape).astype(np.float32)
    probs[rng.random(shape) < 0.02] = 0
    probs[:, 1, 7] = 0
    return probs


def test_entropy_equals_reference():
    probs = random_probs(0)
    entropy = np.asarray(lape.lape_entropy(probs))
    expected = [[reference_entropy(probs[:, i, j]) for j in range(probs.shape[2])] for i in range(probs.shape[1])]
    assert entropy.shape == probs.shape[1:] and entropy.dtype == np.float32
    np.testing.assert_allclose(entropy, expected, rtol=1e-5, atol=1e-6)
    assert entropy[1, 7] == 0


@pytest.mark.parametrize("seed,rates", [
    (0, dict()),
    (1, dict(top_rate=0.05)),
    (2, dict(top_rate=0.2, filter_rate=0.9, bar_ratio=0.8)),
    (3, dict(top_rate=0.05, filter_rate=0.7, bar_ratio=0.97)),
])
def test_regions_equal_reference(seed, rates):
    probs = random_probs(seed)
    regions = np.asarray(metrics.lape_regions(probs, **rates))
    expected = reference_regions(probs, **rates)
    assert regions.dtype == bool and regions.shape == probs.shape
    np.testing.assert_array_equal(regions, expected)
    assert expected.any(axis=0).sum() > 3, "the case should select several neurons"


def test_ties_at_the_order_statistics():
    """Probabilities on a coarse grid: many values equal the thresholds, which select strictly above them."""
    rng = np.random.default_rng(4)
    probs = (rng.integers(0, 11, (3, 2, 60)) / 10).astype(np.float32)
    for rates in (dict(top_rate=1.0), dict(top_rate=1.0, filter_rate=0.6, bar_ratio=0.8)):
        np.testing.assert_array_equal(metrics.lape_regions(probs, **rates), reference_regions(probs, **rates))


def test_kth_value_is_one_based_and_rounded():
    """20 values: rate 0.95 -> the 19th smallest (0.8 here), so only the 0.9 neuron passes; with a
    0-based kth it would be the largest and nothing would pass."""
    probs = np.zeros((2, 1, 10), np.float32)
    probs[0, 0, :] = np.linspace(0.0, 0.8, 10)
    probs[1, 0, 3] = 0.9
    regions = np.asarray(metrics.lape_regions(probs, top_rate=1.0))
    assert regions.sum() == 1 and regions[1, 0, 3]


def test_neuron_may_belong_to_several_languages():
    probs = np.full((3, 1, 100), 0.1, np.float32)
    probs[:2, 0, 0] = 0.9  # shared by languages 0 and 1
    probs[2, 0, 1] = 0.9
    regions = np.asarray(metrics.lape_regions(probs, top_rate=0.02))
    np.testing.assert_array_equal(np.argwhere(regions), [[0, 0, 0], [1, 0, 0], [2, 0, 1]])


# --- planted structure ---------------------------------------------------------------------------

def test_planted_language_neurons_are_recovered():
    """Shared neurons fire alike in every language (up to noise); planted ones fire often in their
    language(s) and rarely elsewhere. With top_rate = the planted share, LAPE finds exactly them."""
    rng = np.random.default_rng(5)
    num, m, f = 4, 3, 400
    probs = np.clip(rng.uniform(0.2, 0.6, (m, f)) + rng.normal(0, 0.02, (num, m, f)), 0, 1)
    planted = np.zeros(probs.shape, bool)
    for l, chosen in enumerate(rng.permutation(m * f)[:9 * num].reshape(num, 9)):
        i, j = np.unravel_index(chosen, (m, f))
        planted[l, i, j] = True
        planted[(l + 1) % num, i[:2], j[:2]] = True  # two of each language's neurons shared with the next
    special = planted.any(axis=0)
    probs[:, special] = np.where(planted[:, special], rng.uniform(0.85, 0.95, planted[:, special].shape), 0.01)
    regions = np.asarray(metrics.lape_regions(probs.astype(np.float32), top_rate=special.sum() / (m * f)))
    np.testing.assert_array_equal(regions, planted)


# --- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("probs,kwargs,match", [
    (np.full((2, 10), 0.5), {}, "3-D"),
    (np.full((1, 2, 10), 0.5), {}, "two languages"),
    (np.full((2, 2, 10), 1.5), {}, r"\[0, 1\]"),
    (np.full((2, 2, 10), np.nan), {}, "NaN"),
    (np.full((2, 1, 50), 0.5), dict(top_rate=0.01), "selects nothing"),  # round(0.5) = 0: half to even
    (np.full((2, 2, 10), 0.5), dict(top_rate=0.5, filter_rate=0.0), "filter_rate"),
    (np.full((2, 2, 10), 0.5), dict(top_rate=0.5, bar_ratio=1.5), "bar_ratio"),
    (np.full((2, 2, 10), 0.5), dict(top_rate=-0.1), "top_rate"),
])
def test_regions_errors(probs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.lape_regions(probs, **kwargs)
