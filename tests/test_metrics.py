"""lingua_jax.metrics against the paper's equations written the slow, obvious way (float64 numpy loops).

Tolerances: the JAX side is float32 (eps ≈ 1.2e-7). Similarities, LRDS/SADS, block means and
contribution scores are O(1) sums of a few dozen O(1) products, so they match to atol 1e-6. z-scores
divide by a per-neuron std that can be ~0.05, which magnifies float32 rounding ~20×: rtol/atol 1e-5.
"""

import itertools
import math
import re

import jax.numpy as jnp
import numpy as np
import pytest

from lingua_jax import metrics

LANG_VALUES = np.array([7, 3, 11, 5])  # unsorted, non-contiguous: rows follow sorted order 3, 5, 7, 11
N_PER_LANG, M, F = 6, 3, 5


def _corpus(num_langs, n, m, f, seed, lang_scale, sem_scale, lang_values=None):
    """acts [L·n, m, f] = noise + lang_scale·(language vector) + sem_scale·(sentence vector), shuffled."""
    rng = np.random.default_rng(seed)
    lang_values = np.arange(num_langs) if lang_values is None else lang_values
    lang = np.repeat(lang_values, n)
    sem = np.tile(100 + np.arange(n), num_langs)
    lang_vec = rng.normal(size=(num_langs, m, f))
    sem_vec = rng.normal(size=(n, m, f))
    acts = (rng.normal(size=(num_langs * n, m, f))
            + lang_scale * lang_vec[np.repeat(np.arange(num_langs), n)]
            + sem_scale * sem_vec[np.tile(np.arange(n), num_langs)])
    order = rng.permutation(len(lang))  # labels, not positions, must carry the structure
    return acts[order].astype(np.float32), lang[order], sem[order]


@pytest.fixture(scope="module")
def data():
    return _corpus(len(LANG_VALUES), N_PER_LANG, M, F, seed=0, lang_scale=0.5, sem_scale=0.5,
                   lang_values=LANG_VALUES)


# --- the paper's definitions, slow and obvious -----------------------------------------------------

def ref_vectors(acts):
    """eq. 5-6: concatenate the layers, then divide by the L2 norm."""
    out = []
    for sample in np.asarray(acts, np.float64):
        v = np.concatenate(list(sample))
        out.append(v / math.sqrt(sum(x * x for x in v)))
    return np.array(out)


def ref_similarity(vectors):
    n = len(vectors)
    return np.array([[sum(vectors[i] * vectors[j]) for j in range(n)] for i in range(n)])


def ref_lrds_sads(sim, lang, sem):
    same_lang_diff_sem, diff_lang_diff_sem, same_sem_diff_lang = [], [], []
    for i in range(len(lang)):
        for j in range(len(lang)):
            if i == j:
                continue
            if lang[i] == lang[j] and sem[i] != sem[j]:
                same_lang_diff_sem.append(sim[i, j])
            if lang[i] != lang[j] and sem[i] != sem[j]:
                diff_lang_diff_sem.append(sim[i, j])
            if lang[i] != lang[j] and sem[i] == sem[j]:
                same_sem_diff_lang.append(sim[i, j])
    base = np.mean(diff_lang_diff_sem)
    return np.mean(same_lang_diff_sem) - base, np.mean(same_sem_diff_lang) - base


def ref_contribution(acts, lang):
    """C_l(k) = Σ_{i<j} a_k(s_i) a_k(s_j) over each language's samples (sorted language order)."""
    a = ref_vectors(acts)
    scores = []
    for value in sorted(set(lang.tolist())):
        members = [i for i in range(len(lang)) if lang[i] == value]
        total = np.zeros(a.shape[1])
        for i, j in itertools.combinations(members, 2):
            total += a[i] * a[j]
        scores.append(total.reshape(acts.shape[1:]))
    return np.array(scores)


def ref_zscores(scores):
    num = scores.shape[0]
    z = np.full(scores.shape, np.nan)
    for k in np.ndindex(scores.shape[1:]):
        values = [scores[(l,) + k] for l in range(num)]
        mu = sum(values) / num
        sd = math.sqrt(sum((v - mu) ** 2 for v in values) / num)
        if sd > 0:
            for l in range(num):
                z[(l,) + k] = (values[l] - mu) / sd
    return z


