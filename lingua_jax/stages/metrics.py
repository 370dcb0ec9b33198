"""The similarity map (eq. 7), LRDS and SADS on the whole vectors and per layer (eq. 8-9, Fig. 2-3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lingua_jax import bootstrap, metrics, plots
from lingua_jax.context import Context
from lingua_jax.stages import Contribution, Outputs, Stage
from lingua_jax.tables import write_table


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    acts, b = ctx.activations(), ctx.config.bootstrap
    languages = list(acts.languages)
    sim = metrics.similarity(acts.acts)
    lrds, sads = (np.asarray(x, np.float64) for x in metrics.layerwise(acts.acts, acts.lang, acts.sem))
    scores = {"lrds": metrics.lrds(sim, acts.lang, acts.sem), "sads": metrics.sads(sim, acts.lang, acts.sem)}
    layers = [{"layer": m + 1, "lrds": a, "sads": s} for m, (a, s) in enumerate(zip(lrds, sads))]
    intervals = {}
    if b.samples:
        drawn = bootstrap.draws(len(np.unique(acts.sem)), b.samples, b.seed)
        resampled = bootstrap.divergences(acts.acts, acts.lang, acts.sem, drawn)
        for name, value in scores.items():
            interval = bootstrap.Interval.of(value, resampled[name])
            intervals[name] = [interval.low, interval.high]
        for name, values in (("lrds", lrds), ("sads", sads)):
            ends = [bootstrap.Interval.of(v, resampled[f"{name}_layers"][:, m]) for m, v in enumerate(values)]
            intervals[f"{name}_layers"] = [[e.low for e in ends], [e.high for e in ends]]
            for row, e in zip(layers, ends):
                row.update({f"{name}_low": e.low, f"{name}_high": e.high})
    blocks = np.asarray(metrics.block_map(sim, acts.lang))
    block_rows = [{"language": lang, **dict(zip(languages, map(float, row)))} for lang, row in zip(languages, blocks)]
    layerwise = plots.layerwise_scores(lrds, sads, out / "layerwise.png", lrds_interval=intervals.get("lrds_layers"),
                                       sads_interval=intervals.get("sads_layers"))
    return {**scores, "intervals": intervals, "bootstrap_samples": b.samples,
            "tables": {"layerwise": write_table(layers, out, "layerwise"),
                       "block_map": write_table(block_rows, out, "block_map")},
            "figures": {"similarity": plots.similarity_heatmap(np.asarray(sim), acts.lang, languages,
                                                               out / "similarity.png"),
                        "block_map": plots.block_heatmap(blocks, languages, out / "block_map.png"),
                        "layerwise": layerwise}}


def report(outputs: Outputs) -> Contribution:
    intervals = outputs.get("intervals", {})
    headline = {name.upper(): outputs[name] for name in ("lrds", "sads")}
    if intervals:
        headline.update({f"{name.upper()} 95% interval ({outputs['bootstrap_samples']} resamples of the "
                         "sentences)": "[" + ", ".join(f"{end:.4g}" for end in intervals[name]) + "]"
                         for name in ("lrds", "sads")})
    return Contribution(headline=headline)


STAGE = Stage("metrics", reads=("extract",), run=run, report=report)
