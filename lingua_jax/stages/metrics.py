"""The similarity map (eq. 7), LRDS and SADS on the whole vectors and per layer (eq. 8-9, Fig. 2-3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lingua_jax import metrics, plots
from lingua_jax.context import Context
from lingua_jax.stages import Contribution, Outputs, Stage
from lingua_jax.tables import write_table


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    acts = ctx.activations()
    languages = list(acts.languages)
    sim = metrics.similarity(acts.acts)
    lrds, sads = metrics.layerwise(acts.acts, acts.lang, acts.sem)
    layers = [{"layer": m + 1, "lrds": float(a), "sads": float(b)} for m, (a, b) in enumerate(zip(lrds, sads))]
    blocks = np.asarray(metrics.block_map(sim, acts.lang))
    block_rows = [{"language": lang, **dict(zip(languages, map(float, row)))} for lang, row in zip(languages, blocks)]
    return {"lrds": metrics.lrds(sim, acts.lang, acts.sem), "sads": metrics.sads(sim, acts.lang, acts.sem),
            "tables": {"layerwise": write_table(layers, out, "layerwise"),
                       "block_map": write_table(block_rows, out, "block_map")},
            "figures": {"similarity": plots.similarity_heatmap(np.asarray(sim), acts.lang, languages,
                                                               out / "similarity.png"),
                        "block_map": plots.block_heatmap(blocks, languages, out / "block_map.png"),
                        "layerwise": plots.layerwise_scores(np.asarray(lrds), np.asarray(sads),
                                                            out / "layerwise.png")}}


def report(outputs: Outputs) -> Contribution:
    return Contribution(headline={"LRDS": outputs["lrds"], "SADS": outputs["sads"]})


STAGE = Stage("metrics", reads=("extract",), run=run, report=report)
