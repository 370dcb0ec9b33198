"""Definitions of language-specific neurons behind one interface, and how far the sets they find
overlap (METHOD.md, "Beyond the paper").

A `Method` turns `Evidence` into bool regions [L, M, F] (L languages in the activation store's order,
M layers, F neurons per layer) in two ways: its paper's own selection, with the public code's
parameters as defaults (each method its own region sizes), and its ranking of the neurons cut at a
common budget of neurons per language, so that methods can be compared at one size. Adding a method
is one entry in METHODS.

| name | definition | evidence | own selection |
|---|---|---|---|
| zscore | this paper: z-score over languages of the contribution scores (eq. 10-13) | pooled store, each sentence's vector normalised | z > regions.threshold |
| zscore_ref | the same on a(s) + 1e-5, as the public code computes it (METHOD.md) | likewise | likewise |
| lape | Tang et al. 2024: low entropy of the activation probabilities over languages | share of each language's tokens with activation > 0 | `metrics.lape_regions` (lape.*) |
| ap | Kojima et al. 2024: average precision of a neuron's activation as a detector of one language | pooled store, raw | the ap.top highest and ap.bottom lowest per language |
| aprob | activation probability above a percentile (after Mondal et al. 2025) | share of each language's sentences above the neuron's aprob.quantile over all sentences | LAPE's rule (aprob.*) |

At a budget b: zscore takes the b highest z; lape and aprob the b lowest-entropy neurons among those
LAPE would give the language (`metrics.lape_ranking`: fewer where fewer qualify); ap the b - b//2
highest and b//2 lowest AP, Kojima et al.'s even split.

Where each follows its source, and where not:
- ap: Kojima et al.'s code (kojima-takeshi188/lang_neuron, a fork of apple/ml-selfcond) mean-pools
  every response over a sentence's tokens (one sentence per batch, so no padding) and scores each unit
  with sklearn's `average_precision_score`, the language's sentences positive and the other languages'
  negative; it keeps the top 1000 and bottom 1000 units per language. They rank the outputs of every
  linear layer (attention and MLP); here the units are the MLP neurons, and the pooled store holds
  exactly those mean-pooled activations.
- aprob: Mondal et al.'s public code (act_prob_90p) counts the tokens whose activation exceeds the
  language's own 90th percentile of that neuron, which is about 0.1 for every neuron in every
  language by construction, so a selection on it cannot tell languages apart. Here the percentile is
  one per neuron, over all languages' sentences together, on the pooled store (exact, and no second
  pass over tokens): P_l(k) = share of language l's sentences s with a_k(s) > quantile_k. The
  probabilities then go through LAPE's selection (its parameters as aprob.*), as LAPE's did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from itertools import combinations
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from scipy import stats

from lingua_jax import metrics
from lingua_jax.extract import Activations
from lingua_jax.progress import progress

BLOCK = 2048  # columns of the store [N, M·F] per device call of `average_precision` and `aprob_probabilities`


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What the methods read: the pooled activation store (`extract.Activations`: acts [N, M, F], lang
    [N], the streamed sums), and LAPE's token-level activation probabilities float [L, M, F]
    (`lape.activation_probabilities`; None when no chosen method needs them)."""

    activations: Activations
    probabilities: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Method:
    """One definition of language-specific neurons.

    statistic(evidence, params) -> its per-neuron statistic [L, M, F]; own(statistic, params) -> bool
    [L, M, F], its paper's selection; at_budget(statistic, count, params) -> bool [L, M, F], at most
    `count` neurons per language. params are the config section `settings`, with `fixed` on top.
    """

    name: str
    settings: str
    statistic: Callable[[Evidence, Mapping[str, Any]], ArrayLike]
    own: Callable[[ArrayLike, Mapping[str, Any]], ArrayLike]
    at_budget: Callable[[ArrayLike, int, Mapping[str, Any]], ArrayLike]
    needs_probabilities: bool = False
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def select(self, evidence: Evidence, settings: Mapping[str, Any], budgets: Sequence[int | None] = (None,)
               ) -> list[np.ndarray]:
        """bool [L, M, F] regions, one per budget (None: the method's own selection), from one statistic."""
        params = {**settings, **self.fixed}
        statistic = self.statistic(evidence, params)
        return [np.asarray(self.own(statistic, params) if budget is None else self.at_budget(statistic, budget, params))
                for budget in budgets]


# --- average precision (Kojima et al. 2024) ------------------------------------------------------