def ref_top_fraction(z, fraction):
    regions = np.zeros(z.shape, bool)
    count = round(fraction * z[0].size)
    for l in range(z.shape[0]):
        ranked = sorted((v, k) for k, v in np.ndenumerate(z[l]) if not np.isnan(v))
        for _, k in ranked[::-1][:count]:
            regions[(l,) + k] = True
    return regions


# --- metrics against the definitions ---------------------------------------------------------------

def test_normalize_and_similarity(data):
    acts, _, _ = data
    a = ref_vectors(acts)
    np.testing.assert_allclose(metrics.normalize(acts), a, atol=1e-6)
    np.testing.assert_allclose(metrics.similarity(acts), ref_similarity(a), atol=1e-6)
    per_layer = [np.asarray(x, np.float64) / np.linalg.norm(x) for x in acts.reshape(-1, F)]
    np.testing.assert_allclose(metrics.normalize_layers(acts).reshape(-1, F), per_layer, atol=1e-6)


def test_lrds_sads(data):
    acts, lang, sem = data
    sim = metrics.similarity(acts)
    want_lrds, want_sads = ref_lrds_sads(ref_similarity(ref_vectors(acts)), lang, sem)
    assert abs(want_lrds) > 1e-3 and abs(want_sads) > 1e-3  # a comparison of non-trivial values
    assert metrics.lrds(sim, lang, sem) == pytest.approx(want_lrds, abs=1e-6)
    assert metrics.sads(sim, lang, sem) == pytest.approx(want_sads, abs=1e-6)


def test_layerwise(data):
    acts, lang, sem = data
    want = []
    for m in range(M):
        block = [np.asarray(x, np.float64) / np.linalg.norm(x) for x in acts[:, m]]
        want.append(ref_lrds_sads(ref_similarity(np.array(block)), lang, sem))
    got_lrds, got_sads = metrics.layerwise(acts, lang, sem)
    assert got_lrds.shape == got_sads.shape == (M,)
    np.testing.assert_allclose(got_lrds, [w[0] for w in want], atol=1e-6)
    np.testing.assert_allclose(got_sads, [w[1] for w in want], atol=1e-6)


def test_block_map(data):
    acts, lang, _ = data
    sim = ref_similarity(ref_vectors(acts))
    languages = sorted(set(lang.tolist()))
    want = np.zeros((len(languages), len(languages)))
    for p, q in np.ndindex(want.shape):
        want[p, q] = np.mean([sim[i, j] for i in range(len(lang)) for j in range(len(lang))
                              if i != j and lang[i] == languages[p] and lang[j] == languages[q]])
    np.testing.assert_allclose(metrics.block_map(metrics.similarity(acts), lang), want, atol=1e-6)


def test_contribution_scores(data):
    acts, lang, _ = data
    want = ref_contribution(acts, lang)
    got = metrics.contribution_scores(acts, lang)
    assert got.shape == (len(LANG_VALUES), M, F)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_contribution_scores_from_running_sums(data):
    """Sums accumulated in two uneven batches give the pairwise definition."""
    acts, lang, _ = data
    a = ref_vectors(acts).reshape(acts.shape)
    languages = sorted(set(lang.tolist()))
    sums, squares = np.zeros((2, len(languages), M, F))
    for batch in (slice(0, 7), slice(7, None)):
        for vec, value in zip(a[batch], lang[batch]):
            sums[languages.index(value)] += vec
            squares[languages.index(value)] += vec * vec
    got = metrics.contribution_scores_from_sums(sums.astype(np.float32), squares.astype(np.float32))
    np.testing.assert_allclose(got, ref_contribution(acts, lang), atol=1e-6)


def test_language_sums_in_place_on_device_and_shuffled_agree(data):
    """Contiguous languages (read in place), shuffled ones (gathered) and a device array give the
    per-language sums of the normalised vectors."""
    acts, lang, _ = data
    a = ref_vectors(acts).reshape(acts.shape)
    languages = sorted(set(lang.tolist()))
    want = [np.stack([(a[lang == v] ** p).sum(axis=0) for v in languages]) for p in (1, 2)]
    order = np.argsort(lang, kind="stable")
    for x, labels in ((acts, lang), (acts[order], lang[order]), (jnp.asarray(acts), lang)):
        for got, expected in zip(metrics.language_sums(x, labels), want):
            np.testing.assert_allclose(got, expected, atol=1e-6)


