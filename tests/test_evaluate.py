"""Perplexity, log-likelihoods, XStoryCloze and the deactivation table against PyTorch on tiny random
checkpoints (float32), and the table end to end on the real XL-Sum / XStoryCloze samples."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lingua_jax as lj
import torch_reference as ref
from lingua_jax import evaluate, extract, metrics, sharding
from lingua_jax import lm as lm_service
from lingua_jax.data import train_bpe_tokenizer
from lingua_jax.data import xstorycloze as xsc

RTOL = 1e-4
SEQLEN = 16
BATCH = 4
TOKENIZER_VOCAB = 300  # the smallest BPE vocab has 256 bytes + 4 specials; checkpoints are made to match
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MODELS = ["bloom", "llama_gqa_sharded"]

TRAINING_TEXT = [
    "the cat sat on the mat.", "a mat, a hat and a cat.", "the dog is on the mat and the cat is not.",
    "She went home. He stayed at the market.", "They ate bread, then they slept well.",
]
# (context, continuation): plain, a context ending in whitespace (moved to the continuation), and
# "ma" + "t and ..." where " mat" is one token, so the continuation's first token merges with the context.
PAIRS = [
    ("the dog is on the", " mat."),
    ("a cat sat on the ", "hat and the mat."),
    ("the cat sat on the ma", "t and a hat."),
    ("She went", " home and slept."),
]


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """loaded(name, vocab_size=101) -> (Flax LM, PyTorch model) of one tiny random checkpoint."""
    cache = {}

    def get(name, vocab_size=ref.VOCAB):
        if (name, vocab_size) not in cache:
            path = checkpoint(name, vocab_size)
            cache[name, vocab_size] = (lj.load_pretrained(path), ref.load_model(path))
        return cache[name, vocab_size]

    return get


@pytest.fixture(scope="module")
def small_tokenizer():
    tokenizer = train_bpe_tokenizer(TRAINING_TEXT * 20, TOKENIZER_VOCAB)
    assert len(tokenizer) == TOKENIZER_VOCAB
    return tokenizer


def token_stream(seed: int, windows: int, tail: int = 5) -> np.ndarray:
    """int [windows * SEQLEN + tail] random token ids (the tail is dropped by the protocol)."""
    return np.random.RandomState(seed).randint(0, ref.VOCAB, windows * SEQLEN + tail)


def random_neuron_mask(lm: lj.LM, seed: int, fraction: float = 0.3) -> np.ndarray:
    return np.random.RandomState(seed).rand(lm.num_layers, lm.num_neurons) < fraction


def torch_log_probs(torch_model, ids: np.ndarray, neuron_mask=None) -> np.ndarray:
    """float64 [B, T, V]: PyTorch log-softmax of the full logits of unpadded ids [B, T]."""
    logits, _ = ref.forward(torch_model, ids, np.ones_like(ids), neuron_mask)
    return torch.log_softmax(torch.tensor(logits, dtype=torch.float64), dim=-1).numpy()


def torch_perplexity(torch_model, token_ids: np.ndarray, neuron_mask=None) -> float:
    n = len(token_ids) // SEQLEN
    windows = token_ids[: n * SEQLEN].reshape(n, SEQLEN)
    logp = torch_log_probs(torch_model, windows, neuron_mask)
    picked = np.take_along_axis(logp[:, :-1], windows[:, 1:, None], axis=-1)
    return float(np.exp(-picked.mean()))


def harness_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness `_encode_pair`, written out independently."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    context_ids = encode(context)
    return context_ids, encode(context + continuation)[len(context_ids):]


def torch_loglikelihood(torch_model, tokenizer, pairs, neuron_mask=None) -> np.ndarray:
    """Σ log p(continuation) per pair, one unpadded PyTorch forward of context + continuation each."""
    sums = []
    for context, continuation in pairs:
        context_ids, continuation_ids = harness_pair(tokenizer, context, continuation)
        ids = np.array([context_ids + continuation_ids])
        logp = torch_log_probs(torch_model, ids[:, :-1], neuron_mask)[0]
        positions = np.arange(len(context_ids) - 1, ids.shape[1] - 1)
        sums.append(logp[positions, ids[0, positions + 1]].sum())
    return np.array(sums)


@pytest.mark.parametrize("name", MODELS)
def test_perplexity_matches_pytorch(loaded, name):
    lm, torch_model = loaded(name)
    tokens = token_stream(0, windows=5)  # 5 windows: batches of 4, the last one padded
    mask = random_neuron_mask(lm, 1)
    full = evaluate.perplexity(lm, tokens, SEQLEN, batch_size=BATCH)
    masked = evaluate.perplexity(lm, tokens, SEQLEN, mask, batch_size=BATCH, chunk=5)  # 4 chunks, padded
    np.testing.assert_allclose(full, torch_perplexity(torch_model, tokens), rtol=RTOL)
    np.testing.assert_allclose(masked, torch_perplexity(torch_model, tokens, mask), rtol=RTOL)
    assert abs(masked / full - 1) > 1e-2, "the mask must change perplexity for the test to mean anything"


def test_perplexity_needs_one_window(loaded):
    lm, _ = loaded("bloom")
    with pytest.raises(ValueError, match="fewer than one window"):
        evaluate.perplexity(lm, np.arange(SEQLEN - 1), SEQLEN)


@pytest.mark.parametrize("name", MODELS)
def test_loglikelihood_matches_pytorch(loaded, small_tokenizer, name):
    lm, torch_model = loaded(name, TOKENIZER_VOCAB)
    context, continuation = PAIRS[2]
    context_ids, _ = harness_pair(small_tokenizer, context, continuation)
    whole = small_tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    assert whole[:len(context_ids)] != context_ids, "PAIRS[2] must merge across the boundary"
    ours = evaluate.loglikelihood(lm, small_tokenizer, PAIRS, batch_size=BATCH, buckets=(16,))
    assert ours.dtype == np.float64 and ours.shape == (len(PAIRS),)
    np.testing.assert_allclose(ours, torch_loglikelihood(torch_model, small_tokenizer, PAIRS), rtol=RTOL)


def test_encode_pair_follows_the_harness(small_tokenizer):
    for context, continuation in PAIRS:
        assert evaluate.encode_pair(small_tokenizer, context, continuation) == \
            harness_pair(small_tokenizer, context, continuation)
    bos = small_tokenizer.bos_token_id
    assert evaluate.encode_pair(small_tokenizer, "", " mat")[0] == [bos]


def test_continuation_swallowed_by_the_context_is_an_error(loaded, small_tokenizer):
    lm, _ = loaded("bloom", TOKENIZER_VOCAB)
    assert harness_pair(small_tokenizer, "the cat sat on the ma", "t.")[1] == []
    with pytest.raises(ValueError, match="no continuation tokens"):
        evaluate.loglikelihood(lm, small_tokenizer, [("the cat sat on the ma", "t.")])


def test_xstorycloze_matches_pytorch(loaded, small_tokenizer):
    lm, torch_model = loaded("bloom", TOKENIZER_VOCAB)
    texts = [  # (four sentences, two endings, right ending)
        (("the cat sat.", "the dog sat.", "a hat.", "a mat."), ("the cat is on the mat.", "bread."), 0),
        (("She went home.", "He stayed.", "They ate.", "bread."), ("the hat.", "They slept well."), 1),
        (("a cat.", "a dog.", "a hat.", "the mat."), ("She went home.", "the dog is not."), 1),
    ]
    stories = [xsc.Story(str(i), "en", sentences, endings, "en", label)
               for i, (sentences, endings, label) in enumerate(texts)]
    mask = random_neuron_mask(lm, 2)
    result = evaluate.xstorycloze(lm, small_tokenizer, stories, mask, batch_size=BATCH, buckets=(64,))
    pairs = [(" ".join(s.sentences) + " The ending in English:", " " + e) for s in stories for e in s.endings]
    expected = torch_loglikelihood(torch_model, small_tokenizer, pairs, mask).reshape(-1, 2)
    np.testing.assert_allclose(result.scores, expected, rtol=RTOL)
    labels = np.array([label for _, _, label in texts])
    right = expected[np.arange(3), labels] > expected[np.arange(3), 1 - labels]
    assert result.accuracy == pytest.approx(right.mean())


def test_masks_sharing_batches_equal_separate_runs(loaded):
    lm, _ = loaded("bloom")
    tokens = token_stream(3, windows=3)
    masks = np.stack([random_neuron_mask(lm, s) for s in (4, 5, 6)])
    shared = evaluate.perplexities(lm, tokens, SEQLEN, masks, batch_size=BATCH, chunk=5)
    separate = [evaluate.perplexity(lm, tokens, SEQLEN, m, batch_size=BATCH, chunk=5) for m in masks]
    np.testing.assert_allclose(shared, separate, rtol=1e-6)
    assert np.ptp(shared) > 1e-2 * shared.min(), "the masks must give different perplexities"
    windows = tokens[: 3 * SEQLEN].reshape(3, SEQLEN)
    per_window = evaluate.window_nll(lm, windows, masks, batch_size=BATCH, chunk=5)
    alone = [evaluate.window_nll(lm, windows[i:i + 1], masks[i], batch_size=BATCH, chunk=5)[0] for i in range(3)]
    np.testing.assert_allclose(per_window, alone, rtol=1e-6)


def test_random_mask_has_exact_size():
    for fraction, seed in [(0.0, 0), (0.1, 1), (0.173, 2), (1.0, 3)]:
        mask = evaluate.random_mask(7, 33, fraction, seed)
        assert mask.shape == (7, 33) and mask.dtype == bool
        assert mask.sum() == round(fraction * 7 * 33)
    assert not np.array_equal(evaluate.random_mask(7, 33, 0.5, 0), evaluate.random_mask(7, 33, 0.5, 1))
    np.testing.assert_array_equal(evaluate.random_mask(7, 33, 0.5, 4), evaluate.random_mask(7, 33, 0.5, 4))


def test_ablation_table_structure(loaded, tmp_path):
    lm, _ = loaded("bloom")
    total = lm.num_layers * lm.num_neurons
    regions = np.zeros((2, total), bool)
    regions[0, :30] = True
    regions[1, 100:161] = True  # 61 neurons, the largest region: 10.59% -> random 11%
    regions = regions.reshape(2, lm.num_layers, lm.num_neurons)
    streams = {"xx": token_stream(7, windows=2), "yy": token_stream(8, windows=3)}
    table = evaluate.ablation_table(lm, streams, regions, ["a", "b"], SEQLEN, batch_size=BATCH, chunk=5)
    assert table.rows == ("full", "a", "b", "random") and table.languages == ("xx", "yy")
    assert table.windows == (2, 3)
    assert table.random_fraction == pytest.approx(0.11)
    np.testing.assert_array_equal(table.neurons, [0, 30, 61, round(0.11 * total)])
    np.testing.assert_allclose(table.neuron_percent, 100 * table.neurons / total)
    masks = [None, regions[0], regions[1], evaluate.random_mask(lm.num_layers, lm.num_neurons, 0.11, 0)]
    for r, mask in enumerate(masks):
        for c, tokens in enumerate(streams.values()):
            expected = evaluate.perplexity(lm, tokens, SEQLEN, mask, batch_size=BATCH, chunk=5)
            np.testing.assert_allclose(table.perplexity[r, c], expected, rtol=1e-6)
    np.testing.assert_allclose(table.increase, 100 * (table.perplexity / table.perplexity[0] - 1))
    assert np.all(table.increase[0] == 0)

    paths = evaluate.write_table(table, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ablation.csv", "ablation.json", "ablation.md"]
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [row["ablated"] for row in rows] == list(table.rows)
    assert float(rows[2]["ppl_yy"]) == pytest.approx(table.perplexity[2, 1])
    assert float(rows[3]["increase_xx"]) == pytest.approx(table.increase[3, 0])
    saved = json.loads(paths["json"].read_text())
    assert saved["seqlen"] == SEQLEN and saved["windows"] == {"xx": 2, "yy": 3}
    assert saved["model"] == lm.source and saved["model"]["path"]
    assert [row["neurons"] for row in saved["rows"]] == table.neurons.tolist()
    markdown = paths["md"].read_text().splitlines()
    assert len(markdown) == 2 + len(table.rows)
    assert markdown[0] == "| ablated | neurons | neurons_percent | ppl_xx | increase_xx | ppl_yy | increase_yy |"


def test_mesh_equals_single_device(checkpoint):
    """Perplexities under shared-batch masks on a (data 4, model 2) mesh of fake CPU devices."""
    path = checkpoint("bloom_mesh", 128)
    single, sharded = lj.load_pretrained(path), lj.load_pretrained(path, mesh=sharding.make_mesh((4, 2)))
    tokens = np.random.RandomState(9).randint(0, 128, 3 * SEQLEN)
    masks = np.stack([random_neuron_mask(single, s) for s in (10, 11)])
    np.testing.assert_allclose(evaluate.perplexities(sharded, tokens, SEQLEN, masks, batch_size=BATCH),
                               evaluate.perplexities(single, tokens, SEQLEN, masks, batch_size=BATCH), rtol=1e-5)


def test_ablation_table_end_to_end_on_real_data(checkpoint, tmp_path):
    """Regions from pooled activations on the bundled parallel sample, the table on real XL-Sum
    articles, and cross-lingual XStoryCloze under every row's mask, on a tiny random model."""
    if not (DATA / "xlsum_sample").is_dir() or not (DATA / "xstorycloze").is_dir():
        pytest.skip(f"real evaluation data not found under {DATA} (shared/data/xlsum_sample, xstorycloze)")
    from lingua_jax import data

    languages = ("en", "zh", "es", "ar", "hi", "id")  # those of both XL-Sum and XStoryCloze
    texts = data.join_documents(data.load_xlsum_jsonl(DATA / "xlsum_sample", languages, limit=4))
    stories = [s for code in languages for s in data.load_xstorycloze(DATA / "xstorycloze", code)[:2]]
    corpus = data.bundled_sample(languages)
    tokenizer = train_bpe_tokenizer(
        [*texts.values(), *corpus.texts, *(" ".join(s.sentences + s.endings) for s in stories)], vocab_size=384)
    lm = lj.load_pretrained(checkpoint("bloom", len(tokenizer)))

    acts = extract.extract(lm, tokenizer, corpus, batch_size=64, pack=False, buckets=(128,),
                            truncate=True)
    regions = np.asarray(metrics.key_regions(acts.acts, acts.lang, threshold=0.05))
    seqlen = 32
    streams = {code: np.array(tokenizer(texts[code], add_special_tokens=False)["input_ids"][: 3 * seqlen + 7])
               for code in languages}
    table = evaluate.ablation_table(lm, streams, regions, languages, seqlen, batch_size=8)

    assert table.rows == ("full", *languages, "random") and table.languages == languages
    assert table.perplexity.shape == (len(languages) + 2, len(languages))
    assert np.all(np.isfinite(table.perplexity)) and np.all(table.perplexity > 1)
    assert table.windows == (3,) * len(languages)
    np.testing.assert_array_equal(table.neurons[1:-1], regions.reshape(len(languages), -1).sum(axis=1))
    largest = table.neurons[1:-1].max() / table.total_neurons
    assert table.random_fraction == pytest.approx(np.ceil(100 * largest) / 100)
    assert table.neurons[-1] == round(table.random_fraction * table.total_neurons)
    assert table.neurons[1:].min() > 0
    paths = evaluate.write_table(table, tmp_path)
    assert len(list(csv.DictReader(paths["csv"].open()))) == len(table.rows)

    masks = [None, *regions, evaluate.random_mask(lm.num_layers, lm.num_neurons, table.random_fraction, 0)]
    for mask in masks:
        result = evaluate.xstorycloze(lm, tokenizer, stories, mask, batch_size=8, buckets=(320,))
        assert result.scores.shape == (len(stories), 2) and np.all(np.isfinite(result.scores))
        assert np.all(result.scores < 0) and 0.0 <= result.accuracy <= 1.0


