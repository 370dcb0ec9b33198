"""The method shoot-out, when `methods` names more than zscore: each definition of language-specific
neurons (lingua_jax/methods.py) at its own size and at a common budget of neurons per language, all
ablated in one perplexity table, with per-method selectivity, steering success (each set set to its
language's mean activation × compare.steer_strength, as the steer stage does), per-layer counts and
the overlaps of the sets they find against chance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lingua_jax import evaluate, langid, lape, methods, metrics, plots
from lingua_jax.context import Context, first_windows
from lingua_jax.io import write_atomic
from lingua_jax.models.common import Intervention
from lingua_jax.stages import Contribution, Outputs, Stage, steer
from lingua_jax.stages.generation import prompts
from lingua_jax.stages.regions import save_regions
from lingua_jax.tables import write_table

SIZES = ("own", "budget")  # each method's own selection, and its ranking cut at compare.budget


def _probabilities(ctx: Context) -> np.ndarray:
    """LAPE's activation probabilities [L, M, F] of the analysed samples, tokenized as for extraction."""
    e = ctx.config.extract
    return lape.activation_probabilities(ctx.lm, ctx.tokenizer, ctx.samples, batch_size=e.batch_size,
                                         add_special_tokens=e.add_special_tokens, max_length=e.max_length,
                                         truncate=True)


def selectivity(table: evaluate.AblationTable, row: str, language: str) -> dict[str, float]:
    """For the row zeroing `language`'s set: its own perplexity increase (%), the mean increase of the
    other languages (%), and selectivity = own perplexity ratio / mean other ratio (1: no preference)."""
    ratio = table.perplexity[table.rows.index(row)] / table.perplexity[0]
    own = table.languages.index(language)
    others = np.delete(ratio, own)
    return {"own_increase": 100 * (ratio[own] - 1), "other_increase": 100 * (others.mean() - 1),
            "selectivity": ratio[own] / others.mean()}


