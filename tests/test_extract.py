"""Pooled activations over a corpus: bucketing changes nothing, the store is reused, the chain runs."""

import json

import numpy as np
import pytest

import lingua_jax as lj
import torch_reference as ref
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
        acts = extract.extract(lm, tokenizer, corpus, batch_size=4, pack=False, padding_side=side)
        assert acts.acts.shape == (24, lm.num_layers, lm.num_neurons) and acts.acts.dtype == np.float32
        assert len(acts.metadata["batch_shapes"]) > 1, "the test should cover several bucket shapes"
        for i in (0, 9, 23):
            ids = np.asarray([tokenizer(corpus.texts[i], add_special_tokens=False)["input_ids"]])
            # float32 over rows of another length: the products accumulate in another order (up to 2e-5 seen)
        np.testing.assert_allclose(acts.acts[i], lm.pooled(ids)[0], atol=1e-4, rtol=1e-5)
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


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded"])
def test_packed_rows_equal_one_sentence_at_a_time(checkpoint, name, tmp_path):
    corpus = data.bundled_sample(("en", "fr", "zh")).select(8, seed=0)
    tokenizer = data.train_bpe_tokenizer(data.bundled_sample().texts, VOCAB)
    lm, torch_model = lj.load_pretrained(checkpoint(name, VOCAB)), ref.load_model(checkpoint(name, VOCAB))
    acts = extract.extract(lm, tokenizer, corpus, batch_size=2, pack=True, max_length=64)
    assert acts.metadata["packed"] and max(acts.metadata["segments_per_row"]) > 1
    for i in range(len(corpus.texts)):
        tokens = tokenizer(corpus.texts[i], add_special_tokens=False)["input_ids"]
        # transformers on each sentence alone, within the parity tests' 1e-4
        np.testing.assert_allclose(acts.acts[i], ref.pooled_alone(torch_model, tokens), atol=1e-4, rtol=1e-5)
    # the streamed per-language sums of the normalised whole vectors, the obvious way in float64
    flat = acts.acts.reshape(len(acts.acts), -1).astype(np.float64)
    unit = (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(acts.acts.shape)
    for language in range(3):
        mine = acts.lang == language
        np.testing.assert_allclose(acts.sums[language], unit[mine].sum(axis=0), atol=1e-6)
        np.testing.assert_allclose(acts.sums_of_squares[language], (unit[mine] ** 2).sum(axis=0), atol=1e-6)
    np.testing.assert_allclose(acts.contribution_scores(), metrics.contribution_scores(acts.acts, acts.lang),
                               atol=1e-6)
    extract.save(acts, tmp_path)
    again = extract.load(tmp_path)
    np.testing.assert_array_equal(again.sums, acts.sums)
    np.testing.assert_array_equal(again.sums_of_squares, acts.sums_of_squares)


def test_bucketed_extraction_streams_the_same_sums(setup):
    lm, tokenizer, corpus = setup
    bucketed = extract.extract(lm, tokenizer, corpus, batch_size=5, pack=False)
    sums, squares = metrics.language_sums(bucketed.acts, bucketed.lang)
    np.testing.assert_allclose(bucketed.sums, sums, atol=1e-6)
    np.testing.assert_allclose(bucketed.sums_of_squares, squares, atol=1e-6)


def test_packing_plan_holds_every_sentence_once_within_its_row():
    lengths = [200, 130, 100, 90, 60, 40, 40, 30, 20, 10, 5, 5, 3]
    tokens = [list(range(1, n + 1)) for n in lengths]
    plan = extract.PackedBatches.build(tokens, batch_size=3, pad_id=0, data_axis=2)
    assert {t for _, t in plan.shapes} == {128, 256}, "rows of 128, and of 256 for the longer sentences"
    assert all(b % 2 == 0 for b, _ in plan.shapes), "rows per batch divide over the data axis"
    placed = [s for batch in plan.batches for row in batch for s in row]
    assert sorted(placed) == list(range(len(lengths)))
    for i, batch in enumerate(plan.batches):
        rows, length = plan.shapes_of[i]
        assert len(batch) <= rows and all(sum(lengths[s] for s in row) <= length for row in batch)
        input_ids, segment_ids, index = plan.batch(i)
        for r, row in enumerate(batch):
            for s, sample in enumerate(row):
                where = segment_ids[r] == s + 1
                np.testing.assert_array_equal(input_ids[r][where], tokens[sample])
                assert index[r, s] == sample
    assert plan.efficiency == sum(lengths) / sum(b * t for b, t in plan.shapes_of)
    with pytest.raises(ValueError, match="more than the maximum 64"):
        extract.PackedBatches.build(tokens, 3, 0, max_length=64)
    with pytest.raises(ValueError, match="no meaning when packing"):
        extract.PackedBatches.build(tokens, 3, 0, padding_side="left")


def test_packed_extraction_on_a_mesh_equals_one_device(checkpoint, tmp_path):
    from lingua_jax import sharding
    corpus = data.bundled_sample(("en", "fr")).select(6, seed=0)
    tokenizer = data.train_bpe_tokenizer(data.bundled_sample().texts, VOCAB)
    path = checkpoint("bloom_mesh", VOCAB)
    one = extract.extract(lj.load_pretrained(path), tokenizer, corpus, batch_size=3, pack=True, max_length=64)
    lm = lj.load_pretrained(path, mesh=sharding.make_mesh((2, 4)))
    split = extract.extract_cached(tmp_path, lm, tokenizer, corpus, batch_size=3, pack=True, max_length=64)
    assert all(b % 2 == 0 for b, _ in split.metadata["batch_shapes"])
    np.testing.assert_allclose(split.acts, one.acts, atol=1e-5)
    # the store is chunked by device shard: each sample's neurons in as many chunks as "model" splits F
    chunks = json.loads((tmp_path / "acts.zarr" / ".zarray").read_text())["chunks"]
    assert chunks == [1, lm.num_layers, lm.num_neurons // 4]
    np.testing.assert_array_equal(extract.load(tmp_path).acts, split.acts)
    np.testing.assert_allclose(split.sums, one.sums, atol=1e-6)
    np.testing.assert_allclose(split.sums_of_squares, one.sums_of_squares, atol=1e-6)
