"""How stable each language's key region is under resampling of the sentences (bootstrap): how often
each neuron is selected, and the mean Jaccard index of the resamples' regions with the full-data one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lingua_jax import bootstrap
from lingua_jax.context import Context
from lingua_jax.io import write_atomic
from lingua_jax.stages import Contribution, Outputs, Stage
from lingua_jax.tables import write_table


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    b = ctx.config.bootstrap
    if not b.samples:
        return {"skipped": "bootstrap.samples is 0"}
    acts, r = ctx.activations(), ctx.config.regions
    drawn = bootstrap.draws(len(np.unique(acts.sem)), b.samples, b.seed)
    frequency, jaccards = bootstrap.region_stability(acts.acts, acts.lang, acts.sem, drawn, r.threshold, r.offset)
    write_atomic(out / "region_frequency.npz", lambda f: np.savez_compressed(f, frequency=frequency))
    rows = []
    for i, lang in enumerate(acts.languages):
        interval = bootstrap.Interval.of(np.mean(jaccards[:, i]), jaccards[:, i])
        rows.append({"language": lang, "neurons": int(ctx.regions()[i].sum()), "stability": interval.value,
                     "stability_low": interval.low, "stability_high": interval.high,
                     "in_95pct_of_resamples": int(np.sum(frequency[i] >= 0.95)),
                     "in_any_resample": int(np.sum(frequency[i] > 0))})
    return {"rows": rows, "samples": b.samples, "tables": {"stability": write_table(rows, out, "region_stability")}}


def report(outputs: Outputs) -> Contribution:
    if "skipped" in outputs:
        return Contribution()
    title = (f"key region stability: mean Jaccard index with the full-data region over {outputs['samples']} "
             "resamples of the sentences")
    return Contribution(headline={title: {
        r["language"]: {"neurons": r["neurons"], "stability": r["stability"],
                        "95% interval": f"[{r['stability_low']:.3g}, {r['stability_high']:.3g}]",
                        "neurons in 95% of resamples": r["in_95pct_of_resamples"],
                        "in any resample": r["in_any_resample"]} for r in outputs["rows"]}})


STAGE = Stage("stability", reads=("extract", "regions"), run=run, report=report)
