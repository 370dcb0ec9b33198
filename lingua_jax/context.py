"""What the stages of an analysis read, and a record of it: the config (a view that notes every field
a stage's code reads), the model, tokenizer, corpus and evaluation data (each loaded once), the
results of earlier stages, and the content fingerprints of the input artefacts.

A stage's key is derived from that record, not from lists kept by hand: the config fields its code
read in its last run (with their values), the fingerprints of the inputs it declares, and the keys
of the stages it reads. Resources (the samples, the masks, ...) remember the fields read while they
were computed and note them again in every stage that uses them, so a field read once on behalf of
several stages counts for each.

Fields that only decide how work is split, not what is computed, are not noted: the mesh, FSDP and
batch sizes (sharded and batched results equal one device's to 1e-5; tests/test_sharding.py,
tests/test_extract.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from lingua_jax import checkpoints, config as config_lib, data, evaluate, extract, fingerprints, sharding
from lingua_jax.lm import LM, load_pretrained, random_init, save_pretrained
from lingua_jax.models import family_named
from lingua_jax.tables import plain

PLACEMENT = ("model.mesh", "model.fsdp")  # and every field named batch_size


def is_placement(name: str) -> bool:
    return name in PLACEMENT or name.rsplit(".", 1)[-1] == "batch_size"


@dataclasses.dataclass
class Record:
    """Config fields read {dotted name: value}."""

    config: dict[str, Any] = dataclasses.field(default_factory=dict)

    def add(self, other: Record) -> None:
        self.config.update(other.config)


class TrackedConfig:
    """A read-only view of a ConfigDict that notes each field read (leaves, and whole sections turned
    into dicts or tested for emptiness) in the context's current record."""

    def __init__(self, config: ml_collections.ConfigDict, context: Context, prefix: str = ""):
        self._config, self._context, self._prefix = config, context, prefix

    def _read(self, name: str, value: Any) -> Any:
        dotted = self._prefix + name
        if isinstance(value, ml_collections.ConfigDict):
            return TrackedConfig(value, self._context, dotted + ".")
        self._context.note(dotted, value)
        return value

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._read(name, getattr(self._config, name))

    def __getitem__(self, name: str) -> Any:
        return self._read(name, self._config[name])

    def get(self, name: str, default: Any = None) -> Any:
        return self._read(name, self._config.get(name, default))

    def __contains__(self, name: str) -> bool:
        return name in self._config

    def to_dict(self) -> dict[str, Any]:
        self._context.note(self._prefix.rstrip("."), self._config.to_dict())
        return self._config.to_dict()

    def __bool__(self) -> bool:
        self.to_dict()
        return bool(self._config)


def resource(method: Callable[..., Any]) -> Callable[..., Any]:
    """A context method computed once per arguments; the config fields read while computing it are
    noted again in every record that uses it."""
    @functools.wraps(method)
    def cached(self: Context, *args: Any) -> Any:
        key = (method.__name__, *args)
        if key not in self._resources:
            with self.recording() as record:
                value = method(self, *args)
            self._resources[key] = (value, record)
        value, record = self._resources[key]
        self._records[-1].add(record)
        return value
    return cached


