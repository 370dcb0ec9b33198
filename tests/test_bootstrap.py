"""Bootstrap intervals: the closed forms equal the metrics recomputed on each resample, the slow way."""

import numpy as np
import pytest

from lingua_jax import bootstrap, metrics


def planted(languages=3, n=7, layers=2, neurons=6, seed=0):
    """Activations [L·n, M, F] (language-major, sentence id = position) with a language signal on a few
    neurons and a meaning signal shared across languages, plus labels."""
    rng = np.random.default_rng(seed)
    meaning = rng.normal(size=(n, layers, neurons))
    acts = np.stack([meaning + rng.normal(size=(n, layers, neurons)) + 3.0 * (np.arange(neurons) == l)
                     for l in range(languages)]).reshape(languages * n, layers, neurons) ** 2
    return acts.astype(np.float32), np.repeat(np.arange(languages), n), np.tile(np.arange(n), languages)


def resample(acts, lang, sem, ids):
    """The resampled corpus, built the obvious way: each language's rows of the drawn sentence ids."""
    rows = [np.flatnonzero((lang == l) & (sem == i))[0] for l in np.unique(lang) for i in ids]
    return acts[rows], np.repeat(np.unique(lang), len(ids)), np.tile(ids, len(np.unique(lang)))


def test_lrds_and_sads_of_each_resample_equal_the_slow_loop():
    acts, lang, sem = planted()
    drawn = bootstrap.draws(7, samples=25, seed=3)
    fast = bootstrap.divergences(acts, lang, sem, drawn)
    for b, ids in enumerate(drawn):
        r_acts, r_lang, r_sem = resample(acts, lang, sem, ids)
        sim = metrics.similarity(r_acts)
        assert fast["lrds"][b] == pytest.approx(metrics.lrds(sim, r_lang, r_sem), abs=1e-6)
        assert fast["sads"][b] == pytest.approx(metrics.sads(sim, r_lang, r_sem), abs=1e-6)
        per_layer = metrics.layerwise(r_acts, r_lang, r_sem)
        np.testing.assert_allclose(fast["lrds_layers"][b], per_layer[0], atol=1e-6)
        np.testing.assert_allclose(fast["sads_layers"][b], per_layer[1], atol=1e-6)
    assert np.ptp(fast["lrds"]) > 0 and len(set(map(tuple, drawn))) == 25


@pytest.mark.parametrize("threshold", [1.0, 0.2])
def test_regions_of_each_resample_equal_the_slow_loop(threshold, monkeypatch):
    monkeypatch.setattr(bootstrap, "CHUNK_BYTES", 4 * 3 * 12 * 8)  # 8 resamples a call: full and partial chunks
    acts, lang, sem = planted(seed=1)
    drawn = bootstrap.draws(7, samples=21, seed=5)
    slow = [np.asarray(metrics.key_regions(*resample(acts, lang, sem, ids)[:2], threshold)) for ids in drawn]
    frequency, stability = bootstrap.region_stability(acts, lang, sem, drawn, threshold)
    np.testing.assert_allclose(frequency, np.mean(slow, axis=0))
    full = np.asarray(metrics.key_regions(acts, lang, threshold))
    jaccard = [[(r[l] & full[l]).sum() / max((r[l] | full[l]).sum(), 1) for l in range(3)] for r in slow]
    np.testing.assert_allclose(stability, jaccard)
    assert frequency[0, :, 0].max() > 0.9  # the planted neuron of language 0 is picked in most resamples


def test_interval_is_the_central_95_percent():
    interval = bootstrap.Interval.of(0.5, np.arange(1001) / 1000)
    assert (interval.value, interval.low, interval.high) == (0.5, pytest.approx(0.025), pytest.approx(0.975))


def test_a_corpus_that_is_not_parallel_is_refused():
    acts, lang, sem = planted()
    sem = sem.copy()
    sem[0] = 99
    with pytest.raises(ValueError, match="every language to hold each sentence once"):
        bootstrap.divergences(acts, lang, sem, bootstrap.draws(7, 2))
