"""Pooled neuron activations over a parallel corpus (eq. 5-6 before normalisation), and their store.

Two ways to batch the sentences (each tokenized alone): bucketed (one sentence per row, rows padded to
a few bucket lengths) or packed (several sentences per row, each attending only to itself, with its own
positions from 0; almost no padding and one compiled shape). Either way each sentence's result is the
one it has alone, and the per-language sums of the normalised vectors a(s) and a(s)² that the
contribution scores need (eq. 10-12) are accumulated on the device batch by batch, so scoring needs no
further pass over the activations.

Shapes: N = L * n samples in (language, sentence) order, M layers, F neurons per layer, L languages,
B rows per batch, T row length, S sentences per packed row.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorstore as ts
from absl import logging

import jax
import jax.numpy as jnp

from lingua_jax import metrics, sharding
from lingua_jax.checkpoints import read_json
from lingua_jax.data import ParallelCorpus, bucket_sizes, make_batches, tokenize_each
from lingua_jax.data.batching import padding_id
from lingua_jax.io import write_atomic
from lingua_jax.lm import LM, Inputs
from lingua_jax.progress import progress

STORE = "acts.zarr"  # [N, M, F] float32 zarr array (tensorstore), one chunk per sample and device shard
FILES = (STORE, "labels.npz", "metadata.json")  # metadata.json is written last: it marks completion
SUMS_FILE = "language_sums.npz"  # optional: the streamed per-language sums
MIN_PACK_LENGTH = 128  # packed rows are at least this long unless a cap (max_length, buckets) is given


@dataclasses.dataclass
class Activations:
    """acts float32 [N, M, F]; lang, sem int32 [N]; languages[lang[i]] is sample i's language code."""

    acts: np.ndarray
    lang: np.ndarray
    sem: np.ndarray
    languages: tuple[str, ...]
    metadata: dict[str, Any]
    sums: np.ndarray | None = None  # float32 [L, M, F]: Σ a(s) over each language's samples (eq. 6 vectors)
    sums_of_squares: np.ndarray | None = None  # float32 [L, M, F]: Σ a(s)², likewise

    def contribution_scores(self) -> jax.Array:
        """C [L, M, F] (eq. 10-12): from the streamed sums when present, else from `acts`."""
        if self.sums is None or self.sums_of_squares is None:
            return metrics.contribution_scores(self.acts, self.lang)
        return metrics.contribution_scores_from_sums(self.sums, self.sums_of_squares)