class Context:
    """One analysis's config (resolved, see `config.resolve_paths`), its results directory, and what
    its stages read, loaded on first use."""

    def __init__(self, config: ml_collections.ConfigDict):
        self._config = config
        self.results = Path(config.results_dir)
        self._records = [Record()]
        self._resources: dict[tuple, tuple[Any, Record]] = {}
        self._fingerprints: dict[str, str] = {}

    # --- the record ---------------------------------------------------------------------------------

    @property
    def config(self) -> TrackedConfig:
        return TrackedConfig(self._config, self)

    def note(self, name: str, value: Any) -> None:
        if not is_placement(name):
            self._records[-1].config[name] = plain(value)

    @contextlib.contextmanager
    def recording(self, count: bool = True) -> Iterator[Record]:
        """Record the config reads of the enclosed code; with `count` they are noted in the enclosing
        record too, otherwise they count for nobody else."""
        self._records.append(Record())
        try:
            yield self._records[-1]
        finally:
            record = self._records.pop()
            if count:
                self._records[-1].add(record)

    def current(self, names: Mapping[str, Any]) -> dict[str, Any]:
        """{dotted name: its value in today's config} for recorded fields (a vanished field: a marker)."""
        values = {}
        for name in names:
            node: Any = self._config
            for part in name.split(".") if name else []:
                node = node.get(part, _MISSING) if isinstance(node, ml_collections.ConfigDict) else _MISSING
            values[name] = plain(node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node)
        return values

    # --- input artefacts ----------------------------------------------------------------------------

    def fingerprint(self, name: str) -> str:
        """The content fingerprint of one input artefact (INPUTS), computed once per run."""
        if name not in self._fingerprints:
            with self.recording(count=False):  # reads made only to fingerprint count for no stage
                self._fingerprints[name] = INPUTS[name](self)
        return self._fingerprints[name]

    # --- resources ---------------------------------------------------------------------------------

    @property
    @resource
    def languages(self) -> tuple[str, ...]:
        return config_lib.languages(self.config)

    @property
    @resource
    def source(self) -> checkpoints.ModelSource:
        """Where the model's files are: a local directory, a hub snapshot (with its commit), or for a
        random model the directory it is saved in under the results."""
        model = self.config.model
        if not model.get("random"):
            return checkpoints.resolve_model(model.path, model.get("revision", ""))
        settings = model.random.to_dict()
        target = self.results / "random_model"
        done = (target / "config.json").is_file()
        sharding.barrier("random model checked")  # every process decides the same way before any writes
        if not done:
            tokenizer = data.train_bpe_tokenizer(data.bundled_sample().texts, settings["vocab_size"])
            fields = {k: v for k, v in settings.items() if k not in ("family", "seed", "vocab_size")}
            hf_class = family_named(settings["family"], "model.random.family").config_cls
            hf = hf_class(vocab_size=len(tokenizer), **fields)
            save_pretrained(random_init(hf, seed=settings["seed"]), target, tokenizer)
        return checkpoints.ModelSource(target)

    @property
    @resource
    def lm(self) -> LM:
        model = self.config.model
        return load_pretrained(self.source, dtype=model.dtype, mesh=sharding.default_mesh(tuple(model.mesh)),
                               fsdp=model.get("fsdp", False), attention=model.get("attention", "auto"))

    @property
    @resource
    def tokenizer_source(self) -> checkpoints.ModelSource:
        named = self.config.get("tokenizer")
        return checkpoints.resolve_model(named, weights=False) if named else self.source

    @property
    @resource
    def tokenizer(self) -> Any:
        return data.load_tokenizer(self.tokenizer_source.path)

    @property
    @resource
    def corpus(self) -> data.ParallelCorpus:
        c, languages = self.config.corpus, self.languages
        loaders: dict[str, Callable[[], data.ParallelCorpus]] = {
            "bundled": lambda: data.bundled_sample(),
            "flores": lambda: data.load_flores(existing(c.path, "corpus.path"), languages),
            "ntrex": lambda: data.load_ntrex(existing(c.path, "corpus.path"), languages),
            "table": lambda: data.load_table(existing(c.path, "corpus.path"), languages),
            "bible": lambda: data.load_bible(existing(c.path, "corpus.path"), languages),
            "hub_flores": lambda: data.load_hub_flores(languages),
        }
        if c.kind not in loaders:
            raise ValueError(f"unknown corpus.kind {c.kind!r}; known: {sorted(loaders)}")
        return loaders[c.kind]()

    @property
    @resource
    def samples(self) -> data.ParallelCorpus:
        """n sentences per language (all of them, and said so by the extract stage, if the corpus has
        fewer)."""
        c = self.config.corpus
        return self.corpus.subset(self.languages).select(min(c.n, self.corpus.n), seed=c.seed)

    @property
    @resource
    def ablation_texts(self) -> dict[str, str]:
        """{language: its documents joined with "\\n\\n"} for the perplexity table."""
        text, languages = self.config.ablation.text, self.languages
        if text.kind == "bundled":
            sample = data.bundled_sample(languages)
            return {lang: "\n\n".join(sample[lang]) for lang in languages}
        if text.kind == "xlsum":
            return data.join_documents(data.load_xlsum_jsonl(existing(text.path, "ablation.text.path"),
                                                             languages, split=text.split, limit=text.limit))
        if text.kind == "hub_xlsum":
            return data.join_documents(data.load_hub_xlsum(languages, split=text.split, limit=text.limit))
        raise ValueError(f"unknown ablation.text.kind {text.kind!r}; known: {list(TEXT_KINDS)}")

    @property
    @resource
    def ablation_streams(self) -> dict[str, np.ndarray]:
        """{language: its ablation text tokenized once}, cut to ablation.max_windows windows when set."""
        a = self.config.ablation
        return first_windows({lang: np.asarray(self.tokenizer(text, add_special_tokens=False)["input_ids"])
                              for lang, text in self.ablation_texts.items()}, a.get("max_windows"), a.seqlen)

    @property
    @resource
    def story_languages(self) -> list[str]:
        """The analysed languages XStoryCloze has (xstorycloze.languages)."""
        return [lang for lang in self.languages if lang in self.config.xstorycloze.languages]

    @property
    @resource
    def stories(self) -> dict[str, list[data.Story]]:
        """{language: its cross-lingual stories}, the first `xstorycloze.limit` (0: all)."""
        x = self.config.xstorycloze
        load = (lambda lang: data.load_xstorycloze(x.path, lang)) if x.kind == "tsv" else data.load_hub_xstorycloze
        return {lang: load(lang)[:x.limit or None] for lang in self.story_languages}

    @resource
    def activations(self) -> extract.Activations:
        return extract.load(self.results / "extract")

    @resource
    def regions(self) -> np.ndarray:
        """bool [L, M, F]: the key regions the regions stage stored."""
        with np.load(self.results / "regions" / "regions.npz") as f:
            return np.unpackbits(f["packed"], count=int(np.prod(f["shape"]))).reshape(f["shape"]).astype(bool)

    @resource
    def steering_values(self) -> dict[str, np.ndarray]:
        """{"mean", "median"}: float32 [L, M, F], each language's typical activation of every neuron, as
        the regions stage stored them."""
        with np.load(self.results / "regions" / "steering_values.npz") as f:
            return {name: f[name] for name in f.files}

    @property
    @resource
    def masks(self) -> dict[str, np.ndarray]:
        """{"none": nothing zeroed, each language: its region, "random": a matched random set} as bool
        [M, F] masks, the random one from ablation.seed and ablation.random_fraction."""
        a, regions = self.config.ablation, self.regions()
        fraction = a.get("random_fraction")
        fraction = evaluate.matched_random_fraction(regions) if fraction is None else fraction
        masks = {"none": np.zeros(regions.shape[1:], bool)}
        masks.update(zip(self.languages, regions))
        masks[evaluate.RANDOM] = evaluate.random_mask(*regions.shape[1:], fraction, a.seed)
        return masks


