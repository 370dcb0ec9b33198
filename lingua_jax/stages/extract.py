"""Pooled activations of the corpus sentences (eq. 5-6 before normalising), into the activation store."""

from __future__ import annotations

from pathlib import Path

from lingua_jax import extract
from lingua_jax.context import Context
from lingua_jax.stages import Outputs, Stage


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    e, n = ctx.config.extract, ctx.config.corpus.n
    acts = extract.extract_cached(out, ctx.lm, ctx.tokenizer, ctx.samples, batch_size=e.batch_size,
                                  add_special_tokens=e.add_special_tokens, max_length=e.max_length,
                                  truncate=True, pack=e.pack)
    notes = []
    if n > ctx.corpus.n:
        notes.append(f"corpus.n is {n} but the corpus has {ctx.corpus.n} sentences per language: all "
                     f"{ctx.corpus.n} were used.")
    cut = {lang: count for lang, count in acts.metadata["truncated"].items() if count}
    if cut:
        notes.append(f"extract.max_length={e.max_length} cut sentences to their first {e.max_length} tokens: "
                     + ", ".join(f"{count} of {ctx.samples.n} in {lang}" for lang, count in cut.items()) + ".")
    return {"shape": list(acts.acts.shape), "batch_shapes": acts.metadata["batch_shapes"],
            "truncated": acts.metadata["truncated"], "notes": notes}


STAGE = Stage("extract", reads=(), run=run, inputs=("model", "tokenizer", "corpus"), check=extract.store_problem)
