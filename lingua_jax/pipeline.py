"""The whole analysis as resumable stages, driven by an ml_collections config.

extract -> metrics -> regions -> ablation -> xstorycloze -> generation -> compare (z-score regions vs
LAPE, when `methods` names both) -> report. Each stage writes
its files into `<results_dir>/<stage>/` and, last, `done.json` with a key over its config and the keys
of the stages it reads: a re-run skips every stage whose key is unchanged, and a killed run resumes at
the first stage that had not finished; a stage that skipped itself (data absent, method not asked for)
is not recorded as done, so it runs once its inputs appear. Bad input (missing paths, unknown family,
languages absent from the corpus, a results directory of another model) fails before any heavy work.

Path settings are resolved once, when the `Analysis` is made (`config.resolve_paths`); every path a
stage records is relative to the results directory, so a results directory can be moved or copied.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
import transformers
from absl import logging

from lingua_jax import checkpoints, config as config_lib, data, evaluate, extract, generation, lape, metrics
from lingua_jax import plots, report, sharding
from lingua_jax.io import write_atomic
from lingua_jax.lm import LM, load_pretrained, random_init, save_pretrained
from lingua_jax.tables import write_table

TEXT_KINDS = ("bundled", "xlsum", "hub_xlsum")  # ablation.text.kind
XSTORYCLOZE_KINDS = ("tsv", "hub", "none")
STAGES = ("extract", "metrics", "regions", "ablation", "xstorycloze", "generation", "compare", "report")
READS = {"extract": (), "metrics": ("extract",), "regions": ("extract",), "ablation": ("regions",),
         "xstorycloze": ("regions",), "generation": ("regions",), "compare": ("regions",), "report": STAGES[:-1]}
CONFIG = {"extract": ("model", "tokenizer", "corpus", "extract"), "metrics": (), "regions": ("regions",),
          "ablation": ("ablation",), "xstorycloze": ("xstorycloze",), "generation": ("generation",),
          "compare": ("methods", "lape", "ablation"), "report": ()}
FETCH_HINT = "run `python launch/fetch_data.py --config <your config>` where there is a network, or set data_dir"


def existing(path: str, setting: str) -> Path:
    """The directory or file a data setting names; a FileNotFoundError naming the setting otherwise."""
    found = Path(path)
    if not found.exists():
        raise FileNotFoundError(f"{setting}={path!r} does not exist: {FETCH_HINT}")
    return found


class Analysis:
    """One run of the stages for one model; `run(stages)` returns the summary page's path."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config_lib.resolve_paths(config)
        self.results = Path(self.config.results_dir)
        if self.results.exists() and not self.results.is_dir():
            raise NotADirectoryError(f"results_dir={str(self.results)!r} is a file, not a directory")
        self.languages = config_lib.languages(self.config)
        self._check_config()

    # --- inputs, loaded on first use --------------------------------------------------------------

    def _check_config(self) -> None:
        for setting, kind, known in (("ablation.text.kind", self.config.ablation.text.kind, TEXT_KINDS),
                                     ("xstorycloze.kind", self.config.xstorycloze.kind, XSTORYCLOZE_KINDS)):
            if kind not in known:
                raise ValueError(f"unknown {setting} {kind!r}; known: {list(known)}")
        if not self.config.model.get("random"):
            checkpoints.load_config(self.source.path)  # missing directory / config.json, unknown model_type
        unknown = set(self.languages) - set(self.corpus.languages)
        if unknown:
            raise ValueError(f"languages {sorted(unknown)} are not in the corpus ({list(self.corpus.languages)})")
        run_file = self.results / "run.json"
        identity = {"model": self.model_identity}
        if run_file.is_file():
            before = checkpoints.read_json(run_file)
            if before.get("model") != identity["model"]:
                raise ValueError(f"results directory {str(self.results)!r} holds results of model "
                                 f"{before.get('model')}, not {identity['model']}: use another results_dir")
        else:
            write_atomic(run_file, json.dumps(identity, indent=1))

    @functools.cached_property
    def source(self) -> checkpoints.ModelSource:
        """Where the model's files are: a local directory, or a hub id fetched into the HF cache (with
        its commit), or for a random model the directory it is saved in under the results."""
        model = self.config.model
        if not model.get("random"):
            return checkpoints.resolve_model(model.path, model.get("revision", ""))
        target = self.results / "random_model"
        done = (target / "config.json").is_file()
        sharding.barrier("random model checked")  # every process decides the same way before any writes
        if not done:
            tokenizer = data.train_bpe_tokenizer(data.bundled_sample().texts, model.random.vocab_size)
            fields = {k: v for k, v in model.random.to_dict().items() if k not in ("family", "seed", "vocab_size")}
            hf_class = {"bloom": transformers.BloomConfig, "llama": transformers.LlamaConfig}[model.random.family]
            hf = hf_class(vocab_size=len(tokenizer), **fields)
            save_pretrained(random_init(hf, seed=model.random.seed), target, tokenizer)
        return checkpoints.ModelSource(target)

    @property
    def model_identity(self) -> str:
        """What the results directory holds results of: the random model's settings, the hub id, or the
        checkpoint directory."""
        model = self.config.model
        if model.get("random"):
            return "random:" + json.dumps(model.random.to_dict(), sort_keys=True)
        if model.path == "demo":
            return "demo"  # wherever the package is installed
        return self.source.hub_id or str(self.source.path)

    @functools.cached_property
    def corpus(self) -> data.ParallelCorpus:
        c = self.config.corpus
        languages = self.languages
        loaders: dict[str, Callable[[], data.ParallelCorpus]] = {
            "bundled": lambda: data.bundled_sample(),
            "flores": lambda: data.load_flores(existing(c.path, "corpus.path"), languages),
            "ntrex": lambda: data.load_ntrex(existing(c.path, "corpus.path"), languages),
            "table": lambda: data.load_table(existing(c.path, "corpus.path"), languages),
            "bible": lambda: data.load_bible(existing(c.path, "corpus.path"), languages),
            "hub_flores": lambda: data.load_hub_flores(languages),
        }
        if c.kind not in loaders:
            raise ValueError(f"unknown corpus kind {c.kind!r}; known: {sorted(loaders)}")
        return loaders[c.kind]()

    @functools.cached_property
    def samples(self) -> data.ParallelCorpus:
        c = self.config.corpus
        return self.corpus.subset(self.languages).select(min(c.n, self.corpus.n), seed=c.seed)

    @functools.cached_property
    def lm(self) -> LM:
        model = self.config.model
        return load_pretrained(self.source, dtype=model.dtype, mesh=sharding.default_mesh(tuple(model.mesh)),
                               fsdp=model.get("fsdp", False))

    @functools.cached_property
    def tokenizer(self) -> Any:
        named = self.config.get("tokenizer")
        return data.load_tokenizer(checkpoints.resolve_model(named, weights=False).path if named
                                   else self.source.path)

    def relative(self, tree: Any) -> Any:
        """Paths (in a dict of dicts) as strings relative to the results directory, for done.json."""
        if isinstance(tree, dict):
            return {k: self.relative(v) for k, v in tree.items()}
        return os.path.relpath(tree, self.results) if Path(tree).is_absolute() else str(tree)

    def absolute(self, tree: Any) -> Any:
        """The inverse of `relative`: recorded paths as absolute Paths of today's results directory."""
        if isinstance(tree, dict):
            return {k: self.absolute(v) for k, v in tree.items()}
        return self.results / tree

    # --- stage bookkeeping --------------------------------------------------------------------------

    def key(self, stage: str) -> str:
        """sha256 over the stage's config and the keys of the stages it reads; the report reads
        whatever has finished, so it is redone when another stage finishes."""
        reads = [self.key(s) if stage != "report" or self.done(s) is not None else None for s in READS[stage]]
        what = {"stage": stage, "model": self.model_identity, "languages": self.languages,
                "config": {k: _plain(self.config.get(k)) for k in CONFIG[stage]}, "reads": reads}
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()

    def done(self, stage: str) -> dict[str, Any] | None:
        """The stage's recorded outputs if it finished with today's key, else None (also when its
        done.json is unreadable: the stage then runs again)."""
        marker = self.results / stage / "done.json"
        if marker.is_file():
            try:
                record = checkpoints.read_json(marker)
            except ValueError as e:
                logging.warning("%s; stage %s runs again", e, stage)
                return None
            if record.get("key") == self.key(stage):
                return record["outputs"]
        return None

    def run(self, stages: Sequence[str] = STAGES) -> dict[str, Any]:
        """Run `stages` (and any unfinished stage they read), skipping finished ones; returns each
        stage's recorded outputs."""
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; known: {list(STAGES)}")
        outputs: dict[str, Any] = {}

        def ensure(stage: str) -> None:
            if stage in outputs:
                return
            for dependency in READS[stage]:
                if dependency in stages or stage != "report":
                    ensure(dependency)
            recorded = self.done(stage)
            if recorded is not None:
                logging.info("stage %s: already done, skipped", stage)
                outputs[stage] = recorded
                return
            logging.info("stage %s: running", stage)
            outputs[stage] = getattr(self, f"stage_{stage}")(self.results / stage, outputs)
            if "skipped" in outputs[stage]:
                logging.info("stage %s: skipped (%s), not recorded as done", stage, outputs[stage]["skipped"])
            else:
                write_atomic(self.results / stage / "done.json",
                             json.dumps({"key": self.key(stage), "outputs": outputs[stage]}, indent=1))
            sharding.barrier(f"stage {stage} written")  # later stages read its files on every process

        for stage in STAGES:
            if stage in stages:
                ensure(stage)
        return outputs

    # --- stages ---------------------------------------------------------------------------------------

    def activations(self) -> extract.Activations:
        return extract.load(self.results / "extract")

    def stage_extract(self, out: Path, _) -> dict[str, Any]:
        e = self.config.extract
        acts = extract.extract_cached(out, self.lm, self.tokenizer, self.samples, batch_size=e.batch_size,
                                      add_special_tokens=e.add_special_tokens, max_length=e.max_length,
                                      truncate=True, pack=e.pack)
        return {"shape": list(acts.acts.shape), "batch_shapes": acts.metadata["batch_shapes"]}

    def stage_metrics(self, out: Path, _) -> dict[str, Any]:
        acts = self.activations()
        sim = metrics.similarity(acts.acts)
        lrds, sads = metrics.layerwise(acts.acts, acts.lang, acts.sem)
        scores = {"lrds": metrics.lrds(sim, acts.lang, acts.sem), "sads": metrics.sads(sim, acts.lang, acts.sem)}
        layers = [{"layer": m + 1, "lrds": float(a), "sads": float(b)} for m, (a, b) in enumerate(zip(lrds, sads))]
        blocks = np.asarray(metrics.block_map(sim, acts.lang))
        tables = {"layerwise": write_table(layers, out, "layerwise"),
                  "block_map": write_table([{"language": l, **dict(zip(acts.languages, map(float, row)))}
                                                   for l, row in zip(acts.languages, blocks)], out, "block_map")}
        figures = {"similarity": plots.similarity_heatmap(np.asarray(sim), acts.lang, list(acts.languages),
                                                          out / "similarity.png"),
                   "block_map": plots.block_heatmap(blocks, list(acts.languages), out / "block_map.png"),
                   "layerwise": plots.layerwise_scores(np.asarray(lrds), np.asarray(sads), out / "layerwise.png")}
        return {**scores, "tables": self.relative(tables), "figures": self.relative(figures)}

    def regions(self, stage: str = "regions") -> np.ndarray:
        """bool [L, M, F]: the key regions a stage stored."""
        with np.load(self.results / stage / "regions.npz") as f:
            return np.unpackbits(f["packed"], count=int(np.prod(f["shape"]))).reshape(f["shape"]).astype(bool)

    def stage_regions(self, out: Path, _) -> dict[str, Any]:
        acts = self.activations()
        regions = np.asarray(metrics.key_regions(acts.acts, acts.lang, self.config.regions.threshold))
        save_regions(regions, out)
        total = regions[0].size
        counts = np.asarray(metrics.counts_per_layer(regions))
        sizes = [{"language": l, "neurons": int(regions[i].sum()), "percent": 100.0 * regions[i].sum() / total}
                 for i, l in enumerate(acts.languages)]
        per_layer = [{"language": l, **{f"layer_{m + 1}": int(c) for m, c in enumerate(row)}}
                     for l, row in zip(acts.languages, counts)]
        jaccard = np.asarray(metrics.jaccard(regions))
        overlap = [{"language": l, **dict(zip(acts.languages, map(float, row)))}
                   for l, row in zip(acts.languages, jaccard)]
        tables = {"region_sizes": write_table(sizes, out, "region_sizes"),
                  "per_layer": write_table(per_layer, out, "key_neurons_per_layer"),
                  "jaccard": write_table(overlap, out, "region_jaccard")}
        figures = {"key_neurons": plots.key_neurons_per_layer(counts, list(acts.languages), out / "key_neurons.png",
                                                              total_per_layer=regions.shape[-1])}
        return {"sklr": metrics.sklr(regions), "percent": {r["language"]: r["percent"] for r in sizes},
                "threshold": self.config.regions.threshold, "tables": self.relative(tables),
                "figures": self.relative(figures)}

    def masks(self, seed: int, fraction: float | None) -> dict[str, np.ndarray]:
        """{"none": None-equivalent, each language: its region, "random": matched random set} as
        bool [M, F] masks."""
        regions = self.regions()
        fraction = evaluate.matched_random_fraction(regions) if fraction is None else fraction
        masks = {"none": np.zeros(regions.shape[1:], bool)}
        masks.update(zip(self.languages, regions))
        masks[evaluate.RANDOM] = evaluate.random_mask(*regions.shape[1:], fraction, seed)
        return masks

    @functools.cached_property
    def ablation_streams(self) -> dict[str, np.ndarray]:
        """{language: its ablation text tokenized once}, cut to `max_windows` windows when set."""
        a = self.config.ablation
        streams = {lang: np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                   for lang, text in ablation_texts(a.text, self.languages).items()}
        if a.get("max_windows"):
            streams = {lang: ids[:a.max_windows * a.seqlen] for lang, ids in streams.items()}
        return streams

    def ablate(self, regions: np.ndarray, out: Path, name: str) -> dict[str, Any]:
        """The perplexity table for `regions` bool [L, M, F] (+ full model and matched random set)."""
        a = self.config.ablation
        table = evaluate.ablation_table(self.lm, self.ablation_streams, regions, self.languages, a.seqlen,
                                        random_fraction=a.get("random_fraction"), seed=a.seed,
                                        batch_size=a.batch_size)
        tables = {name: evaluate.write_table(table, out, name)}
        figures = {name: plots.ablation_heatmap(table.records(), list(table.languages), out / f"{name}.png")}
        return {"records": table.records(), "languages": list(table.languages),
                "tables": self.relative(tables), "figures": self.relative(figures)}

    def stage_ablation(self, out: Path, _) -> dict[str, Any]:
        return self.ablate(self.regions(), out, "ablation")

    def stage_xstorycloze(self, out: Path, _) -> dict[str, Any]:
        x = self.config.xstorycloze
        languages = [lang for lang in self.languages if lang in x.languages]
        reason = None
        if x.kind == "none":
            reason = "disabled (xstorycloze.kind='none')"
        elif not languages:
            reason = f"none of the languages {list(self.languages)} is in xstorycloze.languages"
        elif x.kind == "tsv" and not Path(x.path).is_dir():
            reason = f"xstorycloze.path={x.path!r} does not exist ({FETCH_HINT})"
        if reason:
            logging.warning("xstorycloze skipped: %s", reason)
            return {"skipped": reason}
        masks = self.masks(self.config.ablation.seed, self.config.ablation.get("random_fraction"))
        rows = []
        for lang in languages:
            stories = (data.load_xstorycloze(x.path, lang) if x.kind == "tsv"
                       else data.load_hub_xstorycloze(lang))[:x.limit or None]
            row = {"language": lang, "stories": len(stories)}
            for name, mask in masks.items():
                row[f"acc_{name}"] = evaluate.xstorycloze(self.lm, self.tokenizer, stories, mask,
                                                          batch_size=x.batch_size).accuracy
            rows.append(row)
        return {"rows": rows, "tables": self.relative({"xstorycloze": write_table(rows, out, "xstorycloze")})}

    def stage_generation(self, out: Path, _) -> dict[str, Any]:
        g = self.config.generation
        prompts = {lang: [s[:max(1, len(s) // 2)] for s in self.samples[lang][:g.prompts_per_language]]
                   for lang in self.languages}
        flat = [p for lang in self.languages for p in prompts[lang]]
        masks = self.masks(self.config.ablation.seed, self.config.ablation.get("random_fraction"))
        texts = {name: generation.generate(self.lm, self.tokenizer, flat, g.max_new_tokens, mask)
                 for name, mask in masks.items()}
        rows = [{"prompt": p, **{f"zeroed_{name}": texts[name][i] for name in masks}} for i, p in enumerate(flat)]
        lines = ["# Greedy generations with each region zeroed", ""]
        for i, prompt in enumerate(flat):
            lines += [f"## {prompt!r}", ""] + [f"- **{name}**: {texts[name][i]!r}" for name in masks] + [""]
        write_atomic(out / "generations.md", "\n".join(lines))
        write_atomic(out / "generations.json", json.dumps(rows, ensure_ascii=False, indent=1))
        files = {"md": out / "generations.md", "json": out / "generations.json"}
        return {"tables": self.relative({"generations": files})}

    def stage_compare(self, out: Path, _) -> dict[str, Any]:
        """LAPE (Tang et al. 2024) beside the z-score regions: sizes, Jaccard overlap, per-layer counts,
        and the ablation table of the LAPE regions and of the two methods' intersection."""
        methods = self.config.methods.split(",")
        if "lape" not in methods:
            return {"skipped": f"methods={self.config.methods}"}
        e, acts = self.config.extract, self.activations()
        probs = lape.activation_probabilities(self.lm, self.tokenizer, self.samples, batch_size=e.batch_size,
                                              add_special_tokens=e.add_special_tokens, max_length=e.max_length,
                                              truncate=True)
        write_atomic(out / "lape_probabilities.npy", lambda f: np.save(f, probs))
        found = np.asarray(metrics.lape_regions(probs, **self.config.lape.to_dict()))
        save_regions(found, out)
        zscore = self.regions()
        rows, both = lape.compare_regions(zscore, found, acts.languages)
        tables = {"methods": write_table(rows, out, "methods"),
                  "methods_per_layer": write_table(lape.compare_layers(zscore, found, acts.languages), out,
                                                   "methods_per_layer")}
        figures = {"lape_key_neurons": plots.key_neurons_per_layer(
            np.asarray(metrics.counts_per_layer(found)), list(acts.languages), out / "lape_key_neurons.png",
            total_per_layer=found.shape[-1], title="Key neurons (LAPE)")}
        empty = [row["language"] for row in rows if row["both"] == 0]
        ablations = {name: self.ablate(regions, out, name)
                     for name, regions in (("ablation_lape", found), ("ablation_intersection", both))}
        for done in ablations.values():
            tables.update(done["tables"])
            figures.update(done["figures"])
        return {"rows": rows, "empty_intersection": empty, "ablations": ablations,
                "tables": self.relative(tables), "figures": self.relative(figures)}

    def stage_report(self, out: Path, outputs: dict[str, Any]) -> dict[str, Any]:
        model = self.config.model
        provenance = report.Provenance.from_lm(
            self.lm, corpus=f"{self.config.corpus.kind}:{self.config.corpus.get('path') or 'bundled sample'}",
            samples_per_language=dict.fromkeys(self.languages, self.samples.n), seed=self.config.corpus.seed,
            threshold=self.config.regions.threshold, random_weights=bool(model.get("random")))
        headline: dict[str, Any] = {}
        notes: list[str] = []
        tables: dict[str, Any] = {}
        figures: dict[str, Any] = {}
        for stage in STAGES[1:-1]:
            done = outputs.get(stage) or self.done(stage)
            if not done:
                continue
            tables.update(done.get("tables", {}))
            figures.update(done.get("figures", {}))
            if stage == "metrics":
                headline.update(LRDS=done["lrds"], SADS=done["sads"])
            elif stage == "regions":
                headline.update(SKLR=done["sklr"], **{"key neurons (% of all)": done["percent"]})
            elif stage == "ablation":
                headline["perplexity increase (%)"] = report.ablation_headline(done["records"], done["languages"])
            elif stage == "xstorycloze" and "rows" in done:
                headline["XStoryCloze accuracy"] = {r["language"]: {k[4:]: v for k, v in r.items()
                                                                    if k.startswith("acc_")} for r in done["rows"]}
            elif stage == "xstorycloze":
                notes.append(f"XStoryCloze was skipped: {done['skipped']}.")
            elif stage == "compare" and "rows" in done:
                headline["z-score vs LAPE regions"] = {r["language"]: {k: v for k, v in r.items() if k != "language"}
                                                       for r in done["rows"]}
                for name, ablation in done["ablations"].items():
                    headline[f"perplexity increase (%), {name}"] = report.ablation_headline(
                        ablation["records"], ablation["languages"])
                if done["empty_intersection"]:
                    notes.append("The z-score and LAPE regions do not intersect for "
                                 f"{', '.join(done['empty_intersection'])}: their intersection rows zero "
                                 "nothing, so they equal the full model.")
        summary = report.write_summary(out, provenance, headline, self.absolute(tables), self.absolute(figures),
                                       notes="\n\n".join(notes) or None)
        return {"summary": self.relative(summary)}


def save_regions(regions: np.ndarray, directory: Path) -> None:
    """bool [L, M, F] as regions.npz (bit-packed), atomically."""
    write_atomic(directory / "regions.npz", lambda f: np.savez_compressed(
        f, packed=np.packbits(regions.ravel()), shape=np.array(regions.shape)))


def ablation_texts(text: ml_collections.ConfigDict, languages: Sequence[str]) -> dict[str, str]:
    """{language: the documents joined with "\\n\\n"} for the perplexity table."""
    if text.kind == "bundled":
        sample = data.bundled_sample(languages)
        return {lang: "\n\n".join(sample[lang]) for lang in languages}
    if text.kind == "xlsum":
        return data.join_documents(data.load_xlsum_jsonl(existing(text.path, "ablation.text.path"), languages,
                                                         split=text.split, limit=text.limit))
    if text.kind == "hub_xlsum":
        return data.join_documents(data.load_hub_xlsum(languages, split=text.split, limit=text.limit))
    raise ValueError(f"unknown ablation.text.kind {text.kind!r}; known: {list(TEXT_KINDS)}")


def _plain(value: Any) -> Any:
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
