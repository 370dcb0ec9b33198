"""Tokenize sentences one at a time and pack them into static-shape batches; cut perplexity windows.

Shapes: N samples, B batch size, T padded length (one of a few bucket lengths).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np

PaddingSide = Literal["left", "right"]
MIN_BUCKET = 8
FILLER = -1  # `index` of filler rows


@dataclasses.dataclass(frozen=True)
class Batch:
    """input_ids int32 [B, T], attention_mask int32 [B, T] (1 on real tokens), index int32 [B]: the
    sample each row holds, FILLER (-1) for all-padding rows whose results must be dropped."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    index: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        """bool [B]: rows that hold a sample."""
        return self.index != FILLER


@dataclasses.dataclass(frozen=True)
class Batches:
    """The batches covering samples 0..num_samples-1, each sample in exactly one row."""

    batches: tuple[Batch, ...]
    num_samples: int

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Batch:
        return self.batches[i]

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """The distinct (B, T) shapes, ascending: one compilation each under jit."""
        return tuple(sorted({batch.input_ids.shape for batch in self.batches}))

    def scatter(self, outputs: Sequence[Any]) -> np.ndarray:
        """[N, ...]: per-batch results [B, ...] (one per batch, in order) put back in sample order,
        filler rows dropped."""
        if len(outputs) != len(self.batches):
            raise ValueError(f"got {len(outputs)} outputs for {len(self.batches)} batches")
        first = np.asarray(outputs[0])
        result = np.empty((self.num_samples, *first.shape[1:]), dtype=first.dtype)
        for batch, out in zip(self.batches, outputs):
            result[batch.index[batch.valid]] = np.asarray(out)[batch.valid]
        return result


def tokenize_each(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
    """Token ids of each text tokenized alone (default without BOS/EOS, as the reference).

    A text that gives no tokens is an error naming it: its mean activation would be undefined.
    """
    ids = tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    for i, (text, tokens) in enumerate(zip(texts, ids)):
        if not tokens:
            raise ValueError(f"sample {i} gives no tokens: {text!r}")
    return [list(tokens) for tokens in ids]


def bucket_sizes(
    longest: int, buckets: Sequence[int] | None = None, max_length: int | None = None
) -> list[int]:
    """The padded lengths to use, ascending.

    The cap is `max_length`, else max(buckets), else none. Sizes are the given `buckets` (default:
    powers of two from MIN_BUCKET up) below the cap, plus the cap itself; with no cap at all, the
    powers of two up to the first one >= `longest`.
    """
    if buckets is not None and (not buckets or min(buckets) < 1):
        raise ValueError(f"buckets must be a non-empty list of positive lengths, got {list(buckets)}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    cap = max_length if max_length is not None else (max(buckets) if buckets else None)
    if buckets is None:
        buckets = _powers_of_two(longest if cap is None else cap)
    if cap is None:
        return sorted(set(buckets))
    return sorted({b for b in buckets if b < cap} | {cap})


def _powers_of_two(upto: int) -> list[int]:
    """MIN_BUCKET, 2 * MIN_BUCKET, ... up to the first one >= upto."""
    sizes = [MIN_BUCKET]
    while sizes[-1] < upto:
        sizes.append(sizes[-1] * 2)
    return sizes


def make_batches(
    token_ids: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    *,
    buckets: Sequence[int] | None = None,
    max_length: int | None = None,
    truncate: bool = False,
    padding_side: PaddingSide = "right",
) -> Batches:
    """Padded batches of a fixed `batch_size` over the samples sorted by length, longest first.

    Each batch is padded to the smallest bucket length (`bucket_sizes`) that holds its longest
    sample, so there are at most len(bucket_sizes) distinct shapes. A sample longer than the cap
    (`max_length`, else the largest bucket) is an error naming it, or with `truncate=True` keeps its
    first `cap` tokens. Only the last batch can be short: it is completed with filler rows (pad ids,
    attention_mask 0, index FILLER); whatever a model returns for them is meaningless and
    `Batches.scatter` drops it. `padding_side="left"` puts the padding before the tokens.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if not token_ids:
        raise ValueError("no samples to batch")
    sizes = bucket_sizes(max(len(t) for t in token_ids), buckets, max_length)
    samples = [_fit(i, list(t), sizes[-1], truncate) for i, t in enumerate(token_ids)]
    order = sorted(range(len(samples)), key=lambda i: (-len(samples[i]), i))
    batches = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        length = _bucket_of(len(samples[rows[0]]), sizes)
        batches.append(_pack(rows, samples, batch_size, length, pad_id, padding_side))
    return Batches(tuple(batches), len(samples))


def _fit(i: int, tokens: list[int], cap: int, truncate: bool) -> list[int]:
    """Sample i's tokens, cut to `cap` when truncating; an error if it is empty or too long."""
    if not tokens:
        raise ValueError(f"sample {i} has no tokens")
    if len(tokens) > cap and not truncate:
        raise ValueError(f"sample {i} has {len(tokens)} tokens, more than the maximum {cap} "
                         "(raise max_length/buckets or pass truncate=True)")
    return tokens[:cap]


def _bucket_of(length: int, sizes: Sequence[int]) -> int:
    return next(size for size in sizes if size >= length)


def _pack(
    rows: list[int], samples: list[list[int]], batch_size: int, length: int, pad_id: int, side: PaddingSide
) -> Batch:
    """One [batch_size, length] batch of the samples `rows`, completed with filler rows."""
    input_ids = np.full((batch_size, length), pad_id, dtype=np.int32)
    attention_mask = np.zeros((batch_size, length), dtype=np.int32)
    index = np.full((batch_size,), FILLER, dtype=np.int32)
    for r, i in enumerate(rows):
        n = len(samples[i])
        span = slice(length - n, length) if side == "left" else slice(0, n)
        input_ids[r, span] = samples[i]
        attention_mask[r, span] = 1
        index[r] = i
    return Batch(input_ids, attention_mask, index)


def batch_texts(
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    *,
    add_special_tokens: bool = False,
    **options: Any,
) -> Batches:
    """`tokenize_each` then `make_batches` (options: buckets, max_length, truncate, padding_side).

    Padding uses the tokenizer's pad id, else its EOS id, else 0: padded positions are masked, so the
    value only has to be a valid id.
    """
    pad_id = padding_id(tokenizer)
    ids = tokenize_each(tokenizer, texts, add_special_tokens=add_special_tokens)
    return make_batches(ids, batch_size, pad_id, **options)


def padding_id(tokenizer: Any) -> int:
    """The id to pad with: the tokenizer's pad id, else its EOS id, else 0 (padded positions are
    masked, so the value only has to be a valid id)."""
    return next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)


def windows(token_ids: Sequence[int] | np.ndarray, seqlen: int) -> np.ndarray:
    """int32 [num_windows, seqlen]: consecutive non-overlapping windows of a 1-D token sequence, the
    tail shorter than `seqlen` dropped (the reference perplexity protocol)."""
    ids = np.asarray(token_ids).reshape(-1)
    if seqlen < 1:
        raise ValueError(f"seqlen must be >= 1, got {seqlen}")
    count = ids.size // seqlen
    if count == 0:
        raise ValueError(f"only {ids.size} tokens, fewer than one window of seqlen={seqlen}")
    return ids[: count * seqlen].reshape(count, seqlen).astype(np.int32)
