"""Cross-lingual XStoryCloze accuracy (Appendix B) with no mask and with each mask."""

from __future__ import annotations

from pathlib import Path

from absl import logging

from lingua_jax import evaluate
from lingua_jax.context import FETCH_HINT, Context
from lingua_jax.stages import Contribution, Outputs, Stage
from lingua_jax.tables import write_table


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    x = ctx.config.xstorycloze
    reason = None
    if x.kind == "none":
        reason = "disabled (xstorycloze.kind='none')"
    elif not ctx.story_languages:
        reason = f"none of the languages {list(ctx.languages)} is in xstorycloze.languages"
    elif x.kind == "tsv" and not Path(x.path).is_dir():
        reason = f"xstorycloze.path={x.path!r} does not exist ({FETCH_HINT})"
    if reason:
        logging.warning("xstorycloze skipped: %s", reason)
        return {"skipped": reason}
    rows = []
    for lang, stories in ctx.stories.items():
        row = {"language": lang, "stories": len(stories)}
        for name, mask in ctx.masks.items():
            row[f"acc_{name}"] = evaluate.xstorycloze(ctx.lm, ctx.tokenizer, stories, mask,
                                                      batch_size=x.batch_size).accuracy
        rows.append(row)
    return {"rows": rows, "tables": {"xstorycloze": write_table(rows, out, "xstorycloze")}}


def report(outputs: Outputs) -> Contribution:
    if "skipped" in outputs:
        return Contribution(notes=(f"XStoryCloze was skipped: {outputs['skipped']}.",))
    return Contribution(headline={"XStoryCloze accuracy": {
        r["language"]: {k[4:]: v for k, v in r.items() if k.startswith("acc_")} for r in outputs["rows"]}})


STAGE = Stage("xstorycloze", reads=("regions",), run=run, inputs=("model", "tokenizer", "xstorycloze"),
              report=report)