_MISSING = "<not set>"
TEXT_KINDS = ("bundled", "xlsum", "hub_xlsum")  # ablation.text.kind
XSTORYCLOZE_KINDS = ("tsv", "hub", "none")
FETCH_HINT = "run `python launch/fetch_data.py --config <your config>` where there is a network, or set data_dir"


def first_windows(streams: Mapping[str, np.ndarray], windows: int | None, seqlen: int) -> dict[str, np.ndarray]:
    """{language: token stream [N]} cut to the tokens of its first `windows` windows of `seqlen` (0 or
    None: whole)."""
    return {lang: ids[:windows * seqlen] if windows else ids for lang, ids in streams.items()}


# Input artefacts a stage can declare, and how their content is fingerprinted.
def source_fingerprint(source: checkpoints.ModelSource) -> str:
    """A hub snapshot's commit, or the content fingerprint of a local checkpoint directory."""
    return f"hub:{source.hub_id}@{source.commit}" if source.hub_id else fingerprints.checkpoint(source.path)


INPUTS: dict[str, Callable[[Context], str]] = {
    "model": lambda ctx: source_fingerprint(ctx.source),
    "tokenizer": lambda ctx: source_fingerprint(ctx.tokenizer_source),
    "corpus": lambda ctx: fingerprints.texts(ctx.samples.languages, ctx.samples.texts),
    "ablation_text": lambda ctx: fingerprints.texts(ctx.ablation_texts),
    "xstorycloze": lambda ctx: fingerprints.texts({lang: [dataclasses.astuple(s) for s in stories]
                                                   for lang, stories in ctx.stories.items()}),
}


def existing(path: str, setting: str) -> Path:
    """The directory or file a data setting names; a FileNotFoundError naming the setting otherwise."""
    if not path:
        raise FileNotFoundError(f"{setting} is not set: give the folder or file to read")
    found = Path(path)
    if not found.exists():
        raise FileNotFoundError(f"{setting}={path!r} does not exist: {FETCH_HINT}")
    return found

