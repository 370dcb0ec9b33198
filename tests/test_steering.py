"""Steering values against numpy on stored activations, and the set-to interventions built from them."""

import numpy as np
import pytest

from lingua_jax import steering


def test_typical_values_equal_numpy(monkeypatch):
    rng = np.random.default_rng(0)
    lang = rng.permutation(np.repeat(np.arange(3), 7))  # an odd count: the median is a stored value
    acts = rng.normal(size=(21, 2, 9)).astype(np.float32)
    monkeypatch.setattr(steering, "COLUMN_BLOCK", 4)  # several blocks, the last one short
    values = steering.typical_values(acts, lang)
    for l in range(3):
        rows = acts[lang == l]
        np.testing.assert_array_equal(values["median"][l], np.median(rows, axis=0))
        np.testing.assert_allclose(values["mean"][l], rows.astype(np.float64).mean(axis=0), rtol=1e-7)
    even = steering.typical_values(acts[:18], np.repeat(np.arange(3), 6))["median"]  # midpoints
    np.testing.assert_allclose(even[1], np.median(acts[6:12].astype(np.float64), axis=0), rtol=1e-7)


def test_set_to_orders_edits_by_region_then_strength():
    regions = np.zeros((2, 1, 4), bool)
    regions[0, 0, 1], regions[1, 0, 2:] = True, True
    values = np.arange(8, dtype=np.float32).reshape(2, 1, 4)
    edit = steering.set_to(regions, values, (1.0, 3.0))
    assert edit.mode == "set" and edit.mask.shape == edit.values.shape == (4, 1, 4)
    np.testing.assert_array_equal(edit.mask, regions[[0, 0, 1, 1]])
    np.testing.assert_array_equal(edit.values, values[[0, 0, 1, 1]] * np.array([1, 3, 1, 3])[:, None, None])
    with pytest.raises(ValueError, match="must both be"):
        steering.set_to(regions, values[:1], (1.0,))
