"""Steering (METHOD.md, "Beyond the paper"): prompts in every language, each target language's key region
set to its mean or median activation × a strength, greedy continuations, and the language they come out
in (`lingua_jax.langid`); the same with a random region of the same size; and what each edit costs in
perplexity on the ablation text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import numpy as np

from lingua_jax import evaluate, generation, langid, plots, steering
from lingua_jax.context import Context, first_windows
from lingua_jax.io import write_atomic
from lingua_jax.models.common import Intervention
from lingua_jax.progress import progress
from lingua_jax.stages import Contribution, Outputs, Stage
from lingua_jax.stages.generation import prompts
from lingua_jax.tables import write_table

SETS = ("region", "random")  # the target language's key region, and random neurons of the same size


def edits(ctx: Context) -> tuple[list[dict[str, Any]], Intervention]:
    """Every steering edit: ([{"target", "statistic", "strength", "set"}] for edits 1.., an Intervention
    over [1 + K, M, F] whose edit 0 changes nothing)."""
    s, regions = ctx.config.steer, ctx.regions()
    strengths, statistics = [float(x) for x in s.strengths], [x.strip() for x in s.statistics.split(",")]
    unknown = sorted(set(statistics) - set(steering.STATISTICS))
    if unknown or not strengths:
        raise ValueError(f"steer.statistics={s.statistics!r} (known: {steering.STATISTICS}) and "
                         f"steer.strengths={tuple(s.strengths)} (at least one): {unknown or 'no strengths'}")
    m, f = regions.shape[1:]
    random = np.stack([evaluate.random_mask(m, f, region.sum() / (m * f), s.seed + i)
                       for i, region in enumerate(regions)])
    names, masks, values = [], [np.zeros((m, f), bool)], [np.zeros((m, f), np.float32)]
    for statistic in statistics:
        typical = ctx.steering_values()[statistic]
        for where, chosen in zip(SETS, (regions, random)):
            built = steering.set_to(chosen, typical, strengths)
            masks += list(built.mask)
            values += list(built.values)
            names += [{"target": t, "statistic": statistic, "strength": k, "set": where}
                      for t in ctx.languages for k in strengths]
    return names, Intervention(np.stack(masks), "set", np.stack(values))


def continuations(ctx: Context, edit: Intervention, texts_in: list[str]) -> list[list[str]]:
    """Greedy continuations (steer.max_new_tokens) of every prompt under each of the K edits of `edit`
    (over [K, M, F]): [K][len(texts_in)], generated a batch of steer.batch_size rows at a time (as many
    edits per batch as there is room for every prompt)."""
    s = ctx.config.steer
    rows_per_call = ctx.lm.rows_per_batch(s.batch_size)
    per_call = max(1, rows_per_call // len(texts_in))
    count = len(edit.mask)
    texts: list[list[str]] = []
    starts = range(0, count, per_call)
    for start in progress(starts, len(starts), f"steering ({count} edits x {len(texts_in)} prompts)"):
        chunk = range(start, min(start + per_call, count))
        rows = jax.tree.map(lambda x: np.repeat(x[list(chunk)], len(texts_in), axis=0), edit)
        made = generation.generate(ctx.lm, ctx.tokenizer, texts_in * len(chunk), s.max_new_tokens,
                                   intervention=rows, batch_size=rows_per_call)
        texts += [made[i * len(texts_in):(i + 1) * len(texts_in)] for i in range(len(chunk))]
    return texts


def target_shares(found: list[list[str]], sources: list[str], languages: list[str]) -> np.ndarray:
    """found[l]: the identified languages of the continuations steered toward languages[l], one per
    prompt (of language sources[i]) -> float [L]: the share in language l among the continuations of
    prompts in the other languages."""
    return np.array([np.mean([code == target for code, source in zip(codes, sources) if source != target])
                     for target, codes in zip(languages, found)])


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    s, a = ctx.config.steer, ctx.config.ablation
    names, edit = edits(ctx)
    texts_in, sources = prompts(ctx, s.prompts_per_language)
    texts = continuations(ctx, edit, texts_in)
    found = [langid.identify(t) for t in texts]
    streams = first_windows(ctx.ablation_streams, s.max_windows, a.seqlen)
    ppl = evaluate.perplexity_grid(ctx.lm, streams, a.seqlen, edit, a.batch_size,
                                   mask_names=["none"] + [f"{n['set']} of {n['target']}: {n['statistic']} x "
                                                          f"{n['strength']:g}" for n in names])
    increase = 100 * (ppl / ppl[:, :1] - 1)  # [L, 1 + K]
    languages = list(ctx.languages)
    by_source, summary = [], []
    for j, name in enumerate(names, start=1):
        target = name["target"]
        hits = [code == target for code in found[j]]
        for lang in languages:
            of_lang = [hit for hit, source in zip(hits, sources) if source == lang]
            by_source.append({**name, "source": lang, "share_target": float(np.mean(of_lang))})
        share, unsteered = target_shares([found[j], found[0]], sources, [target, target])
        summary.append({**name, "share_target": float(share), "share_target_all": float(np.mean(hits)),
                        "unsteered_share": float(unsteered),
                        "ppl_increase_mean": float(increase[:, j].mean()),
                        "ppl_increase_target": float(increase[languages.index(target), j])})
    generations = [{"prompt": p, "source": sources[i], "unsteered": texts[0][i], "unsteered_language": found[0][i],
                    "steered": [{**name, "text": texts[j][i], "language": found[j][i]}
                                for j, name in enumerate(names, start=1)]} for i, p in enumerate(texts_in)]
    write_atomic(out / "steering_generations.json", json.dumps(generations, ensure_ascii=False, indent=1))
    curves = _curves(summary)
    return {"curves": curves, "tables": {"steering": write_table(summary, out, "steering"),
                                         "steering_by_source": write_table(by_source, out, "steering_by_source"),
                                         "steering_generations": out / "steering_generations.json"},
            "figures": {"steering": plots.steering_curves(curves, out / "steering.png")}}


def _curves(summary: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """{"<statistic>, <set>": {strength: {"share": mean share of continuations in the target language
    (prompts in other languages), "ppl_increase": mean % perplexity increase}}}, means over targets;
    and "unsteered": {strength: that share without any edit}."""
    curves: dict[str, dict[str, dict[str, float]]] = {}
    for row in summary:
        cell = curves.setdefault(f"{row['statistic']}, {row['set']}", {}).setdefault(f"{row['strength']:g}", {})
        cell.setdefault("share", []).append(row["share_target"])
        cell.setdefault("ppl_increase", []).append(row["ppl_increase_mean"])
    curves = {name: {k: {key: float(np.mean(v)) for key, v in cell.items()} for k, cell in by.items()}
              for name, by in curves.items()}
    unsteered = float(np.mean([row["unsteered_share"] for row in summary]))
    curves["unsteered"] = {k: {"share": unsteered} for k in next(iter(curves.values()))}
    return curves


def report(outputs: Outputs) -> Contribution:
    return Contribution(headline={
        "steering: share of continuations in the target language (prompts in other languages; mean over "
        "targets), by statistic, set and strength": {
            name: {k: cell["share"] for k, cell in by.items()} for name, by in outputs["curves"].items()},
        "steering: mean % perplexity increase on the ablation text, by statistic, set and strength": {
            name: {k: cell["ppl_increase"] for k, cell in by.items()} for name, by in outputs["curves"].items()
            if name != "unsteered"}})


STAGE = Stage("steer", reads=("regions",), run=run, inputs=("model", "tokenizer", "corpus", "ablation_text"),
              report=report)