def extract(lm: LM, tokenizer: Any, corpus: ParallelCorpus, *, batch_size: int = 16,
            add_special_tokens: bool = False, pack: bool = True, store: str | os.PathLike | None = None,
            **batching: Any) -> Activations:
    """Each sentence tokenized alone and run through the model; its neurons averaged over its tokens.

    Packed (`pack=True`, the default): sentences, longest first, are packed best-fit into rows of
    MIN_PACK_LENGTH tokens, or of the next power of two up to the cap for longer ones
    (`PackedBatches.build`), about batch_size * MIN_PACK_LENGTH tokens per batch, each attending to
    itself only; `max_length`, `buckets` and `truncate` mean what they mean for bucketing. Bucketed
    (`pack=False`): `batch_size` sentences per batch, padded to one of a few bucket lengths; `batching`
    options go to `data.make_batches` (buckets, max_length, truncate, padding_side). Both give every
    sentence what it gets alone; packing is the default because padding is computed and thrown away:
    FLORES sentences padded to bucket lengths leave half the tokens padding, and on 2 CPU cores the
    bucketed path reached 0.31 MFU where the packed one reached 0.76 (benchmarks/compare.py). One compile per distinct batch shape (logged and listed in the metadata).
    The per-language sums of a(s) and a(s)² are accumulated on the device as the batches finish
    (`Activations.sums`, `.sums_of_squares`).

    With `store` (a directory all processes see), each process writes the rows its own devices hold
    into the zarr array `store`/acts.zarr as each batch finishes, and `acts` is read back from it at
    the end; without it every process gathers every row.
    """
    token_ids = tokenize_each(tokenizer, corpus.texts, add_special_tokens)
    if pack:
        plan = PackedBatches.build(token_ids, batch_size, padding_id(tokenizer), lm.data_parallelism, **batching)
        run, num_batches, shapes = _packed_outputs(lm, plan), len(plan.batches), plan.shapes
    else:
        batches = make_batches(token_ids, lm.rows_per_batch(batch_size), padding_id(tokenizer), **batching)
        run = ((b.index, lm.pooled(b.input_ids, b.attention_mask)) for b in batches)
        num_batches, shapes = len(batches), batches.shapes
    logging.info("extracting %d sentences in batches of %d shape(s) %s%s", len(token_ids), len(shapes), shapes,
                 " (packed)" if pack else "")
    acts, sums, squares, norms = _collect(lm, run, num_batches, len(token_ids), corpus.lang, len(corpus.languages),
                                          store)
    bad = np.flatnonzero(~np.isfinite(norms))
    if bad.size:
        i = int(bad[0])
        raise FloatingPointError(
            f"sample {i} ({corpus.languages[corpus.lang[i]]} sentence {corpus.sem[i]}: {corpus.texts[i][:60]!r}) "
            f"has non-finite activations, and {bad.size - 1} more samples: NaN or Inf in the model's weights?")
    lengths = np.array([len(t) for t in token_ids])
    cap = bucket_sizes(int(lengths.max()), batching.get("buckets"), batching.get("max_length"))[-1]
    cut = (lengths > cap) & bool(batching.get("truncate"))
    metadata = {"languages": list(corpus.languages), "n": corpus.n, "texts_sha256": _texts_hash(corpus),
                "add_special_tokens": add_special_tokens, "batch_shapes": [list(s) for s in shapes],
                "packed": pack, "tokenizer": getattr(tokenizer, "name_or_path", None), "model": lm.source,
                "truncated": {lang: int(cut[corpus.lang == i].sum()) for i, lang in enumerate(corpus.languages)}}
    if pack:
        metadata.update(segments_per_row=sorted(set(plan.segments_of)), token_efficiency=plan.efficiency)
    return Activations(acts, corpus.lang, corpus.sem, tuple(corpus.languages), metadata, sums, squares)


# --- the per-language sums, streamed ----------------------------------------------------------------

