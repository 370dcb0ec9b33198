"""LAPE (Tang et al. 2024) beside the z-score regions, when `methods` names it: sizes, Jaccard overlap,
per-layer counts, and the ablation tables of the LAPE regions and of the two methods' intersection."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lingua_jax import lape, metrics, plots, report as report_lib
from lingua_jax.context import Context
from lingua_jax.io import write_atomic
from lingua_jax.stages import Contribution, Outputs, Stage
from lingua_jax.stages.ablation import ablate
from lingua_jax.stages.regions import save_regions
from lingua_jax.tables import write_table


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    methods = ctx.config.methods
    if "lape" not in methods.split(","):
        return {"skipped": f"methods={methods}"}
    e, languages = ctx.config.extract, ctx.activations().languages
    probs = lape.activation_probabilities(ctx.lm, ctx.tokenizer, ctx.samples, batch_size=e.batch_size,
                                          add_special_tokens=e.add_special_tokens, max_length=e.max_length,
                                          truncate=True)
    write_atomic(out / "lape_probabilities.npy", lambda f: np.save(f, probs))
    found = np.asarray(metrics.lape_regions(probs, **ctx.config.lape.to_dict()))
    save_regions(found, out)
    zscore = ctx.regions()
    rows, both = lape.compare_regions(zscore, found, languages)
    tables = {"methods": write_table(rows, out, "methods"),
              "methods_per_layer": write_table(lape.compare_layers(zscore, found, languages), out,
                                               "methods_per_layer")}
    figures = {"lape_key_neurons": plots.key_neurons_per_layer(
        np.asarray(metrics.counts_per_layer(found)), list(languages), out / "lape_key_neurons.png",
        total_per_layer=found.shape[-1], title="Key neurons (LAPE)")}
    ablations = {name: ablate(ctx, regions, out, name)
                 for name, regions in (("ablation_lape", found), ("ablation_intersection", both))}
    for done in ablations.values():
        tables.update(done["tables"])
        figures.update(done["figures"])
    empty = [row["language"] for row in rows if row["both"] == 0]
    notes = [f"The z-score and LAPE regions do not intersect for {', '.join(empty)}: their intersection rows "
             "zero nothing, so they equal the full model."] if empty else []
    return {"rows": rows, "ablations": ablations, "notes": notes, "tables": tables, "figures": figures}


def report(outputs: Outputs) -> Contribution:
    if "skipped" in outputs:
        return Contribution()
    headline = {"z-score vs LAPE regions": {r["language"]: {k: v for k, v in r.items() if k != "language"}
                                            for r in outputs["rows"]}}
    for name, ablation in outputs["ablations"].items():
        headline[f"perplexity increase (%), {name}"] = report_lib.ablation_headline(ablation["records"],
                                                                                     ablation["languages"])
    return Contribution(headline=headline, notes=tuple(outputs["notes"]))


STAGE = Stage("compare", reads=("extract", "regions"), run=run,
              inputs=("model", "tokenizer", "corpus", "ablation_text"), report=report)