def test_zscores(data):
    acts, lang, _ = data
    want = ref_zscores(ref_contribution(acts, lang))
    got = np.asarray(metrics.zscores(metrics.contribution_scores(acts, lang)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert got.max() <= math.sqrt(len(LANG_VALUES) - 1) + 1e-5


def test_zscores_of_equal_scores_are_nan_and_in_no_region():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, M, F)).astype(np.float32)
    scores[:, 0, 0] = 0.1  # equal in every language: std 0, no z-score (a naive float32 std is 7e-9)
    scores[:, 2, 4] = 0.0
    z = np.asarray(metrics.zscores(scores))
    assert np.isnan(z[:, 0, 0]).all() and np.isnan(z[:, 2, 4]).all()
    assert np.isfinite(np.delete(z.reshape(3, -1), [0, M * F - 1], axis=1)).all()
    for threshold in (1.0, 0.5):
        regions = np.asarray(metrics.key_regions_from_scores(scores, threshold))
        assert not regions[:, 0, 0].any() and not regions[:, 2, 4].any()


def test_key_regions_and_statistics(data):
    acts, lang, _ = data
    z = ref_zscores(ref_contribution(acts, lang))
    regions = np.asarray(metrics.key_regions(acts, lang, threshold=1.2))
    want = z > 1.2
    assert want.any()
    np.testing.assert_array_equal(regions, want)

    assert metrics.sklr(regions) == sum(int(v) for v in want.flat)
    want_counts = [[int(want[l, m].sum()) for m in range(M)] for l in range(len(want))]
    np.testing.assert_array_equal(metrics.counts_per_layer(regions), want_counts)
    sets = [{k for k, v in np.ndenumerate(r) if v} for r in want]
    np.testing.assert_array_equal(metrics.overlap(regions), [[len(p & q) for q in sets] for p in sets])
    want_jaccard = [[len(p & q) / len(p | q) if p | q else np.nan for q in sets] for p in sets]
    np.testing.assert_allclose(metrics.jaccard(regions), want_jaccard, atol=1e-6)


def test_top_fraction_selects_the_right_count(data):
    acts, lang, _ = data
    z = ref_zscores(ref_contribution(acts, lang))
    regions = np.asarray(metrics.key_regions(acts, lang, threshold=0.2))
    np.testing.assert_array_equal(regions.reshape(len(LANG_VALUES), -1).sum(axis=1), [3] * 4)  # 0.2·15
    np.testing.assert_array_equal(regions, ref_top_fraction(z, 0.2))


# --- planted structure ------------------------------------------------------------------------------

PLANTED_L, PLANTED_N, PLANTED_F = 9, 8, 16


def _planted(sem_scale):
    """9 languages; language l drives neuron (l % M, l) to +4; translations share a sentence vector."""
    acts, lang, sem = _corpus(PLANTED_L, PLANTED_N, M, PLANTED_F, seed=3, lang_scale=0.0,
                              sem_scale=sem_scale)
    for l in range(PLANTED_L):
        acts[lang == l, l % M, l] += 4.0
    return acts, lang, sem


def test_planted_structure():
    acts, lang, sem = _planted(sem_scale=1.0)
    sim = metrics.similarity(acts)
    planted_lrds, planted_sads = metrics.lrds(sim, lang, sem), metrics.sads(sim, lang, sem)
    assert planted_lrds > 0.1 and planted_sads > 0.3

    regions = np.asarray(metrics.key_regions(acts, lang, threshold=2.0))
    for l in range(PLANTED_L):
        assert regions[l, l % M, l], f"planted neuron of language {l} missing from its region"

    layer_lrds, layer_sads = metrics.layerwise(acts, lang, sem)
    assert (np.asarray(layer_lrds) > 0.05).all() and (np.asarray(layer_sads) > 0.3).all()

    flat_acts, flat_lang, flat_sem = _planted(sem_scale=0.0)
    flat_sim = metrics.similarity(flat_acts)
    assert abs(metrics.sads(flat_sim, flat_lang, flat_sem)) < 0.1 * planted_sads
    assert metrics.lrds(flat_sim, flat_lang, flat_sem) > 0.1