@functools.partial(jax.jit, donate_argnums=(0, 1))
def _accumulate(sums: jax.Array, squares: jax.Array, pooled: jax.Array, members: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """sums, squares [L, K] += Σ_r members[r, l]·a_r and ·a_r², a_r = row r of pooled [R, ...] over its
    L2 norm; members [R, L] is 0/1 (all 0 for filler rows). Also returns each row's squared norm [R].
    The accumulators are donated: updated in place."""
    x = pooled.reshape(pooled.shape[0], -1).astype(jnp.float32)
    squared = jnp.sum(x * x, axis=1)
    usable = squared > 0
    inverse = jnp.where(usable, jax.lax.rsqrt(jnp.where(usable, squared, 1.0)), 0.0)
    weights = members * inverse[:, None]
    batch_sums, batch_squares = metrics.weighted_sums(x, weights, weights * inverse[:, None])
    return sums + batch_sums, squares + batch_squares, squared


def _collect(lm: LM, run: Iterator[tuple[np.ndarray, jax.Array]], num_batches: int, num_samples: int,
             lang: np.ndarray, num_languages: int, store: str | os.PathLike | None
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, np.ndarray]:
    """Drain `run` ((sample index [R], pooled [R, M, F]) per batch, index -1 for filler rows): acts
    [N, M, F] in sample order (gathered, or written per process into `store` and read back), the
    streamed per-language sums (None, with a warning, when a sample's vector is all zeros or not
    finite: it has no normalised vector), and each sample's squared norm [N]."""
    m, f = lm.num_layers, lm.num_neurons
    sums = squares = array = None
    acts = np.empty((num_samples, m, f), np.float32) if store is None else None
    norms = np.zeros(num_samples)
    writes = []
    for index, pooled in progress(_prefetched(run), num_batches, "pooled activations"):
        if sums is None:
            sums, squares = (lm.place(np.zeros((num_languages, m * f), np.float32), batched=False)
                              for _ in range(2))
            if store is not None:
                array = create_store(store, (num_samples, m, f), pooled.sharding.shard_shape(pooled.shape))
        valid = index >= 0
        members = np.zeros((len(index), num_languages), np.float32)
        members[valid, lang[index[valid]]] = 1.0
        sums, squares, squared = _accumulate(sums, squares, pooled, lm.place(members, batched=False))
        if array is None:
            acts[index[valid]] = sharding.to_host(pooled).reshape(len(index), m, f)[valid]
        else:
            writes += write_own_rows(array, index, pooled)
        norms[index[valid]] = sharding.to_host(squared)[valid]
    if array is not None:
        for write in writes:
            write.result()
        sharding.barrier("activation store written")
        acts = array.read().result()
    if not np.all((norms > 0) & np.isfinite(norms)):
        logging.warning("some activation vectors are all zeros or not finite: no streamed sums")
        return acts, None, None, norms
    return acts, *(sharding.to_host(x).reshape(num_languages, m, f) for x in (sums, squares)), norms


def _prefetched(run: Iterator[Any]) -> Iterator[Any]:
    """`run`'s items one step late: batch i + 1 is dispatched before batch i is read back."""
    pending = None
    for item in run:
        if pending is not None:
            yield pending
        pending = item
    if pending is not None:
        yield pending


# --- packing ------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PackedBatches:
    """Sentences packed several to a row. batches[i] lists the rows of batch i, each row the samples
    it holds in order; batch i has shape `shapes_of[i]` = (B rows, T tokens) and room for
    `segments_of[i]` sentences per row (one value per shape, so one compile per shape)."""

    token_ids: tuple[tuple[int, ...], ...]
    batches: tuple[tuple[tuple[int, ...], ...], ...]
    shapes_of: tuple[tuple[int, int], ...]
    segments_of: tuple[int, ...]
    pad_id: int

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """The distinct (B, T) batch shapes, ascending."""
        return tuple(sorted(set(self.shapes_of)))

    @property
    def efficiency(self) -> float:
        """Real tokens / all token slots of all batches."""
        return sum(map(len, self.token_ids)) / sum(b * t for b, t in self.shapes_of)

    @classmethod
    def build(cls, token_ids: Sequence[Sequence[int]], batch_size: int, pad_id: int, data_axis: int = 1, *,
              buckets: Sequence[int] | None = None, max_length: int | None = None, truncate: bool = False,
              **unsupported: Any) -> "PackedBatches":
        """Best-fit decreasing: each sentence, longest first, goes into the fullest row it fits in, or
        opens a row of the shortest row length that holds it. Row lengths: powers of two from
        MIN_PACK_LENGTH up to the cap (`max_length`, else max(`buckets`), else the first power of
        two >= the longest sentence); short rows keep attention over unrelated tokens cheap. A batch
        holds about batch_size * (shortest row length) tokens; rows per batch are evened out over the
        batches of a row length and rounded up to a multiple of `data_axis`."""
        if unsupported:
            raise ValueError(f"option(s) {sorted(unsupported)} have no meaning when packing (pack=True)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not token_ids:
            raise ValueError("no samples to batch")
        longest = max(len(t) for t in token_ids)
        if max_length is not None or buckets is not None:
            top = bucket_sizes(longest, buckets, max_length)[-1]
        else:
            top = max(MIN_PACK_LENGTH, 1 << (longest - 1).bit_length())
        lengths = sorted({min(top, MIN_PACK_LENGTH << k) for k in range(max(1, top.bit_length()))})
        fitted = []
        for i, tokens in enumerate(token_ids):
            if not tokens:
                raise ValueError(f"sample {i} has no tokens")
            if len(tokens) > top and not truncate:
                raise ValueError(f"sample {i} has {len(tokens)} tokens, more than the maximum {top} "
                                 "(raise max_length/buckets or pass truncate=True)")
            fitted.append(tuple(tokens[:top]))
        rows: list[list[int]] = []
        row_length: list[int] = []
        free: list[tuple[int, int]] = []  # (free slots, row), ascending
        for i in sorted(range(len(fitted)), key=lambda i: (-len(fitted[i]), i)):
            size = len(fitted[i])
            at = bisect.bisect_left(free, (size, -1))
            if at == len(free):
                row_length.append(next(length for length in lengths if length >= size))
                rows.append([])
                slots, row = row_length[-1], len(rows) - 1
            else:
                slots, row = free.pop(at)
            rows[row].append(i)
            bisect.insort(free, (slots - size, row))
        batches, shapes, segments = [], [], []
        for length in sorted(set(row_length), reverse=True):
            group = [tuple(r) for r, n in zip(rows, row_length) if n == length]
            target = max(1, batch_size * lengths[0] // length)
            count = -(-len(group) // target)
            per_batch = -(-len(group) // count)
            per_batch = -(-per_batch // data_axis) * data_axis
            most = max(map(len, group))
            for start in range(0, len(group), per_batch):
                batches.append(tuple(group[start:start + per_batch]))
                shapes.append((per_batch, length))
                segments.append(most)
        return cls(tuple(fitted), tuple(batches), tuple(shapes), tuple(segments), pad_id)

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Batch i: input_ids and segment_ids (1..S per row, 0 on padding), int32 [B, T], and index int32
        [B, S] (the sample in each segment, -1 if none). Positions restart in each sentence
        (`Layout.packed` derives them from the segment ids)."""
        (b, t), segments = self.shapes_of[i], self.segments_of[i]
        input_ids = np.full((b, t), self.pad_id, np.int32)
        segment_ids = np.zeros((b, t), np.int32)
        index = np.full((b, segments), -1, np.int32)
        for r, row in enumerate(self.batches[i]):
            start = 0
            for s, sample in enumerate(row):
                tokens = self.token_ids[sample]
                span = slice(start, start + len(tokens))
                input_ids[r, span] = tokens
                segment_ids[r, span] = s + 1
                index[r, s] = sample
                start += len(tokens)
        return input_ids, segment_ids, index


def _packed_outputs(lm: LM, plan: PackedBatches) -> Iterator[tuple[np.ndarray, jax.Array]]:
    """(sample index [B·S], pooled [B·S, M, F]) per packed batch: the forward service pools each
    sentence over its own tokens inside the layers (`Inputs.segment_ids`, `Layout.packed`), row b's
    sentence s at b·S + s; no LM head, no final norm, and [B, M, T, F] never exists."""
    for i in range(len(plan.batches)):
        input_ids, segment_ids, index = plan.batch(i)
        _, pooled = lm.forward(Inputs(input_ids, segment_ids=segment_ids, num_segments=index.shape[1]),
                               capture="pooled", output="none")  # [B, S, M, F]
        yield index.reshape(-1), pooled.reshape(-1, *pooled.shape[2:])


# --- the store -----------------------------------------------------------------------------------------

def create_store(directory: str | os.PathLike, shape: tuple[int, int, int], shard_shape: Sequence[int]
                 ) -> ts.TensorStore:
    """A new, empty float32 zarr array `directory`/acts.zarr of `shape` [N, M, F], opened on every
    process (process 0 creates it, replacing any old one; the others wait, then open it). One chunk per
    sample and per device shard of [M, F] (`shard_shape`, [R, M', F']), so processes writing their own
    shards never write the same chunk."""
    chunks = [1, *(int(x) for x in shard_shape[1:])]
    spec = dict(_store_spec(Path(directory)),
                metadata={"shape": list(shape), "chunks": chunks, "dtype": "<f4", "compressor": None})
    if jax.process_index() == 0:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "metadata.json").unlink(missing_ok=True)  # the store is incomplete until rewritten
        array = ts.open(spec, create=True, delete_existing=True).result()
    sharding.barrier("activation store created")
    return array if jax.process_index() == 0 else ts.open(spec, open=True).result()


def write_own_rows(array: ts.TensorStore, index: np.ndarray, pooled: jax.Array) -> list[ts.WriteFutures]:
    """Start writing into `array` [N, M, F] the parts of pooled [R, M, F] (rows in sample order
    `index` [R], -1 for filler) that this process's devices hold, one replica of each; returns the
    pending writes. Without a mesh every process holds all of `pooled` (its own copy), so process 0
    alone writes."""
    if pooled.is_fully_addressable and jax.process_index() != 0:
        return []
    writes = []
    for shard in pooled.addressable_shards:
        if shard.replica_id != 0:
            continue
        rows = index[shard.index[0]]
        keep = rows >= 0
        if keep.any():
            part = np.asarray(shard.data)[keep]
            writes.append(array.oindex[(rows[keep], *shard.index[1:])].write(part))
    return writes


def _store_spec(directory: Path) -> dict[str, Any]:
    """The tensorstore spec of `directory`/acts.zarr."""
    return {"driver": "zarr", "kvstore": {"driver": "file", "path": str(directory.resolve() / STORE)}}


def extract_cached(directory: str | os.PathLike, lm: LM, tokenizer: Any, corpus: ParallelCorpus,
                   **options: Any) -> Activations:
    """`extract` into the store in `directory`, each process writing its own rows (see `extract`); a
    later call with the same model, corpus and settings loads the stored activations instead."""
    key = cache_key(lm, tokenizer, corpus, options)
    directory = Path(directory)
    if all((directory / f).exists() for f in FILES):
        try:
            stored = read_json(directory / "metadata.json")
        except ValueError as e:
            logging.warning("%s; extracting again", e)
            stored = {}
        if stored.get("cache_key") == key:
            logging.info("reusing activations stored in %s", directory)
            return load(directory)
    activations = extract(lm, tokenizer, corpus, store=directory, **options)
    activations.metadata["cache_key"] = key
    _save_labels(activations, directory)  # written by process 0 (write_atomic), the rows being written
    sharding.barrier("activation store complete")
    return activations


def cache_key(lm: LM, tokenizer: Any, corpus: ParallelCorpus, options: dict[str, Any]) -> str:
    """sha256 over what determines the activations: model source, corpus texts, tokenizer, options."""
    what = {"model": lm.source, "texts": _texts_hash(corpus), "languages": list(corpus.languages),
            "tokenizer": [getattr(tokenizer, "name_or_path", None), len(tokenizer)],
            "options": {k: options[k] for k in sorted(options)}}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def save(activations: Activations, directory: str | os.PathLike) -> None:
    """Write acts.zarr, labels.npz and metadata.json (the last atomically, and last: it marks completion)
    from one process's in-memory activations."""
    acts = activations.acts
    create_store(directory, acts.shape, acts.shape).write(acts).result()
    _save_labels(activations, Path(directory))


def _save_labels(activations: Activations, directory: Path) -> None:
    """labels.npz, the streamed sums (when present) and then metadata.json, each atomically."""
    write_atomic(directory / "labels.npz", lambda f: np.savez(f, lang=activations.lang, sem=activations.sem))
    if activations.sums is not None:
        write_atomic(directory / SUMS_FILE, lambda f: np.savez(f, sums=activations.sums,
                                                               sums_of_squares=activations.sums_of_squares))
    else:
        (directory / SUMS_FILE).unlink(missing_ok=True)
    metadata = dict(activations.metadata, languages=list(activations.languages))
    write_atomic(directory / "metadata.json", json.dumps(metadata, indent=1))


def store_problem(directory: str | os.PathLike) -> str | None:
    """Why the activation store in `directory` cannot be read in full: a missing file, or chunks of
    acts.zarr missing (a zarr array would read them as zeros); None when it can."""
    directory = Path(directory)
    missing = [f for f in FILES if not (directory / f).exists()]
    if missing:
        return f"activation store {str(directory)!r} is missing {missing}"
    try:
        read_json(directory / "metadata.json")
    except ValueError as e:
        return str(e)
    try:
        layout = read_json(directory / STORE / ".zarray")
        expected = int(np.prod([-(-size // chunk) for size, chunk in zip(layout["shape"], layout["chunks"])]))
    except (ValueError, KeyError, OSError) as e:
        return f"activation store {str(directory / STORE)!r} has no readable .zarray ({e})"
    present = sum(1 for p in (directory / STORE).iterdir() if not p.name.startswith("."))
    if present < expected:
        return (f"activation store {str(directory / STORE)!r} holds {present} of its {expected} chunks: it is "
                "incomplete or damaged (extract again)")
    return None


def load(directory: str | os.PathLike) -> Activations:
    """Read what `save` or `extract_cached` wrote; a clear error when the store is missing, damaged or
    incomplete (`store_problem`)."""
    directory = Path(directory)
    problem = store_problem(directory)
    if problem:
        raise FileNotFoundError(problem)
    metadata = read_json(directory / "metadata.json")
    labels = np.load(directory / "labels.npz")
    sums = np.load(directory / SUMS_FILE) if (directory / SUMS_FILE).is_file() else None
    acts = ts.open(_store_spec(directory), open=True, read=True).result().read().result()
    return Activations(acts, labels["lang"], labels["sem"],
                       tuple(metadata["languages"]), metadata,
                       *((sums["sums"], sums["sums_of_squares"]) if sums is not None else (None, None)))


def _texts_hash(corpus: ParallelCorpus) -> str:
    return hashlib.sha256("\n".join(corpus.texts).encode()).hexdigest()
