"""How long bootstrap intervals take at BLOOM-7b1's size: 30 layers x 16384 neurons, 9 languages x 100
sentences, random activations, B resamples; beside the obvious way (recompute the similarity map and
the contribution scores from the resampled activations), timed on a few resamples and scaled to B.

    python benchmarks/bootstrap.py                     # B = 1000
    python benchmarks/bootstrap.py --samples=200 --layers=4
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lingua_jax import bootstrap, metrics  # noqa: E402

_SAMPLES = flags.DEFINE_integer("samples", 1000, "Resamples B.")
_LAYERS = flags.DEFINE_integer("layers", 30, "Layers M.")
_NEURONS = flags.DEFINE_integer("neurons", 16384, "Neurons per layer F.")
_LANGUAGES = flags.DEFINE_integer("languages", 9, "Languages L.")
_N = flags.DEFINE_integer("n", 100, "Sentences per language n.")
_SLOW = flags.DEFINE_integer("slow_samples", 2, "Resamples timed the obvious way.")


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv):
    del argv
    languages, n, b = _LANGUAGES.value, _N.value, _SAMPLES.value
    rng = np.random.default_rng(0)
    acts = rng.standard_normal(size=(languages * n, _LAYERS.value, _NEURONS.value), dtype=np.float32) ** 2
    lang, sem = np.repeat(np.arange(languages), n), np.tile(np.arange(n), languages)
    drawn = bootstrap.draws(n, b, seed=0)
    _, divergence_s = timed(lambda: bootstrap.divergences(acts, lang, sem, drawn))
    _, regions_s = timed(lambda: bootstrap.region_stability(acts, lang, sem, drawn, 2.0))

    def slow(ids):
        rows = np.concatenate([l * n + ids for l in range(languages)])
        sim = metrics.similarity(acts[rows])
        metrics.lrds(sim, lang, np.tile(ids, languages)), metrics.sads(sim, lang, np.tile(ids, languages))
        metrics.layerwise(acts[rows], lang, np.tile(ids, languages))
        np.asarray(metrics.key_regions(acts[rows], lang, 2.0))

    slow(drawn[0])  # compiled once, not timed
    _, slow_s = timed(lambda: [slow(ids) for ids in drawn[1:1 + _SLOW.value]])
    slow_total = slow_s / _SLOW.value * b
    print(f"{b} resamples, {_LAYERS.value} x {_NEURONS.value} neurons, {languages} x {n} sentences")
    print(f"LRDS/SADS, whole and per layer: {divergence_s:.1f} s; key regions (frequency, stability): "
          f"{regions_s:.1f} s; together {divergence_s + regions_s:.1f} s")
    print(f"the obvious way: {slow_s / _SLOW.value:.2f} s a resample, {slow_total:.0f} s for {b} "
          f"({slow_total / (divergence_s + regions_s):.0f}x)")


if __name__ == "__main__":
    app.run(main)
