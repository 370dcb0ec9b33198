"""Contribution scores, z-scores and each language's key linguistic region (eq. 10-13, Fig. 5-6), and
each language's mean and median activation of every neuron (the steering values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lingua_jax import methods, metrics, plots, steering
from lingua_jax.context import Context
from lingua_jax.io import write_atomic
from lingua_jax.stages import Contribution, Outputs, Stage
from lingua_jax.tables import write_table


def save_regions(regions: np.ndarray, path: Path) -> None:
    """bool [L, M, F] as an .npz file (bit-packed), atomically; `Context.regions` reads it."""
    write_atomic(path, lambda f: np.savez_compressed(f, packed=np.packbits(regions.ravel()),
                                                     shape=np.array(regions.shape)))


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    acts, threshold = ctx.activations(), ctx.config.regions.threshold
    languages = list(acts.languages)
    regions, = methods.METHODS["zscore"].select(methods.Evidence(acts), ctx.config.regions.to_dict())
    save_regions(regions, out / "regions.npz")
    values = steering.typical_values(acts.acts, acts.lang)
    write_atomic(out / "steering_values.npz", lambda f: np.savez_compressed(f, **values))
    total = regions[0].size
    counts = np.asarray(metrics.counts_per_layer(regions))
    sizes = [{"language": lang, "neurons": int(regions[i].sum()), "percent": 100.0 * regions[i].sum() / total}
             for i, lang in enumerate(languages)]
    per_layer = [{"language": lang, **{f"layer_{m + 1}": int(c) for m, c in enumerate(row)}}
                 for lang, row in zip(languages, counts)]
    overlap = [{"language": lang, **dict(zip(languages, map(float, row)))}
               for lang, row in zip(languages, np.asarray(metrics.jaccard(regions)))]
    tables = {"region_sizes": write_table(sizes, out, "region_sizes"),
              "per_layer": write_table(per_layer, out, "key_neurons_per_layer"),
              "jaccard": write_table(overlap, out, "region_jaccard")}
    empty = [row["language"] for row in sizes if row["neurons"] == 0]
    notes = [f"No neuron of {', '.join(empty)} has a z-score above regions.threshold={threshold}: "
             "those regions are empty, and zeroing them changes nothing."] if empty else []
    return {"sklr": metrics.sklr(regions), "percent": {r["language"]: r["percent"] for r in sizes},
            "threshold": threshold, "empty": empty, "notes": notes, "tables": tables,
            "figures": {"key_neurons": plots.key_neurons_per_layer(counts, languages, out / "key_neurons.png",
                                                                   total_per_layer=regions.shape[-1])}}


def report(outputs: Outputs) -> Contribution:
    return Contribution(headline={"SKLR": outputs["sklr"], "key neurons (% of all)": outputs["percent"]},
                        notes=tuple(outputs["notes"]))


STAGE = Stage("regions", reads=("extract",), run=run, report=report)
