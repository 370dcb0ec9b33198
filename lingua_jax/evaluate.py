"""Evaluation under neuron masks and interventions: perplexity (the XL-Sum protocol of METHOD.md), continuation
log-likelihoods (lm-evaluation-harness conventions), cross-lingual XStoryCloze, and the deactivation
table (the paper's Table 1).

Every score is the forward service's "logprobs" output (`LM.forward`, `lm.target_logprobs`): final
hidden states once, then logits, log-softmax (float32) and the summed log-probabilities one chunk of
positions at a time, so float32 logits never exist for more than [B, chunk, V]. Several edits can
share a batch (row b takes edit `edit_ids[b]` of K), sums are accumulated in float64 on the host, and
on a mesh (`lm.mesh`) the service splits each batch over "data".

Shapes: N rows (windows or context/continuation pairs), B batch, T tokens, V vocabulary, M layers,
F neurons per layer, K masks, L languages, R table rows.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.typing import ArrayLike
from transformers import PreTrainedTokenizerBase

from lingua_jax.data.batching import Batches, make_batches, windows as cut_windows
from lingua_jax.data.xstorycloze import Story, cross_lingual_prompt
from lingua_jax import tables
from lingua_jax.sharding import to_host
from lingua_jax.generation import generate  # noqa: F401  (public as lingua_jax.evaluate.generate)
from lingua_jax.lm import LM, Inputs
from lingua_jax.models.common import Intervention, as_intervention
from lingua_jax.progress import progress

FULL, RANDOM = "full", "random"  # names of the table's baseline rows


# --- scoring ------------------------------------------------------------------------------------

def _check_edits(lm: LM, masks: ArrayLike | Intervention | None) -> Intervention | None:
    """K edits: masks bool [K, M, F] (zeroing) or an Intervention over [K, M, F] -> an Intervention over
    [K, M, F] placed on every device (None: no edit), with a clear error when the shape does not fit
    the model."""
    if masks is None:
        return None
    edits = masks if isinstance(masks, Intervention) else Intervention(masks)
    return lm.place(lm.check_intervention(intervention=edits), batched=False)


def _single_edit(lm: LM, neuron_mask: ArrayLike | None, intervention: Intervention | None) -> Intervention | None:
    """One edit over [M, F] (`intervention`, or `neuron_mask` zeroing; or None) as an edit over [1, M, F]."""
    edit = as_intervention(neuron_mask, intervention)
    if edit is None:
        return None
    if edit.mask.ndim != 2:
        name = "neuron_mask" if intervention is None else "intervention mask"
        raise ValueError(f"{name} has shape {edit.mask.shape}; expected [{lm.num_layers}, {lm.num_neurons}] (M, F)")
    return _check_edits(lm, jax.tree.map(lambda a: a[None], edit))


def _score(lm: LM, batches: Iterable[Inputs], num_batches: int, edits: Intervention | None,
           chunk: int | None, what: str) -> list[np.ndarray]:
    """float64 [B] per batch (`Inputs` with targets, scored and edit_ids): each row's summed
    log-probabilities of its scored targets, row b under edit edit_ids[b] of `edits` (None: no edit).

    Batch i + 1 is dispatched before batch i's result is fetched, so the device never waits on the
    host, and the progress log (with ETA) counts finished batches.
    """
    sums, pending = [], None
    for batch in progress(batches, num_batches, what):
        out, _ = lm.forward(batch if edits is not None else batch.replace(edit_ids=None), output="logprobs",
                            intervention=edits, chunk=chunk)
        if pending is not None:
            sums.append(to_host(pending).astype(np.float64).sum(axis=1))
        pending = out
    return sums + [to_host(pending).astype(np.float64).sum(axis=1)]


# --- perplexity ----------------------------------------------------------------------------------

def _window_batches(windows: np.ndarray, rows: np.ndarray, row_masks: np.ndarray, batch_size: int
                    ) -> Iterator[Inputs]:
    """Batches of rows (window rows[i] under mask row_masks[i]); the last batch is completed with
    unscored copies of window 0. Each window predicts its tokens 2..T."""
    t = windows.shape[1]
    ones = np.ones((batch_size, t), np.int32)
    for start in range(0, len(rows), batch_size):
        n = min(batch_size, len(rows) - start)
        take = np.zeros(batch_size, np.int64)
        take[:n] = rows[start:start + n]
        mask_ids = np.zeros(batch_size, np.int32)
        mask_ids[:n] = row_masks[start:start + n]
        ids = windows[take]
        scored = np.zeros((batch_size, t), bool)
        scored[:n, :-1] = True
        yield Inputs(ids, ones, targets=np.roll(ids, -1, axis=1), scored=scored, edit_ids=mask_ids)


def _row_nll(lm: LM, windows: np.ndarray, edits: Intervention | None, rows: np.ndarray, row_masks: np.ndarray,
             batch_size: int, chunk: int | None) -> np.ndarray:
    """float64 [len(rows)]: NLL sum of window rows[i] (tokens 2..T) under edit row_masks[i] of `edits`,
    in batches of `lm.rows_per_batch(batch_size)` rows."""
    batch_size = lm.rows_per_batch(batch_size)
    if windows.shape[1] < 2:
        raise ValueError(f"windows of {windows.shape[1]} token(s) predict nothing; seqlen must be >= 2")
    num_batches = -(-len(rows) // batch_size)
    batches = _window_batches(windows, rows, row_masks, batch_size)
    sums = _score(lm, batches, num_batches, edits, chunk, f"perplexity ({len(rows)} windows)")
    return -np.concatenate(sums)[:len(rows)]


def window_nll(lm: LM, windows: ArrayLike, neuron_mask: ArrayLike | None = None, batch_size: int = 8,
               chunk: int | None = None, intervention: Intervention | None = None) -> np.ndarray:
    """float64 [N]: the NLL sum of each window int [N, T] over its tokens 2..T.

    intervention (or neuron_mask, its zeroing shorthand): None, over [M, F] for every window, or over
    [N, M, F], one per window (rows with different edits share batches). `chunk`: positions per logits
    chunk (default: from `lm.LOGITS_BUDGET_BYTES`).
    """
    windows = np.asarray(windows, dtype=np.int32)
    if windows.ndim != 2:
        raise ValueError(f"windows must be [N, T], got shape {windows.shape}")
    n = windows.shape[0]
    rows = np.arange(n)
    edit = as_intervention(neuron_mask, intervention)
    if edit is None or edit.mask.ndim == 2:
        return _row_nll(lm, windows, _single_edit(lm, None, edit), rows, np.zeros(n, np.int32), batch_size, chunk)
    edits = _check_edits(lm, edit)
    if edits.mask.shape[0] != n:
        raise ValueError(f"{edits.mask.shape[0]} masks or interventions for {n} windows")
    return _row_nll(lm, windows, edits, rows, rows.astype(np.int32), batch_size, chunk)


def perplexity_grid(lm: LM, token_ids_by_lang: Mapping[str, ArrayLike], seqlen: int,
                    masks: ArrayLike | Intervention | None = None, batch_size: int = 8, chunk: int | None = None,
                    mask_names: Sequence[str] | None = None) -> np.ndarray:
    """float64 [L, K]: perplexity of each language's token stream (1-D, in mapping order) under each of
    K edits: masks bool [K, M, F] (zeroing), or an Intervention over [K, M, F] (None: the full model,
    K = 1). A non-finite log-likelihood is a FloatingPointError naming the first such window, its
    language and its edit (`mask_names`).

    Protocol (METHOD.md): each stream is cut into non-overlapping windows of `seqlen` tokens, the tail
    dropped; each window predicts its own tokens 2..seqlen; PPL = exp(mean NLL over all predicted
    tokens). All (window, mask) rows of all languages share batches of one shape: one compile.
    """
    edits = _check_edits(lm, masks)
    per_lang = [cut_windows(ids, seqlen) for ids in token_ids_by_lang.values()]
    counts = np.array([w.shape[0] for w in per_lang])
    k = 1 if edits is None else edits.mask.shape[0]
    n = int(counts.sum())
    nll = _row_nll(lm, np.concatenate(per_lang), edits, np.repeat(np.arange(n), k),
                   np.tile(np.arange(k, dtype=np.int32), n), batch_size, chunk).reshape(n, k)
    language_of_window = np.repeat(np.arange(len(per_lang)), counts)
    bad = np.argwhere(~np.isfinite(nll))
    if bad.size:
        window, mask = map(int, bad[0])
        language = list(token_ids_by_lang)[language_of_window[window]]
        first = window - int(counts[:language_of_window[window]].sum())
        raise FloatingPointError(f"perplexity: window {first} of language {language!r} under "
                                 f"{(mask_names or [f'mask {i}' for i in range(k)])[mask]!r} has a non-finite "
                                 f"log-likelihood ({len(bad)} (window, mask) pairs in all): NaN or Inf in the "
                                 "model's weights?")
    totals = np.zeros((len(per_lang), k))
    np.add.at(totals, language_of_window, nll)
    return np.exp(totals / (counts[:, None] * (seqlen - 1)))


def perplexities(lm: LM, token_ids: ArrayLike, seqlen: int, masks: ArrayLike | Intervention, batch_size: int = 8,
                 chunk: int | None = None) -> np.ndarray:
    """float64 [K]: the perplexity of one token stream under each of K edits (masks bool [K, M, F] or an
    Intervention over [K, M, F]), all evaluated in shared batches (see `perplexity_grid`)."""
    return perplexity_grid(lm, {"": token_ids}, seqlen, masks, batch_size, chunk)[0]


def perplexity(lm: LM, token_ids: ArrayLike, seqlen: int, neuron_mask: ArrayLike | None = None,
               batch_size: int = 8, chunk: int | None = None, intervention: Intervention | None = None) -> float:
    """Perplexity of one 1-D token stream (a language's documents joined with "\\n\\n", tokenized once)
    under an intervention over [M, F], neuron_mask bool [M, F] (True = zeroed), or neither; see
    `perplexity_grid` for the protocol."""
    edits = _single_edit(lm, neuron_mask, intervention)
    return float(perplexity_grid(lm, {"": token_ids}, seqlen, edits, batch_size, chunk)[0, 0])


# --- continuation log-likelihoods ----------------------------------------------------------------

def _encode(tokenizer: PreTrainedTokenizerBase, text: str, add_special_tokens: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def encode_pair(tokenizer: PreTrainedTokenizerBase, context: str, continuation: str,
                add_special_tokens: bool = False) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) as lm-evaluation-harness encodes a loglikelihood request.

    Trailing whitespace of the context moves to the continuation; then continuation tokens =
    encode(context + continuation)[len(encode(context)):], so a continuation whose first characters
    merge with the context's last ones is scored the harness way. An empty context becomes the
    tokenizer's BOS (else EOS) token and the continuation is encoded alone.
    """
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if prefix is None:
            raise ValueError("an empty context needs a tokenizer with a BOS or EOS token")
        return [prefix], _encode(tokenizer, continuation, add_special_tokens)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = _encode(tokenizer, context + continuation, add_special_tokens)
    context_ids = _encode(tokenizer, context, add_special_tokens)
    return context_ids, whole[len(context_ids):]


def _pair_batches(sequences: list[list[int]], context_lengths: list[int], batch_size: int,
                  buckets: Sequence[int] | None) -> tuple[Batches, list[Inputs]]:
    """(the Batches of inputs, what to score of each): each sequence context + continuation is read as
    sequence[:-1], right-padded to a bucket length (pad id 0, masked), and scored at its
    continuation's tokens."""
    batches = make_batches([s[:-1] for s in sequences], batch_size, pad_id=0, buckets=buckets)
    scoring = []
    for batch in batches:
        targets = np.zeros_like(batch.input_ids)
        scored = np.zeros(batch.input_ids.shape, bool)
        for row, i in enumerate(batch.index):
            if i >= 0:
                n = len(sequences[i]) - 1
                targets[row, :n] = sequences[i][1:]
                scored[row, context_lengths[i] - 1:n] = True
        mask_ids = np.zeros(len(batch.index), np.int32)
        scoring.append(Inputs(batch.input_ids, batch.attention_mask, targets=targets, scored=scored,
                              edit_ids=mask_ids))
    return batches, scoring


def loglikelihood(lm: LM, tokenizer: PreTrainedTokenizerBase, pairs: Sequence[tuple[str, str]],
                  neuron_mask: ArrayLike | None = None, batch_size: int = 8, add_special_tokens: bool = False,
                  buckets: Sequence[int] | None = None, chunk: int | None = None,
                  names: Sequence[str] | None = None, intervention: Intervention | None = None) -> np.ndarray:
    """float64 [len(pairs)]: Σ log p(continuation tokens | context) for each (context, continuation).

    Tokens as lm-evaluation-harness (`encode_pair`), no special tokens unless `add_special_tokens`.
    The model reads context + continuation (less the last token), right-padded to one of a few bucket
    lengths (`buckets`, default powers of two: one compile each). An intervention over [M, F] or
    neuron_mask bool [M, F] (its zeroing shorthand) edits the neurons, or neither. A
    non-finite log-likelihood is a FloatingPointError naming the first such pair (`names[i]`, default
    "pair i").
    """
    if not pairs:
        raise ValueError("no (context, continuation) pairs to score")
    encoded = [encode_pair(tokenizer, c, x, add_special_tokens) for c, x in pairs]
    for i, (context_ids, continuation_ids) in enumerate(encoded):
        if not continuation_ids:
            raise ValueError(f"pair {i} has no continuation tokens of its own (its characters merge into "
                             f"the context's last tokens): {pairs[i]!r}")
    edits = _single_edit(lm, neuron_mask, intervention)
    batches, scoring = _pair_batches([c + x for c, x in encoded], [len(c) for c, _ in encoded],
                                     lm.rows_per_batch(batch_size), buckets)
    sums = _score(lm, scoring, len(scoring), edits, chunk, f"loglikelihood ({len(pairs)} pairs)")
    scores = batches.scatter(sums)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        name = names[bad[0]] if names is not None else f"pair {bad[0]}"
        raise FloatingPointError(f"loglikelihood: {name} has a non-finite log-likelihood ({bad.size} of "
                                 f"{len(pairs)} in all): NaN or Inf in the model's weights?")
    return scores


# --- XStoryCloze ---------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StoryClozeResult:
    """scores float64 [N, 2]: summed log-prob of each ending; labels int [N]: the right ending."""

    scores: np.ndarray
    labels: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        """int [N]: the higher-scoring ending (ties: the first, as the harness's argmax)."""
        return np.argmax(self.scores, axis=1)

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.predictions == self.labels))


