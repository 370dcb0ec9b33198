"""Greedy continuations of a few prompts per language with each region zeroed (Appendix A)."""

from __future__ import annotations

import json
from pathlib import Path

from lingua_jax import generation
from lingua_jax.context import Context
from lingua_jax.io import write_atomic
from lingua_jax.stages import Outputs, Stage


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    g = ctx.config.generation
    prompts = [s[:max(1, len(s) // 2)] for lang in ctx.languages for s in ctx.samples[lang][:g.prompts_per_language]]
    texts = {name: generation.generate(ctx.lm, ctx.tokenizer, prompts, g.max_new_tokens, mask)
             for name, mask in ctx.masks.items()}
    rows = [{"prompt": p, **{f"zeroed_{name}": texts[name][i] for name in texts}} for i, p in enumerate(prompts)]
    lines = ["# Greedy generations with each region zeroed", ""]
    for i, prompt in enumerate(prompts):
        lines += [f"## {prompt!r}", ""] + [f"- **{name}**: {texts[name][i]!r}" for name in texts] + [""]
    files = {"md": write_atomic(out / "generations.md", "\n".join(lines)),
             "json": write_atomic(out / "generations.json", json.dumps(rows, ensure_ascii=False, indent=1))}
    return {"tables": {"generations": files}}


STAGE = Stage("generation", reads=("regions",), run=run, inputs=("model", "tokenizer", "corpus"))
