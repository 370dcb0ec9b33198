"""Steering with language neurons (METHOD.md, "Beyond the paper"): each language's typical activation
of every neuron, and the interventions that set a region to it.

Kojima et al. (NAACL 2024) set a language's neurons to their median activation over that language's
texts; Tang et al. (ACL 2024) and Gurgurov et al. (2025) set, add or scale. Here a target language's
region is set to value × strength, value its mean or median pooled activation.

Shapes: N sentences, L languages, M layers, F neurons per layer, K interventions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jax.typing import ArrayLike

from lingua_jax import metrics
from lingua_jax.models.common import Intervention
from lingua_jax.progress import progress

STATISTICS = ("mean", "median")
COLUMN_BLOCK = 1 << 16  # columns of the store [N, M·F] per step of `typical_values`


def typical_values(acts: ArrayLike, lang: ArrayLike) -> dict[str, np.ndarray]:
    """acts [N, M, F] pooled activations, lang [N] -> {"mean", "median"}: float32 [L, M, F], each
    neuron's mean and median over each language's sentences (exact: numpy's median of the stored
    values, float64 arithmetic, COLUMN_BLOCK columns at a time)."""
    n, m, f = metrics._check_acts(acts)
    codes, num = metrics._languages(lang, n, "acts")
    x = np.asarray(acts).reshape(n, m * f)
    out = {name: np.empty((num, m * f), np.float32) for name in STATISTICS}
    rows = [np.flatnonzero(codes == language) for language in range(num)]
    for start in progress(range(0, m * f, COLUMN_BLOCK), -(-m * f // COLUMN_BLOCK), "steering values"):
        block = x[:, start:start + COLUMN_BLOCK].astype(np.float64)
        for language, picked in enumerate(rows):
            out["mean"][language, start:start + block.shape[1]] = block[picked].mean(axis=0)
            out["median"][language, start:start + block.shape[1]] = np.median(block[picked], axis=0)
    return {name: value.reshape(num, m, f) for name, value in out.items()}


def set_to(regions: ArrayLike, values: ArrayLike, strengths: Sequence[float]) -> Intervention:
    """regions bool [K, M, F], values float [K, M, F] -> an Intervention over [K · S, M, F]: edit
    k · S + s sets region k to values[k] × strengths[s] (S = len(strengths))."""
    regions, values = np.asarray(regions, bool), np.asarray(values, np.float32)
    if regions.shape != values.shape or regions.ndim != 3:
        raise ValueError(f"regions {regions.shape} and values {values.shape} must both be [K, M, F]")
    scale = np.asarray(strengths, np.float32)[None, :, None, None]
    return Intervention(np.repeat(regions, len(strengths), axis=0), "set",
                        (values[:, None] * scale).reshape(-1, *values.shape[1:]))