def run(ctx: Context, out: Path, reads: dict[str, Outputs]) -> Outputs:
    chosen = methods.parse(ctx.config.methods)
    if [method.name for method in chosen] == ["zscore"]:
        return {"skipped": "methods=zscore: the ablation stage has its regions"}
    acts, a = ctx.activations(), ctx.config.ablation
    languages, (m, f) = list(acts.languages), acts.acts.shape[1:]
    probabilities = _probabilities(ctx) if any(method.needs_probabilities for method in chosen) else None
    if probabilities is not None:
        write_atomic(out / "lape_probabilities.npy", lambda file: np.save(file, probabilities))
    budget = methods.budget_count(ctx.config.compare.budget, m * f)
    evidence, found = methods.Evidence(acts, probabilities), {}  # {(method, size): bool [L, M, F]}
    for method in chosen:
        selected = method.select(evidence, ctx.config[method.settings].to_dict(), (None, budget))
        for size, regions in zip(SIZES, selected):
            found[method.name, size] = regions
            save_regions(regions, out / f"regions_{method.name}_{size}.npz")
    stacked = np.concatenate(list(found.values()))  # [sets x L, M, F], set after set

    texts_in, sources = prompts(ctx, ctx.config.steer.prompts_per_language)
    strength, mean = ctx.config.compare.steer_strength, ctx.steering_values()["mean"]
    steered = steer.continuations(ctx, Intervention(stacked, "set", np.concatenate([mean * strength] * len(found))),
                                  texts_in)
    found_languages = [langid.identify(texts) for texts in steered]  # [sets x L][prompts]
    steering = {key: steer.target_shares(found_languages[i * len(languages):(i + 1) * len(languages)], sources,
                                         languages) for i, key in enumerate(found)}
    names = [f"{method}/{size}/{lang}" for method, size in found for lang in languages]
    streams = first_windows(ctx.ablation_streams, ctx.config.compare.max_windows, a.seqlen)
    table = evaluate.ablation_table(ctx.lm, streams, stacked, names, a.seqlen,
                                    random_fraction=budget / (m * f), seed=a.seed, batch_size=a.batch_size)
    rows: list[dict[str, Any]] = []
    for (method, size), regions in found.items():
        for l, lang in enumerate(languages):
            rows.append({"method": method, "size": size, "language": lang, "neurons": int(regions[l].sum()),
                         **selectivity(table, f"{method}/{size}/{lang}", lang),
                         "steering": float(steering[method, size][l])})
    summary = [{"method": method, "size": size,
                **{key: float(np.mean([r[key] for r in rows if (r["method"], r["size"]) == (method, size)]))
                   for key in ("neurons", "own_increase", "other_increase", "selectivity", "steering")}}
               for method, size in found]
    per_layer = [{"method": method, "size": size, "language": lang,
                  **{f"layer_{i + 1}": int(c) for i, c in enumerate(counts)}}
                 for (method, size), regions in found.items()
                 for lang, counts in zip(languages, np.asarray(metrics.counts_per_layer(regions)))]
    overlap = []
    if len(chosen) > 1:
        for size in SIZES:
            by_method = {method: regions for (method, of_size), regions in found.items() if of_size == size}
            overlap += [{"size": size, **row} for row in methods.overlaps(by_method, languages)]
    tables = {"methods": write_table(summary, out, "methods", {"budget": budget, "total_neurons": m * f}),
              "methods_per_language": write_table(rows, out, "methods_per_language"),
              "methods_per_layer": write_table(per_layer, out, "methods_per_layer"),
              "methods_ablation": evaluate.write_table(table, out, "methods_ablation")}
    if overlap:
        tables["method_overlap"] = write_table(overlap, out, "method_overlap")
    figure = plots.method_comparison(summary, out / "methods.png", budget=budget, total=m * f)
    empty = sorted({f"{r['method']} ({r['size']}) for {r['language']}" for r in rows if r["neurons"] == 0})
    notes = [f"Empty sets, which zero nothing: {', '.join(empty)}."] if empty else []
    short = [f"{r['method']} for {r['language']} ({r['neurons']})" for r in rows
             if r["size"] == "budget" and 0 < r["neurons"] < budget]
    if short:
        notes.append(f"Fewer than the budget of {budget} neurons qualify under: {', '.join(short)}.")
    return {"summary": summary, "budget": budget, "overlap": overlap, "notes": notes, "tables": tables,
            "figures": {"methods": figure}}


def report(outputs: Outputs) -> Contribution:
    if "skipped" in outputs:
        return Contribution()
    headline = {f"methods: perplexity increase (%) from zeroing each language's set (own: each method's "
                f"selection; budget: {outputs['budget']} neurons per language), means over languages": {
                    f"{r['method']} ({r['size']})": {k: v for k, v in r.items() if k not in ("method", "size")}
                    for r in outputs["summary"]}}
    if outputs["overlap"]:
        pairs: dict[str, dict[str, Any]] = {}
        for r in outputs["overlap"]:
            pair = pairs.setdefault(f"{r['a']} & {r['b']} ({r['size']})", {"jaccard": [], "shared": [], "expected": [],
                                                                            "max p": []})
            for key, value in (("jaccard", r["jaccard"]), ("shared", r["shared"]), ("expected", r["expected"]),
                               ("max p", r["p_value"])):
                pair[key].append(value)
        headline["method overlaps, over languages (mean Jaccard, mean shared, mean shared by chance, largest "
                 "hypergeometric p)"] = {
            name: {"jaccard": float(np.mean([j for j in v["jaccard"] if j is not None])) if any(
                       j is not None for j in v["jaccard"]) else None,
                   "shared": float(np.mean(v["shared"])), "expected": float(np.mean(v["expected"])),
                   "max p": float(np.max(v["max p"]))} for name, v in pairs.items()}
    return Contribution(headline=headline, notes=tuple(outputs["notes"]))


STAGE = Stage("compare", reads=("extract", "regions"), run=run, inputs=("model", "tokenizer", "corpus", "ablation_text"),
              report=report)