def xstorycloze(lm: LM, tokenizer: PreTrainedTokenizerBase, stories: Sequence[Story],
                neuron_mask: ArrayLike | None = None, batch_size: int = 8, buckets: Sequence[int] | None = None,
                intervention: Intervention | None = None) -> StoryClozeResult:
    """Cross-lingual XStoryCloze (METHOD.md): the four sentences in the story's language +
    " The ending in English:", each " " + English ending scored as a continuation; a story is right
    when its right ending scores higher. An intervention over [M, F], neuron_mask bool [M, F], or neither."""
    prompts = [cross_lingual_prompt(story) for story in stories]
    pairs = [(context, ending) for context, endings in prompts for ending in endings]
    names = [f"story {story.story_id} ({story.language}), ending {j + 1}" for story in stories for j in (0, 1)]
    scores = loglikelihood(lm, tokenizer, pairs, neuron_mask, batch_size, buckets=buckets, names=names,
                           intervention=intervention)
    return StoryClozeResult(scores.reshape(-1, 2), np.array([story.label for story in stories]))


# --- the deactivation table ----------------------------------------------------------------------

def random_mask(num_layers: int, num_neurons: int, fraction: float, seed: int) -> np.ndarray:
    """bool [M, F] with exactly round(fraction · M · F) neurons set, drawn uniformly without
    replacement (numpy PCG64 with `seed`)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    total = num_layers * num_neurons
    flat = np.zeros(total, bool)
    flat[np.random.default_rng(seed).choice(total, size=round(fraction * total), replace=False)] = True
    return flat.reshape(num_layers, num_neurons)


def matched_random_fraction(regions: ArrayLike) -> float:
    """The largest region's share of all M · F neurons, rounded UP to a whole percent (the paper's
    random baseline: 10% for BLOOM-7b1, slightly above its largest region)."""
    regions = np.asarray(regions, bool)
    largest = int(regions.reshape(regions.shape[0], -1).sum(axis=1).max())
    return -(-100 * largest // regions[0].size) / 100


@dataclasses.dataclass(frozen=True)
class AblationTable:
    """The paper's Table 1: perplexity of each language (columns) with a region zeroed (rows).

    rows: "full" (nothing zeroed), each language's key region, "random" (matched size).
    perplexity float64 [R, L]; neurons int [R]: neurons zeroed in each row; total_neurons = M · F;
    windows int [L]: seqlen-token windows per column language; model: what the weights are (`LM.source`).
    """

    languages: tuple[str, ...]
    rows: tuple[str, ...]
    perplexity: np.ndarray
    neurons: np.ndarray
    total_neurons: int
    seqlen: int
    windows: tuple[int, ...]
    random_fraction: float
    seed: int
    model: dict[str, Any]

    @property
    def increase(self) -> np.ndarray:
        """float64 [R, L]: % increase of perplexity over the full model (row "full")."""
        return 100.0 * (self.perplexity / self.perplexity[0] - 1.0)

    @property
    def neuron_percent(self) -> np.ndarray:
        """float64 [R]: neurons zeroed as % of M · F."""
        return 100.0 * self.neurons / self.total_neurons

    def records(self) -> list[dict[str, Any]]:
        """One dict per row: ablated, neurons, neurons_percent, ppl_<lang>, increase_<lang>."""
        records = []
        for r, row in enumerate(self.rows):
            record = {"ablated": row, "neurons": int(self.neurons[r]),
                      "neurons_percent": float(self.neuron_percent[r])}
            for c, language in enumerate(self.languages):
                record[f"ppl_{language}"] = float(self.perplexity[r, c])
                record[f"increase_{language}"] = float(self.increase[r, c])
            records.append(record)
        return records


def ablation_table(lm: LM, token_ids_by_lang: Mapping[str, ArrayLike], regions: ArrayLike,
                   languages: Sequence[str], seqlen: int, random_fraction: float | None = None, seed: int = 0,
                   batch_size: int = 8, chunk: int | None = None) -> AblationTable:
    """Zero each language's key region (regions bool [L_r, M, F], named by `languages`), and a random
    set of `random_fraction` of all neurons (default `matched_random_fraction(regions)`), and measure
    the perplexity of every language of `token_ids_by_lang` (1-D token streams) under each, plus the
    full model: all masks ride in shared batches (`perplexity_grid`)."""
    regions = np.asarray(regions, bool)
    if regions.ndim != 3 or regions.shape[0] != len(languages):
        raise ValueError(f"regions have shape {regions.shape}; expected [{len(languages)}, M, F], one per "
                         f"language of {list(languages)}")
    clashes = {FULL, RANDOM} & set(languages)
    if clashes:
        raise ValueError(f"region names {sorted(clashes)} clash with the baseline rows")
    fraction = matched_random_fraction(regions) if random_fraction is None else random_fraction
    m, f = regions.shape[1:]
    masks = np.concatenate([np.zeros((1, m, f), bool), regions, random_mask(m, f, fraction, seed)[None]])
    rows = (FULL, *languages, RANDOM)
    ppl = perplexity_grid(lm, token_ids_by_lang, seqlen, masks, batch_size, chunk, mask_names=rows)
    return AblationTable(
        languages=tuple(token_ids_by_lang), rows=rows, perplexity=ppl.T,
        neurons=masks.reshape(len(masks), -1).sum(axis=1), total_neurons=m * f, seqlen=seqlen,
        windows=tuple(len(ids) // seqlen for ids in map(np.ravel, token_ids_by_lang.values())),
        random_fraction=fraction, seed=seed, model=dict(lm.source))


# --- writing the table ---------------------------------------------------------------------------

def write_table(table: AblationTable, directory: str | os.PathLike, name: str = "ablation") -> dict[str, Path]:
    """<name>.csv, .json and .md (`tables.write_table`) of `table.records()`; the JSON also holds the
    model and the settings (seqlen, windows per language, random fraction, seed)."""
    settings = {"model": table.model, "languages": list(table.languages), "seqlen": table.seqlen,
                "windows": dict(zip(table.languages, table.windows)), "total_neurons": table.total_neurons,
                "random_fraction": table.random_fraction, "seed": table.seed}
    return tables.write_table(table.records(), directory, name, metadata=settings)
