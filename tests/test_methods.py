"""lingua_jax.methods against each definition written the slow, obvious way: sklearn's average
precision, numpy percentiles, the reference code's pairwise loop with its 1e-5 offset, LAPE's order as
a sorted list, and the hypergeometric tail as a sum of exact binomial fractions; and each method
recovering planted language neurons."""

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from lingua_jax import metrics, methods
from lingua_jax.extract import Activations

from test_lape import reference_entropy, kth_smallest


def activations(acts, lang):
    languages = tuple(f"l{i}" for i in range(len(np.unique(lang))))
    return Activations(acts, lang, np.tile(np.arange(len(lang) // len(languages)), len(languages)), languages, {})


def random_store(seed=0, num=3, n=12, m=2, f=60):
    rng = np.random.default_rng(seed)
    acts = rng.normal(size=(num * n, m, f)).astype(np.float32)
    return acts, rng.permutation(np.repeat(np.arange(num), n))


def planted_store(seed=1, num=4, n=30, m=3, f=100, per_language=5):
    """Noise, plus `per_language` neurons per language that fire (+3) on that language's sentences only."""
    rng = np.random.default_rng(seed)
    lang = rng.permutation(np.repeat(np.arange(num), n))
    acts = rng.normal(0.0, 0.3, size=(num * n, m, f)).astype(np.float32) + 1.0
    planted = np.zeros((num, m, f), bool)
    for l, chosen in enumerate(rng.permutation(m * f)[:num * per_language].reshape(num, per_language)):
        planted[l].flat[chosen] = True
        layer, neuron = np.nonzero(planted[l])
        acts[np.flatnonzero(lang == l)[:, None], layer, neuron] += 3.0
    return acts, lang, planted


# --- the statistics, slow and obvious --------------------------------------------------------------

def test_average_precision_equals_sklearn_with_ties():
    acts, lang = random_store()
    acts[:, 0, :20] = np.round(acts[:, 0, :20])  # many ties
    acts[:, 1, 7] = 0.25  # every sentence tied: AP = the language's share
    x = acts.reshape(len(acts), -1)
    expected = np.array([[average_precision_score(lang == l, x[:, k]) for k in range(x.shape[1])]
                         for l in range(3)]).reshape(3, *acts.shape[1:])
    got = methods.average_precision(acts, lang)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got[:, 1, 7], 1 / 3, atol=1e-7)


def test_average_precision_spans_blocks(monkeypatch):
    """Columns cut into blocks (the last one padded) give the one-block numbers."""
    acts, lang = random_store(seed=3, f=50)
    whole = methods.average_precision(acts, lang)
    monkeypatch.setattr(methods, "BLOCK", 16)
    np.testing.assert_allclose(methods.average_precision(acts, lang), whole, atol=1e-6)


def test_aprob_probabilities_equal_numpy():
    acts, lang = random_store(seed=2)
    x = acts.reshape(len(acts), -1).astype(np.float64)
    for q in (0.5, 0.9):
        above = x > np.quantile(x, q, axis=0)
        expected = np.array([above[lang == l].mean(axis=0) for l in range(3)]).reshape(3, *acts.shape[1:])
        np.testing.assert_allclose(methods.aprob_probabilities(acts, lang, q), expected, atol=1e-7)


def reference_zscores(acts, lang, offset):
    """The public code: normalised whole vectors plus `offset`, a loop over every pair i < j of each
    language, then z over languages (its running-mean scale is the same for all languages here)."""
    vectors = [np.concatenate(list(s)) / np.linalg.norm(np.concatenate(list(s))) + offset
               for s in np.asarray(acts, np.float64)]
    scores = []
    for l in np.unique(lang):
        rows = np.flatnonzero(lang == l)
        scores.append(sum(vectors[i] * vectors[j] for i, j in itertools.combinations(rows, 2)))
    scores = np.array(scores)
    return ((scores - scores.mean(0)) / scores.std(0)).reshape(-1, *np.shape(acts)[1:])


@pytest.mark.parametrize("offset", [0.0, metrics.REFERENCE_OFFSET, 1e-2])
def test_zscores_with_the_reference_offset_equal_its_pairwise_loop(offset):
    acts, lang = random_store(seed=4, f=30)
    z = np.asarray(metrics.zscores(metrics.contribution_scores(acts, lang, offset)))
    np.testing.assert_allclose(z, reference_zscores(acts, lang, offset), rtol=1e-4, atol=1e-4)
    sums, squares = metrics.language_sums(acts, lang)  # the streamed-sums path gives the same scores
    np.testing.assert_allclose(metrics.contribution_scores_from_sums(sums, squares, offset, count=12),
                               metrics.contribution_scores(acts, lang, offset), rtol=1e-6, atol=1e-7)


def test_the_offset_moves_z_scores():
    acts, lang = random_store(seed=4, f=30)
    plain = np.asarray(metrics.zscores(metrics.contribution_scores(acts, lang)))
    shifted = np.asarray(metrics.zscores(metrics.contribution_scores(acts, lang, 1e-2)))
    assert np.abs(plain - shifted).max() > 0.05
    with pytest.raises(ValueError, match="count"):
        metrics.contribution_scores_from_sums(np.zeros((2, 1, 3)), np.zeros((2, 1, 3)), offset=1e-5)


def test_lape_ranking_is_lapes_order_per_language():
    rng = np.random.default_rng(6)
    probs = rng.uniform(0, 1, (3, 2, 40)).astype(np.float32) ** 3
    ranking = np.asarray(metrics.lape_ranking(probs, 0.9, 0.8))
    values = probs.ravel().tolist()
    filter_value, bar = kth_smallest(values, 0.9), kth_smallest(values, 0.8)
    for l in range(3):
        eligible = sorted((reference_entropy(probs[:, i, j]), i * 40 + j) for i in range(2) for j in range(40)
                          if max(probs[:, i, j]) > filter_value and probs[l, i, j] > bar)
        assert sorted(np.flatnonzero(~np.isnan(ranking[l]))) == sorted(k for _, k in eligible)
        for count in (1, 5, len(eligible) + 3):
            picked = np.asarray(metrics.top_per_language(ranking, count))[l]
            assert set(np.flatnonzero(picked)) == {k for _, k in eligible[:count]}, count


def test_top_and_bottom_are_the_highest_and_lowest_disjoint():
    rng = np.random.default_rng(7)
    ap = rng.uniform(size=(2, 3, 10)).astype(np.float32)
    picked = np.asarray(methods.top_and_bottom(ap, 4, 3))
    for l in range(2):
        order = np.argsort(ap[l].ravel())
        assert set(np.flatnonzero(picked[l])) == set(order[-4:]) | set(order[:3])
    ties = np.full((1, 1, 6), 0.5, np.float32)  # all tied: still top + bottom distinct neurons
    assert np.asarray(methods.top_and_bottom(ties, 3, 3)).sum() == 6
    with pytest.raises(ValueError, match="at most"):
        methods.top_and_bottom(ties, 4, 3)


# --- the hypergeometric overlap ---------------------------------------------------------------------

def exact_tail(size_a, size_b, shared, total):
    """P(X >= shared), X the overlap of a fixed size_a-set with a uniform random size_b-set, exactly."""
    ways = sum(math.comb(size_a, x) * math.comb(total - size_a, size_b - x)
               for x in range(shared, min(size_a, size_b) + 1))
    return Fraction(ways, math.comb(total, size_b))


@pytest.mark.parametrize("size_a,size_b,shared,total", [
    (10, 12, 0, 100), (10, 12, 1, 100), (10, 12, 4, 100), (10, 12, 10, 100), (50, 50, 30, 120),
    (300, 250, 40, 4000), (300, 250, 19, 4000), (1, 1, 1, 2048), (0, 5, 0, 10)])
def test_overlap_p_values_equal_the_exact_tail(size_a, size_b, shared, total):
    got = methods.overlap_p_value(size_a, size_b, shared, total)
    expected = exact_tail(size_a, size_b, shared, total)
    assert got == pytest.approx(float(expected), rel=1e-9, abs=1e-300)


def test_overlap_rows():
    a = np.zeros((2, 2, 5), bool)
    b = np.zeros((2, 2, 5), bool)
    a[0, 0, :3], b[0, 0, 1:4] = True, True
    rows = methods.overlaps({"x": a, "y": b}, ["en", "fr"])
    assert rows[0] == {"a": "x", "b": "y", "language": "en", "size_a": 3, "size_b": 3, "shared": 2,
                       "jaccard": 0.5, "expected": 0.9, "p_value": pytest.approx(float(exact_tail(3, 3, 2, 10)))}
    assert rows[1]["jaccard"] is None and rows[1]["p_value"] == 1.0  # both empty: undefined, not 0


# --- every method: planted neurons, budgets, settings ----------------------------------------------

SETTINGS = {"regions": dict(threshold=1.5, offset=0.0), "lape": dict(top_rate=20 / 300, filter_rate=0.95, bar_ratio=0.95),
            "ap": dict(top=5, bottom=0), "aprob": dict(quantile=0.9, top_rate=20 / 300, filter_rate=0.95,
                                                       bar_ratio=0.95)}


def planted_probabilities(lang, planted, seed=2):
    """Token-level probabilities as LAPE counts them: planted neurons fire on their language's tokens."""
    rng = np.random.default_rng(seed)
    probs = rng.uniform(0.3, 0.5, planted.shape)
    return np.where(planted, 0.95, np.where(planted.any(0), 0.02, probs)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_every_method_recovers_planted_neurons(name):
    acts, lang, planted = planted_store()
    evidence = methods.Evidence(activations(acts, lang), planted_probabilities(lang, planted))
    method = methods.METHODS[name]
    count = 10 if name == "ap" else 5  # ap: the 5 highest, and the 5 lowest (neurons of other languages)
    own, budget = method.select(evidence, SETTINGS[method.settings], (None, count))
    np.testing.assert_array_equal(budget & planted, planted)  # the 5 best per language are the planted 5
    assert budget.reshape(len(budget), -1).sum(axis=1).tolist() == [count] * len(budget)
    if name.startswith("zscore"):
        assert (own & planted).sum() == planted.sum()  # z > 1.5: all planted, and perhaps a few more
    else:
        np.testing.assert_array_equal(own, planted)


def test_ap_budget_is_an_even_split_of_top_and_bottom():
    acts, lang = random_store(seed=8)
    evidence = methods.Evidence(activations(acts, lang))
    ap = methods.average_precision(acts, lang)
    regions, = methods.METHODS["ap"].select(evidence, SETTINGS["ap"], (7,))
    np.testing.assert_array_equal(regions, methods.top_and_bottom(ap, 4, 3))
    with pytest.raises(ValueError, match=r"ap.top=100 \+ ap.bottom=30 exceeds the model's 120 neurons"):
        methods.METHODS["ap"].select(evidence, dict(top=100, bottom=30))


def test_the_method_zscore_is_the_key_regions():
    acts, lang = random_store(seed=9, num=4)
    regions, = methods.METHODS["zscore"].select(methods.Evidence(activations(acts, lang)), SETTINGS["regions"])
    np.testing.assert_array_equal(regions, metrics.key_regions(acts, lang, 1.5))
    ref, = methods.METHODS["zscore_ref"].select(methods.Evidence(activations(acts, lang)), SETTINGS["regions"])
    np.testing.assert_array_equal(ref, metrics.key_regions(acts, lang, 1.5, offset=1e-5))


def test_lape_without_probabilities_is_a_clear_error():
    acts, lang = random_store()
    with pytest.raises(ValueError, match="activation probabilities"):
        methods.METHODS["lape"].select(methods.Evidence(activations(acts, lang)), SETTINGS["lape"])


@pytest.mark.parametrize("names,match", [("zscore,nope", "unknown: nope"), ("lape,lape", "repeated"),
                                         ("", "empty")])
def test_parse_errors(names, match):
    with pytest.raises(ValueError, match=match):
        methods.parse(names)
    assert [m.name for m in methods.parse("ap, zscore")] == ["ap", "zscore"]


@pytest.mark.parametrize("budget,count", [(0.02, 41), (0.5, 1024), (41, 41), (2048, 2048)])
def test_budget_count(budget, count):
    assert methods.budget_count(budget, 2048) == count


@pytest.mark.parametrize("budget", [0, -1, 0.0001, 2.5, 4096])
def test_budget_errors(budget):
    with pytest.raises(ValueError, match="compare.budget"):
        methods.budget_count(budget, 2048)