def _columns(acts: ArrayLike, lang: ArrayLike, block_fn: Callable[[jax.Array, jax.Array], jax.Array], what: str
             ) -> np.ndarray:
    """block_fn(block [N, BLOCK], members float32 [N, L]) -> [L, BLOCK] over the store's columns (the
    last block zero-padded: one compile) -> float32 [L, M, F]."""
    n, m, f = metrics._check_acts(acts)
    codes, num = metrics._languages(lang, n, "acts")
    members = jnp.asarray(metrics._one_hot(codes, num))
    x = np.asarray(acts, np.float32).reshape(n, m * f)
    out = np.empty((num, m * f), np.float32)
    for start in progress(range(0, m * f, BLOCK), -(-m * f // BLOCK), what):
        block = x[:, start:start + BLOCK]
        width = block.shape[1]
        if width < BLOCK:
            block = np.pad(block, ((0, 0), (0, BLOCK - width)))
        out[:, start:start + width] = np.asarray(block_fn(jnp.asarray(block), members))[:, :width]
    return out.reshape(num, m, f)


@jax.jit
def _average_precision_block(block: jax.Array, members: jax.Array) -> jax.Array:
    """block [N, c] scores, members [N, L] one-hot -> [L, c] AP of each column for each language.

    AP = (1/P) Σ_i y_i · precision at the last position of i's tie group in descending order: sklearn's
    sum over distinct thresholds of (recall step) × precision."""
    n = block.shape[0]
    order = jnp.argsort(-block, axis=0)
    ranked = jnp.take_along_axis(block, order, axis=0)
    last = jnp.concatenate([ranked[1:] != ranked[:-1], jnp.ones((1, block.shape[1]), bool)])
    end = jax.lax.cummin(jnp.where(last, jnp.arange(n)[:, None], n - 1), axis=0, reverse=True)  # [N, c]
    labels = members[order]  # [N, c, L]
    hits = jnp.cumsum(labels, axis=0)
    precision = jnp.take_along_axis(hits, end[..., None], axis=0) / (end[..., None] + 1).astype(jnp.float32)
    return (jnp.sum(labels * precision, axis=0) / jnp.sum(labels, axis=0)).T


def average_precision(acts: ArrayLike, lang: ArrayLike) -> np.ndarray:
    """acts [N, M, F] pooled activations, lang [N] -> float32 [L, M, F]: AP of neuron (m, f)'s
    activation as a score for "sentence is in language l" (positives: l's sentences, negatives: all
    others), as sklearn's `average_precision_score` (ties share the precision at their threshold)."""
    return _columns(acts, lang, _average_precision_block, "average precision")


def top_and_bottom(ap: ArrayLike, top: int, bottom: int) -> jax.Array:
    """ap [L, M, F] -> bool [L, M, F]: per language its `top` highest and `bottom` lowest AP neurons (the
    two sets disjoint; ties to the lower flat index)."""
    ap = jnp.asarray(ap)
    size = ap[0].size
    if top < 0 or bottom < 0 or top + bottom > size:
        raise ValueError(f"top {top} + bottom {bottom} neurons per language: each >= 0 and together at most the "
                         f"model's {size} neurons")
    highest = metrics.top_per_language(ap, top) if top else jnp.zeros(ap.shape, bool)
    lowest = metrics.top_per_language(jnp.where(highest, jnp.nan, -ap), bottom) if bottom else jnp.zeros(ap.shape, bool)
    return highest | lowest


def _ap_own(ap: ArrayLike, params: Mapping[str, Any]) -> jax.Array:
    size = np.shape(ap)[1] * np.shape(ap)[2]
    if params["top"] + params["bottom"] > size:
        raise ValueError(f"ap.top={params['top']} + ap.bottom={params['bottom']} exceeds the model's {size} neurons "
                         "(M·F); set smaller counts (Kojima et al. used 1000 + 1000 of LLaMA-2's 352k)")
    return top_and_bottom(ap, params["top"], params["bottom"])


# --- activation probability above a percentile (after Mondal et al. 2025) ------------------------

@partial(jax.jit, static_argnums=2)
def _above_quantile_block(block: jax.Array, members: jax.Array, quantile: float) -> jax.Array:
    """block [N, c], members [N, L] -> [L, c]: share of each language's rows above the column's quantile."""
    above = (block > jnp.quantile(block, quantile, axis=0)).astype(jnp.float32)
    counts = jnp.einsum("nl,nc->lc", members, above, precision=metrics.HIGHEST)
    return counts / jnp.sum(members, axis=0)[:, None]


def aprob_probabilities(acts: ArrayLike, lang: ArrayLike, quantile: float = 0.9) -> np.ndarray:
    """acts [N, M, F], lang [N] -> float32 [L, M, F]: P_l(k), the share of language l's sentences whose
    pooled activation of neuron k exceeds that neuron's `quantile` over all N sentences (numpy's
    default linear interpolation)."""
    if not 0 < quantile < 1:
        raise ValueError(f"aprob.quantile must be in (0, 1); got {quantile}")
    return _columns(acts, lang, partial(_above_quantile_block, quantile=float(quantile)), "activation probabilities")


# --- the registry -------------------------------------------------------------------------------

def _probabilities(evidence: Evidence, params: Mapping[str, Any]) -> np.ndarray:
    if evidence.probabilities is None:
        raise ValueError("LAPE needs the activation probabilities (lape.activation_probabilities)")
    return evidence.probabilities


def _lape_own(probs: ArrayLike, params: Mapping[str, Any]) -> jax.Array:
    return metrics.lape_regions(probs, params["top_rate"], params["filter_rate"], params["bar_ratio"])


def _lape_at_budget(probs: ArrayLike, count: int, params: Mapping[str, Any]) -> jax.Array:
    return metrics.top_per_language(metrics.lape_ranking(probs, params["filter_rate"], params["bar_ratio"]), count)


_ZSCORE = dict(settings="regions",
               statistic=lambda evidence, params: metrics.contribution_scores(
                   evidence.activations.acts, evidence.activations.lang, params["offset"]),
               own=lambda scores, params: metrics.key_regions_from_scores(scores, params["threshold"]),
               at_budget=lambda scores, count, params: metrics.top_per_language(metrics.zscores(scores), count))
_LAPE_RULE = dict(own=_lape_own, at_budget=_lape_at_budget)

METHODS: dict[str, Method] = {method.name: method for method in (
    Method("zscore", **_ZSCORE),
    Method("zscore_ref", **_ZSCORE, fixed={"offset": metrics.REFERENCE_OFFSET}),
    Method("lape", "lape", _probabilities, **_LAPE_RULE, needs_probabilities=True),
    Method("ap", "ap", lambda evidence, params: average_precision(evidence.activations.acts, evidence.activations.lang),
           own=_ap_own, at_budget=lambda ap, count, params: top_and_bottom(ap, count - count // 2, count // 2)),
    Method("aprob", "aprob", lambda evidence, params: aprob_probabilities(
        evidence.activations.acts, evidence.activations.lang, params["quantile"]), **_LAPE_RULE),
)}


def parse(names: str) -> list[Method]:
    """"zscore,lape" -> those methods, in that order; ValueError naming an unknown or repeated one."""
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in METHODS]
    if unknown or len(set(chosen)) != len(chosen) or not chosen:
        raise ValueError(f"methods={names!r}: name each of {sorted(METHODS)} at most once "
                         f"({'unknown: ' + ', '.join(unknown) if unknown else 'empty or repeated'})")
    return [METHODS[name] for name in chosen]


def budget_count(budget: float, neurons: int) -> int:
    """compare.budget -> neurons per language: a count when >= 1, else that fraction of the M·F `neurons`."""
    count = int(budget) if budget >= 1 else round(budget * neurons)
    if budget <= 0 or count < 1 or count > neurons or (budget >= 1 and budget != int(budget)):
        raise ValueError(f"compare.budget={budget}: give a fraction in (0, 1) or a whole count of neurons per "
                         f"language, at least 1 and at most the model's {neurons}")
    return count


# --- overlaps ------------------------------------------------------------------------------------

def overlap_p_value(size_a: int, size_b: int, shared: int, total: int) -> float:
    """P(X >= shared) for X ~ Hypergeometric(total neurons, size_a marked, size_b drawn): the chance that
    a random set of size_b neurons shares at least `shared` with a fixed set of size_a."""
    return float(stats.hypergeom.sf(shared - 1, total, size_a, size_b))


def overlaps(found: Mapping[str, ArrayLike], languages: Sequence[str]) -> list[dict[str, Any]]:
    """{name: bool [L, M, F]} -> one row per pair of names and language: {"a", "b", "language",
    "size_a", "size_b", "shared", "jaccard" (None when both are empty), "expected" (shared by chance,
    |A||B| / M·F), "p_value" (`overlap_p_value`)}."""
    found = {name: np.asarray(regions, bool) for name, regions in found.items()}
    rows = []
    for (a, first), (b, second) in combinations(found.items(), 2):
        for l, language in enumerate(languages):
            size_a, size_b, shared = int(first[l].sum()), int(second[l].sum()), int((first[l] & second[l]).sum())
            total, union = first[l].size, size_a + size_b - shared
            rows.append({"a": a, "b": b, "language": language, "size_a": size_a, "size_b": size_b, "shared": shared,
                         "jaccard": shared / union if union else None, "expected": size_a * size_b / total,
                         "p_value": overlap_p_value(size_a, size_b, shared, total)})
    return rows
