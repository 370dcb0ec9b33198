"""Pooled activations over a corpus: bucketing changes nothing, the store is reused, the chain runs."""

import numpy as np
import pytest

import lingua_jax as lj
from conftest import SHARED_DATA
from lingua_jax import data, extract, metrics

VOCAB = 300


@pytest.fixture(scope="module")
def setup(checkpoint):
    corpus = data.bundled_sample(("en", "fr", "zh")).select(8, seed=0)
    tokenizer = data.train_bpe_tokenizer(data.bundled_sample().texts, VOCAB)
    return lj.load_pretrained(checkpoint("llama_gqa_sharded", VOCAB)), tokenizer, corpus


def test_bucketed_batches_equal_one_sentence_at_a_time(setup):
    lm, tokenizer, corpus = setup
    for side in ("right", "left"):
        acts = extract.extract(lm, tokenizer, corpus, batch_size=4, padding_side=side)
        assert acts.acts.shape == (24, lm.num_layers, lm.num_neurons) and acts.acts.dtype == np.float32
        assert len(acts.metadata["batch_shapes"]) > 1, "the test should cover several bucket shapes"
        for i in (0, 9, 23):
            ids = np.asarray([tokenizer(corpus.texts[i], add_special_tokens=False)["input_ids"]])
            np.testing.assert_allclose(acts.acts[i], lm.pooled(ids)[0], atol=1e-5)
        np.testing.assert_array_equal(acts.lang, np.repeat([0, 1, 2], 8))
        np.testing.assert_array_equal(acts.sem, np.tile(np.arange(8), 3))


def test_store_is_reused_for_the_same_inputs(setup, tmp_path, monkeypatch):
    lm, tokenizer, corpus = setup
    first = extract.extract_cached(tmp_path, lm, tokenizer, corpus, batch_size=8)
    calls = []
    monkeypatch.setattr(extract, "extract", lambda *a, **k: calls.append(1) or first)
    again = extract.extract_cached(tmp_path, lm, tokenizer, corpus, batch_size=8)
    assert calls == [] and again.languages == ("en", "fr", "zh")
    np.testing.assert_array_equal(again.acts, first.acts)
    extract.extract_cached(tmp_path, lm, tokenizer, corpus.select(4, seed=1), batch_size=8)
    assert calls == [1], "another corpus must be recomputed"


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        extract.load(tmp_path)


@pytest.mark.skipif(not (SHARED_DATA / "flores200_devtest").is_dir(),
                    reason="../shared/data/flores200_devtest is absent (real FLORES sample not available)")
def test_whole_chain_on_flores(checkpoint, tmp_path):
    corpus = data.load_flores(SHARED_DATA / "flores200_devtest").select(10, seed=0)
    assert corpus.languages == tuple(data.PAPER_LANGUAGES) and corpus.n == 10
    tokenizer = data.train_bpe_tokenizer(corpus.texts, 400)
    lm = lj.load_pretrained(checkpoint("bloom", 400))
    acts = extract.extract_cached(tmp_path, lm, tokenizer, corpus, batch_size=16)
    sim = metrics.similarity(acts.acts)
    assert sim.shape == (90, 90) and np.allclose(np.diag(sim), 1, atol=1e-5)
    lrds, sads = metrics.layerwise(acts.acts, acts.lang, acts.sem)
    assert lrds.shape == sads.shape == (lm.num_layers,)
    assert np.isfinite(metrics.lrds(sim, acts.lang, acts.sem)) and np.isfinite(metrics.sads(sim, acts.lang, acts.sem))
    regions = metrics.key_regions(acts.acts, acts.lang, threshold=2.0)
    assert regions.shape == (9, lm.num_layers, lm.num_neurons) and regions.dtype == bool
