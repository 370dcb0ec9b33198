"""The summary page: provenance, every stage's headline numbers and notes, links to every table and
every figure (report.write_summary)."""

from __future__ import annotations

from pathlib import Path

from lingua_jax import checkpoints, report
from lingua_jax.context import Context
from lingua_jax.models import family_of
from lingua_jax.stages import Outputs, Stage


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    from lingua_jax.stages import BY_NAME  # the registry, which lists this stage too

    hf = checkpoints.load_config(ctx.source.path)
    family = family_of(hf)
    spec = family.spec(hf)
    c, model = ctx.config.corpus, ctx.config.model
    source = ctx.source
    provenance = report.Provenance(
        model=source.hub_id or ("demo" if model.path == "demo" else str(source.path)), revision=source.revision,
        commit=source.commit, dtype=model.dtype, family=family.name, num_layers=spec.num_layers,
        num_neurons=spec.num_neurons, corpus=f"{c.kind}:{c.get('path') or 'bundled sample'}",
        samples_per_language=dict.fromkeys(ctx.languages, ctx.samples.n), seed=c.seed,
        threshold=ctx.config.regions.threshold, random_weights=bool(model.get("random")))
    headline, notes, tables, figures = {}, [], {}, {}
    for name, outputs in reads.items():
        part = BY_NAME[name].report(outputs)
        headline.update(part.headline)
        notes += part.notes
        tables.update(outputs.get("tables", {}))
        figures.update(outputs.get("figures", {}))
    summary = report.write_summary(out, provenance, headline, absolute(ctx, tables), absolute(ctx, figures),
                                   notes="\n\n".join(notes) or None)
    return {"summary": summary}


def absolute(ctx: Context, tree: dict) -> dict:
    """Recorded paths (relative to the results directory) as paths of today's results directory."""
    return {k: absolute(ctx, v) if isinstance(v, dict) else ctx.results / v for k, v in tree.items()}


# "*": every stage before it, each when it ran in this run or finished before
STAGE = Stage("report", reads=("*",), run=run, inputs=("model",))
