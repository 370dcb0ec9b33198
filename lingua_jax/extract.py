"""Pooled neuron activations over a parallel corpus (eq. 5-6 before normalisation), and their store.

Shapes: N = L * n samples in (language, sentence) order, M layers, F neurons per layer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

import jax

from lingua_jax import sharding
from lingua_jax.data import ParallelCorpus, batch_texts
from lingua_jax.io import write_atomic
from lingua_jax.lm import LM
from lingua_jax.progress import progress

FILES = ("acts.npy", "labels.npz", "metadata.json")  # metadata.json is written last: it marks completion


@dataclasses.dataclass
class Activations:
    """acts float32 [N, M, F]; lang, sem int32 [N]; languages[lang[i]] is sample i's language code."""

    acts: np.ndarray
    lang: np.ndarray
    sem: np.ndarray
    languages: tuple[str, ...]
    metadata: dict[str, Any]


def extract(lm: LM, tokenizer: Any, corpus: ParallelCorpus, *, batch_size: int = 16,
            add_special_tokens: bool = False, **batching: Any) -> Activations:
    """Each sentence tokenized alone, bucketed into a few padded shapes, run through `lm.pooled`.

    `batching` options go to `data.batch_texts` (buckets, max_length, truncate, padding_side); one
    compile per distinct batch shape, which is logged.
    """
    batches = batch_texts(tokenizer, corpus.texts, batch_size, add_special_tokens=add_special_tokens, **batching)
    logging.info("extracting %d sentences in %d batches of %d shapes %s", batches.num_samples, len(batches),
                 len(batches.shapes), batches.shapes)
    outputs = [sharding.to_host(lm.pooled(b.input_ids, b.attention_mask))
               for b in progress(batches, len(batches), "pooled activations")]
    metadata = {"languages": list(corpus.languages), "n": corpus.n, "texts_sha256": _texts_hash(corpus),
                "add_special_tokens": add_special_tokens, "batch_shapes": [list(s) for s in batches.shapes],
                "tokenizer": getattr(tokenizer, "name_or_path", None), "model": lm.source}
    return Activations(batches.scatter(outputs), corpus.lang, corpus.sem, tuple(corpus.languages), metadata)


def extract_cached(directory: str | os.PathLike, lm: LM, tokenizer: Any, corpus: ParallelCorpus,
                   **options: Any) -> Activations:
    """`extract`, stored in `directory`; a later call with the same model, corpus and settings loads
    the stored activations instead of recomputing them."""
    key = cache_key(lm, tokenizer, corpus, options)
    stored = Path(directory) / "metadata.json"
    if stored.is_file() and json.loads(stored.read_text()).get("cache_key") == key:
        logging.info("reusing activations stored in %s", directory)
        return load(directory)
    activations = extract(lm, tokenizer, corpus, **options)
    activations.metadata["cache_key"] = key
    if jax.process_index() == 0:  # every process holds the whole result; one writes it
        save(activations, directory)
    return activations


def cache_key(lm: LM, tokenizer: Any, corpus: ParallelCorpus, options: dict[str, Any]) -> str:
    """sha256 over what determines the activations: model source, corpus texts, tokenizer, options."""
    what = {"model": lm.source, "texts": _texts_hash(corpus), "languages": list(corpus.languages),
            "tokenizer": [getattr(tokenizer, "name_or_path", None), len(tokenizer)],
            "options": {k: options[k] for k in sorted(options)}}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def save(activations: Activations, directory: str | os.PathLike) -> None:
    """Write acts.npy, labels.npz and metadata.json, each atomically (temp file + rename)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metadata.json").unlink(missing_ok=True)  # the store is incomplete until rewritten
    write_atomic(directory / "acts.npy", lambda f: np.save(f, activations.acts))
    write_atomic(directory / "labels.npz", lambda f: np.savez(f, lang=activations.lang, sem=activations.sem))
    metadata = dict(activations.metadata, languages=list(activations.languages))
    write_atomic(directory / "metadata.json", json.dumps(metadata, indent=1))


def load(directory: str | os.PathLike) -> Activations:
    """Read what `save` wrote; a clear error when the store is missing or incomplete."""
    directory = Path(directory)
    missing = [f for f in FILES if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"activation store {str(directory)!r} is missing {missing}")
    metadata = json.loads((directory / "metadata.json").read_text())
    labels = np.load(directory / "labels.npz")
    return Activations(np.load(directory / "acts.npy"), labels["lang"], labels["sem"],
                       tuple(metadata["languages"]), metadata)


def _texts_hash(corpus: ParallelCorpus) -> str:
    return hashlib.sha256("\n".join(corpus.texts).encode()).hexdigest()