def _stride_sads(sim, stride, block):
    """The reference repo's SADS: reorder with `stride`, average blocks with their diagonals masked,
    then diagonal-block mean minus off-diagonal-block mean. sim must be in language-major order."""
    n = len(sim)
    order = [j for i in range(stride) for j in range(i, n, stride)]
    s = sim[np.ix_(order, order)]
    means = np.zeros((n // block, n // block))
    for p, q in np.ndindex(means.shape):
        b = s[p * block:(p + 1) * block, q * block:(q + 1) * block]
        means[p, q] = b[~np.eye(block, dtype=bool)].mean()
    off = ~np.eye(len(means), dtype=bool)
    return np.diag(means).mean() - means[off].mean()


def test_reference_stride_bug_is_not_reproduced():
    """On language-major data, stride n gives the definition; the reference's stride n+1 gives ≈ 0."""
    acts, lang, sem = _planted(sem_scale=1.0)
    order = np.lexsort((sem, lang))
    acts, lang, sem = acts[order], lang[order], sem[order]
    sim = np.asarray(metrics.similarity(acts), np.float64)
    ours = metrics.sads(sim, lang, sem)
    assert _stride_sads(sim, PLANTED_N, PLANTED_L) == pytest.approx(ours, abs=1e-6)
    assert abs(_stride_sads(sim, PLANTED_N + 1, PLANTED_L)) < 0.2 * ours


# --- errors -----------------------------------------------------------------------------------------

def test_unreachable_threshold_is_an_error():
    acts, lang, _ = _corpus(5, 3, 2, 4, seed=5, lang_scale=0.5, sem_scale=0.5)
    message = "τ=2 is unreachable with 5 languages: max z-score is √4 = 2.0; use more languages"
    with pytest.raises(ValueError, match=re.escape(message)):
        metrics.key_regions(acts, lang, threshold=2.0)


def _zeroed(acts, index):
    out = acts.copy()
    out[index] = 0.0
    return out


@pytest.mark.parametrize("call, match", [
    (lambda a, l, s: metrics.contribution_scores(a, np.r_[l[:-1], 99]), "same number of samples"),
    (lambda a, l, s: metrics.layerwise(a, np.zeros_like(l), s), "at least two languages"),
    (lambda a, l, s: metrics.similarity(a[:, 0]), r"acts must be 3-D"),
    (lambda a, l, s: metrics.key_regions(a[None], l), r"acts must be 3-D"),
    (lambda a, l, s: metrics.layerwise(a, l[:-1], s), r"lang has shape \(23,\) but acts has 24"),
    (lambda a, l, s: metrics.layerwise(a, l, s[:-1]), r"sem has shape \(23,\) but acts has 24"),
    (lambda a, l, s: metrics.lrds(np.eye(24), l[:-4], s[:-4]), r"lang has shape \(20,\) but sim has 24"),
    (lambda a, l, s: metrics.sads(np.ones((24, 23)), l, s), r"sim must be a square"),
    (lambda a, l, s: metrics.similarity(_zeroed(a, 5)), r"sample 5: activation vector is all zeros"),
    (lambda a, l, s: metrics.layerwise(_zeroed(a, (2, 1)), l, s),
     r"sample 2, layer 1: activation vector is all zeros"),
    (lambda a, l, s: metrics.key_regions(a, l, threshold=0.0), "threshold must be > 0"),
    (lambda a, l, s: metrics.key_regions(a, l, threshold=0.01), "selects none"),
    (lambda a, l, s: metrics.key_regions_from_scores(np.ones((1, M, F))), "at least two languages"),
    (lambda a, l, s: metrics.contribution_scores_from_sums(np.ones((4, M, F)), np.ones((4, M))),
     "must have the same shape"),
])
def test_errors(data, call, match):
    acts, lang, sem = data
    with pytest.raises(ValueError, match=match):
        call(acts, lang, sem)
