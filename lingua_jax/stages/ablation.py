"""The deactivation table (Table 1): every language's perplexity with each key region zeroed, beside
the full model and a random set of matched size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lingua_jax import evaluate, plots, report as report_lib
from lingua_jax.context import Context
from lingua_jax.stages import Contribution, Outputs, Stage


def ablate(ctx: Context, regions: np.ndarray, out: Path, name: str) -> Outputs:
    """The perplexity table for `regions` bool [L, M, F] (+ the full model and a matched random set),
    written as `name`.{csv,json,md,png} into `out`."""
    a = ctx.config.ablation
    table = evaluate.ablation_table(ctx.lm, ctx.ablation_streams, regions, ctx.languages, a.seqlen,
                                    random_fraction=a.get("random_fraction"), seed=a.seed, batch_size=a.batch_size)
    return {"records": table.records(), "languages": list(table.languages),
            "tables": {name: evaluate.write_table(table, out, name)},
            "figures": {name: plots.ablation_heatmap(table.records(), list(table.languages), out / f"{name}.png")}}


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    return ablate(ctx, ctx.regions(), out, "ablation")


def report(outputs: Outputs) -> Contribution:
    return Contribution(headline={"perplexity increase (%)": report_lib.ablation_headline(
        outputs["records"], outputs["languages"])})


STAGE = Stage("ablation", reads=("regions",), run=run, inputs=("model", "tokenizer", "ablation_text"),
              report=report)