def test_loss_never_holds_full_float32_logits(checkpoint, monkeypatch):
    """Compiled scratch memory of the scoring kernel stays near the logits budget, far below the
    [B, T, V] float32 logits (2 MiB here); with the vocabulary in blocks (one chunk of all T positions)
    it stays as low, where one chunk's whole logits would be all [B, T, V]."""
    lm = lj.load_pretrained(checkpoint("bloom", 4096))
    b, t = 2, 64
    full_logits = b * t * lm.spec.vocab_size * 4
    monkeypatch.setattr(lm_service, "LOGITS_BUDGET_BYTES", full_logits // 8)
    chunk = lm_service.logits_chunk(b, t, lm.spec.vocab_size)
    assert chunk == t // 8
    ids = np.zeros((b, t), np.int32)
    inputs, _, _ = lm.prepare(lm_service.Inputs(ids, targets=ids, scored=np.ones((b, t), bool)))
    compiled = lm_service.apply_model.lower(lm.module, lm.params, inputs, None, output="logprobs",
                                            chunk=chunk).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < full_logits / 2
    block = lm.vocab_block()
    assert lm_service.logits_chunk(b, t, lm.spec.vocab_size, block) == t
    compiled = lm_service.apply_model.lower(lm.module, lm.params, inputs, None, output="logprobs",
                                            chunk=t, vocab_block=block).compile()
    assert compiled.memory_analysis().temp_size_in_bytes < full_logits / 2
