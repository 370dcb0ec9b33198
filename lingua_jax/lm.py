"""`LM`: a loaded model (Flax module, params, HF config) and its forward service, and
`load_pretrained`, which builds one from a checkpoint directory or a hub id.

The forward service: every forward of the package (extraction, scoring, LAPE, steering; generation's
inputs) is `LM.forward(Inputs(...), capture, output)`. It validates the inputs, rounds the rows up to a
multiple of the mesh's data axis with filler rows (copies of row 0, whose results are dropped), places
them on the model's devices (`LM.place`) and calls one jit-compiled function, `apply_model` (one
compile per input shape and static mode), which runs the model and, for output "logprobs", the chunked
target log-probabilities of `target_logprobs` (which training's loss uses as well).

Shapes: B batch, T tokens, V vocabulary, D hidden size, M layers, F neurons per layer, P sequences per
packed row, K edits, C positions per log-prob chunk.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any, Literal

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lingua_jax import checkpoints, sharding
from lingua_jax.models import Family, common, family_of

Output = Literal["logits", "hidden", "logprobs", "none"]
OUTPUT_MODES = ("logits", "hidden", "logprobs", "none")
LOGITS_BUDGET_BYTES = 1 << 28  # float32 logits of one log-prob chunk, [B, C, V], stay under this
# On CPU the log-softmax walks the vocabulary in blocks of VOCAB_BLOCK entries (a block of the head's
# table and its [B, C, VOCAB_BLOCK] logits stay in cache) over chunks of about BLOCK_ROWS positions.
VOCAB_BLOCK = 512
BLOCK_ROWS = 1024


@flax.struct.dataclass
class LMOutput:
    """logits [B, T, V] (None when not computed); neurons [B, M, T, F] ("full"), [B, M, F] float32
    ("pooled", mean over each sequence's real tokens) or None."""

    logits: jax.Array | None
    neurons: jax.Array | None


@flax.struct.dataclass
class Inputs:
    """One batch for `LM.forward`: every array has B rows (any B; the service rounds it up).

    input_ids int [B, T]. attention_mask [B, T]: 1 on real tokens (left or right padding; None: all
    real). Packed rows instead: segment_ids int [B, T], 0 on padding and 1..P on the sequences of a
    row (each contiguous), each sequence attending to itself only with positions from 0
    (attention_mask must then be None); with num_segments P > 0 (static: one compile per P) the
    neurons are pooled per sequence. For output "logprobs": targets int [B, T] and scored bool [B, T],
    position t adding log p(targets[b, t] | tokens <= t) to row b's sums where scored. edit_ids int
    [B]: row b takes edit edit_ids[b] of an intervention over [K, M, F] (without it an intervention is
    over [M, F] for every row or [B, M, F], one per row).
    """

    input_ids: Any
    attention_mask: Any = None
    segment_ids: Any = None
    targets: Any = None
    scored: Any = None
    edit_ids: Any = None
    num_segments: int = flax.struct.field(pytree_node=False, default=0)


def logits_chunk(batch: int, length: int, vocab: int, vocab_block: int | None = None) -> int:
    """Positions per log-prob chunk: so that float32 logits [batch, chunk, vocab] fit
    LOGITS_BUDGET_BYTES, or with the vocabulary in blocks, so that a chunk holds about BLOCK_ROWS
    positions of all rows (each block of the table is read once per chunk)."""
    if vocab_block:
        return max(1, min(length, BLOCK_ROWS // batch))
    return max(1, min(length, LOGITS_BUDGET_BYTES // (4 * batch * vocab)))


def _split_positions(x: jax.Array, chunk: int) -> jax.Array:
    """[B, T, ...] -> [ceil(T / chunk), B, chunk, ...], zero-padded at the end of T."""
    b, t = x.shape[:2]
    n = -(-t // chunk)
    x = jnp.pad(x, [(0, 0), (0, n * chunk - t)] + [(0, 0)] * (x.ndim - 2))
    return jnp.swapaxes(x.reshape(b, n, chunk, *x.shape[2:]), 0, 1)


def _blocked_target_logprobs(module: common.CausalLM, params: Any, hidden: jax.Array, targets: jax.Array,
                             block: int) -> jax.Array:
    """float32 [B, C]: log p(targets) at each position of hidden [B, C, D], the log-softmax's
    normaliser accumulated online over blocks of `block` vocabulary entries (a running maximum and the
    sum of exponentials below it), so no more than [B, C, block] logits exist at once. The last block
    is shifted back to end at V, its entries already counted masked out."""
    vocab = module.spec.vocab_size
    block = min(block, vocab)

    def step(carry, start):
        top, total, picked = carry  # [B, C] each
        first = jnp.minimum(start, vocab - block)
        logits = module.apply({"params": params}, hidden, first, block, method="logits").astype(jnp.float32)
        ids = first + jnp.arange(block)
        new = ids >= start
        logits = jnp.where(new, logits, -jnp.inf)
        picked = picked + jnp.sum(jnp.where(new & (ids == targets[..., None]), logits, 0.0), axis=-1)
        top_next = jnp.maximum(top, jnp.max(logits, axis=-1))
        total = total * jnp.exp(top - top_next) + jnp.sum(jnp.exp(logits - top_next[..., None]), axis=-1)
        return (top_next, total, picked), None

    zeros = jnp.zeros(targets.shape, jnp.float32)
    init = (jnp.full(targets.shape, -jnp.inf), zeros, zeros)
    (top, total, picked), _ = jax.lax.scan(step, init, jnp.arange(0, vocab, block))
    return picked - top - jnp.log(total)


def target_logprobs(module: common.CausalLM, params: Any, hidden: jax.Array, targets: jax.Array,
                    scored: jax.Array, chunk: int, vocab_block: int | None = None) -> jax.Array:
    """float32 [B, ceil(T / C)]: Σ log p(targets[b, t]) over the scored positions t of each chunk of
    C = `chunk` positions. hidden [B, T, D]: the final normed hidden states; targets int [B, T]; scored
    bool [B, T] (T is zero-padded to a multiple of C, unscored).

    Each chunk's logits [B, C, V] (`module.logits`: soft caps and logit scales apply) and their
    log-softmax are float32 and exist one chunk at a time (`lax.map`); `jax.checkpoint` recomputes them
    in a backward pass, so neither scoring nor a training gradient holds [B, T, V] float32 logits (with
    no gradient the checkpoint costs nothing). With `vocab_block` the log-softmax of each chunk walks
    the vocabulary in blocks of that many entries (`_blocked_target_logprobs`): faster on CPU, where
    the blocks stay in cache; for scoring only (a gradient would add a whole-table update per block).
    """

    @jax.checkpoint
    def chunk_sums(part: tuple[jax.Array, jax.Array, jax.Array]) -> jax.Array:
        h, y, keep = part  # [B, C, D], [B, C], [B, C]
        if vocab_block:
            logprobs = _blocked_target_logprobs(module, params, h, y, vocab_block)
        else:
            logits = module.apply({"params": params}, h, method="logits").astype(jnp.float32)
            picked = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
            logprobs = picked - jax.nn.logsumexp(logits, axis=-1)
        return jnp.sum(jnp.where(keep, logprobs, 0.0), axis=-1)

    parts = tuple(_split_positions(x, chunk) for x in (hidden, targets, scored))
    return jax.lax.map(chunk_sums, parts).T


@functools.partial(jax.jit, static_argnames=("module", "capture", "output", "chunk", "vocab_block"))
def apply_model(module: common.CausalLM, params: Any, inputs: Inputs, edit: common.Intervention | None,
                capture: common.Capture = "none", output: Output = "logits", chunk: int | None = None,
                vocab_block: int | None = None) -> tuple[jax.Array | None, jax.Array | None]:
    """The forward service's compiled core (see `LM.forward`, which validates, rounds and places
    `inputs` first): (output, neurons) of the model on `inputs`, `edit` applied (rows picking theirs by
    `inputs.edit_ids` when given); "logprobs" by `target_logprobs(..., chunk, vocab_block)`. Training
    calls it inside its own step, for the gradient (without vocab_block)."""
    if inputs.edit_ids is not None:
        edit = jax.tree.map(lambda a: a[inputs.edit_ids], edit)
    out, state = module.clone(capture=capture).apply(
        {"params": params}, inputs.input_ids, inputs.attention_mask, edit,
        output="hidden" if output == "logprobs" else output, segment_ids=inputs.segment_ids,
        num_segments=inputs.num_segments, mutable=["intermediates"])
    if output == "logprobs":
        out = target_logprobs(module, params, out, inputs.targets, inputs.scored, chunk, vocab_block)
    return out, common.collect_neurons(state.get("intermediates", {}), capture)


def _array(x: Any, dtype: Any) -> Any:
    """`x` as `dtype`: a jax.Array stays one (on its devices), anything else becomes numpy."""
    return x.astype(dtype) if isinstance(x, jax.Array) else np.asarray(x).astype(dtype, copy=False)


def _fill(x: Any, rows: int) -> Any:
    """x [B, ...] completed to `rows` rows with copies of row 0 (filler whose results are dropped)."""
    extra = rows - x.shape[0]
    if not extra:
        return x
    xp = jnp if isinstance(x, jax.Array) else np
    return xp.concatenate([x, xp.repeat(x[:1], extra, axis=0)])


class LM:
    """A causal LM with every MLP neuron exposed, and the forward service every computation goes through.

    `lm(input_ids, attention_mask, neuron_mask=None, capture="none", intervention=None)` -> LMOutput;
    `lm.pooled(...)` -> [B, M, F] float32 without computing logits; `lm.active_counts(...)`; all three
    are `lm.forward(Inputs(...), capture, output)`. `intervention` (`Intervention`) sets, adds to,
    scales or zeroes chosen neurons; `neuron_mask` is its zeroing shorthand, True/1 where a neuron is
    zeroed. Either covers [M, F] for the whole batch or [B, M, F] per example. `attention_mask` is 1
    on real tokens; left or right padding gives each sequence the results it has alone. Any number of
    rows works on any mesh. One compile per input shape and mode.
    """

    def __init__(self, module: common.CausalLM, params: Any, config: Any, family: Family,
                 source: dict[str, Any] | None = None, mesh: Mesh | None = None):
        self.module = module
        self.mesh = mesh
        self.source = source or {}  # what the weights are (path, dtype): reports and caches name it
        self.params = params
        self.config = config
        self.family = family.name

    @property
    def spec(self) -> Any:
        return self.module.spec

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    @property
    def num_neurons(self) -> int:
        return self.spec.num_neurons

    @property
    def dtype(self) -> Any:
        return self.module.dtype

    @property
    def data_parallelism(self) -> int:
        """How many ways every batch is split: the mesh's "data" axis (1 without a mesh)."""
        return 1 if self.mesh is None else self.mesh.shape["data"]

    def rows_per_batch(self, batch_size: int) -> int:
        """The rows a batch of `batch_size` rows runs as: rounded up to a multiple of the data axis
        (`forward` completes it with filler rows). Code that plans many batches may build them of this
        many rows, so that those slots hold real rows rather than filler."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return -(-batch_size // self.data_parallelism) * self.data_parallelism

    # --- the forward service ---------------------------------------------------------------------

    def forward(self, inputs: Inputs, capture: common.Capture = "none", output: Output = "logits",
                neuron_mask: Any = None, intervention: common.Intervention | None = None,
                chunk: int | None = None) -> tuple[jax.Array | None, jax.Array | None]:
        """(output, neurons) of the model on the B rows of `inputs` (see `Inputs`).

        output: "logits" [B, T, V] (the model's dtype); "hidden" [B, T, D], the final normed hidden
        states; "logprobs" float32 [B, ceil(T / C)], per chunk of C = `chunk` positions (default:
        `logits_chunk`) the Σ log p(targets) over the scored positions (`target_logprobs`, the
        vocabulary in blocks of `vocab_block()`);
        "none" None. neurons: capture "none" None; "full" [B, M, T, F]; "pooled" float32 [B, M, F], the
        mean over each row's real tokens, or [B, P, M, F] over each packed sequence (num_segments P);
        "active" float32, the same shapes, the real tokens where the activation function's output is
        > 0. `intervention` (or `neuron_mask`, its zeroing shorthand) over [M, F], [B, M, F], or with
        `inputs.edit_ids` [K, M, F].
        """
        if capture not in common.CAPTURE_MODES:
            raise ValueError(f"capture must be one of {common.CAPTURE_MODES}, got {capture!r}")
        if output not in OUTPUT_MODES:
            raise ValueError(f"output must be one of {OUTPUT_MODES}, got {output!r}")
        if output == "logprobs" and inputs.targets is None:
            raise ValueError('output="logprobs" needs targets and scored')
        placed, edit, rows = self.prepare(inputs, neuron_mask, intervention)
        block = None
        if output == "logprobs":
            block = self.vocab_block()
            chunk = chunk or logits_chunk(*placed.input_ids.shape, self.spec.vocab_size, block)
        out, neurons = apply_model(self.module, self.params, placed, edit, capture=capture, output=output,
                                   chunk=chunk if output == "logprobs" else None, vocab_block=block)
        if placed.input_ids.shape[0] == rows:
            return out, neurons
        return tuple(None if x is None else x[:rows] for x in (out, neurons))

    def vocab_block(self) -> int | None:
        """Vocabulary entries per block of the scoring log-softmax (`target_logprobs`): VOCAB_BLOCK on
        CPU, where a [C, V] logits chunk makes a round trip through memory between the head's matmul
        and the softmax (blocks: 1.7x faster for BLOOM-560m's head); None, the whole vocabulary per
        chunk, on accelerators (one large matmul) and where a model axis splits the vocabulary (a slice
        of it would gather the table), or when the vocabulary is no larger than a block."""
        device = next(iter(jax.tree.leaves(self.params)[0].devices()))
        split = self.mesh is not None and self.mesh.shape.get("model", 1) > 1
        if device.platform != "cpu" or split or self.spec.vocab_size <= VOCAB_BLOCK:
            return None
        return VOCAB_BLOCK

    def prepare(self, inputs: Inputs, neuron_mask: Any = None, intervention: common.Intervention | None = None
                ) -> tuple[Inputs, common.Intervention | None, int]:
        """(inputs, edit, B): `inputs` checked (ids, masks and targets int32, scored bool), completed to
        `rows_per_batch(B)` rows with copies of row 0, and placed (split over "data"); the edit checked
        (`check_intervention`), completed likewise when it has one row per example, and placed (split
        over "data", or replicated); B, the rows given, whose results are [:B]. `forward` runs on what
        this returns; generation runs its own loop on it."""
        ids = inputs.input_ids
        ids = ids if isinstance(ids, jax.Array) else np.asarray(ids)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer) or not ids.shape[0]:
            raise ValueError(f"input_ids must be an integer array [B, T], B >= 1, got {ids.dtype}{ids.shape}")
        b = ids.shape[0]

        def checked(name: str, x: Any, dtype: Any, shape: tuple[int, ...] = ids.shape) -> Any:
            x = _array(x, dtype)
            if x.shape != shape:
                raise ValueError(f"{name} has shape {x.shape}, input_ids {ids.shape}")
            return x

        rows = {"input_ids": _array(ids, np.int32)}
        if inputs.segment_ids is not None:
            if inputs.attention_mask is not None:
                raise ValueError("give attention_mask or segment_ids (packed rows), not both")
            rows["segment_ids"] = checked("segment_ids", inputs.segment_ids, np.int32)
        else:
            if inputs.num_segments:
                raise ValueError("num_segments pools per packed sequence: it needs segment_ids")
            mask = np.ones(ids.shape, np.int32) if inputs.attention_mask is None else inputs.attention_mask
            rows["attention_mask"] = checked("attention_mask", mask, np.int32)
        if (inputs.targets is None) != (inputs.scored is None):
            raise ValueError("give targets and scored together")
        if inputs.targets is not None:
            rows["targets"] = checked("targets", inputs.targets, np.int32)
            rows["scored"] = checked("scored", inputs.scored, bool)
        picked = inputs.edit_ids is not None
        edit = self.check_intervention(neuron_mask, intervention, None if picked else b)
        if picked:
            if edit is None:
                raise ValueError("edit_ids pick among the edits of an intervention: give one over [K, M, F]")
            rows["edit_ids"] = checked("edit_ids", inputs.edit_ids, np.int32, (b,))
            ids_range = np.asarray(rows["edit_ids"])
            if ids_range.min() < 0 or ids_range.max() >= edit.mask.shape[0]:
                raise ValueError(f"edit_ids must be in [0, {edit.mask.shape[0]}), the edits given")
        per_row = edit is not None and not picked and edit.mask.ndim == 3
        total = self.rows_per_batch(b)
        placed = Inputs(**{k: self.place(_fill(v, total)) for k, v in rows.items()},
                        num_segments=inputs.num_segments)
        if edit is not None:
            edit = self.place(jax.tree.map(lambda a: _fill(a, total), edit) if per_row else edit, batched=per_row)
        return placed, edit, b

    def check_intervention(self, neuron_mask: Any = None, intervention: common.Intervention | None = None,
                           rows: int | None = None) -> common.Intervention | None:
        """`common.as_intervention(neuron_mask, intervention)` with its shapes checked: [M, F] or
        [rows, M, F] (one edit per row); with rows=None, [K, M, F] (K edits that rows pick with
        `Inputs.edit_ids`). None when neither is given. Not placed (`place` does that)."""
        edit = common.as_intervention(neuron_mask, intervention)
        if edit is None:
            return None
        layers = (self.num_layers, self.num_neurons)
        name = "neuron_mask" if intervention is None else "intervention mask"
        if rows is None and (edit.mask.ndim != 3 or edit.mask.shape[1:] != layers):
            raise ValueError(f"{name} has shape {edit.mask.shape}; expected (K, {layers[0]}, {layers[1]}) "
                             "(K, M, F): K edits picked by edit_ids")
        if rows is not None and edit.mask.shape not in (layers, (rows,) + layers):
            raise ValueError(f"{name} has shape {edit.mask.shape}; expected {layers} (M, F) or "
                             f"{(rows,) + layers} (B, M, F)")
        if edit.values is not None and edit.values.shape != edit.mask.shape:
            raise ValueError(f"intervention values have shape {edit.values.shape}; expected the mask's "
                             f"{edit.mask.shape}")
        return edit

    def place(self, x: Any, batched: bool = True) -> Any:
        """`x` (an array or a pytree of arrays, such as an Intervention) on the model's devices: on a
        mesh split over "data" along its leading [B] axis (batched; B must divide over the data axis:
        `forward` rounds batches up first) or replicated; without a mesh, on the model's device."""
        if x is None:
            return None
        if self.mesh is None:
            return jax.device_put(x, jax.local_devices()[0])
        if not batched:
            return jax.device_put(x, NamedSharding(self.mesh, PartitionSpec()))
        data = self.mesh.shape["data"]
        for leaf in jax.tree.leaves(x):
            if leaf.shape[0] % data:
                raise ValueError(f"a batch of {leaf.shape[0]} rows does not divide over the mesh's data axis "
                                 f"({data}): `LM.forward` rounds batches up; place whole batches only")
        return jax.device_put(x, sharding.batch_sharding(self.mesh))

    # --- the public forwards ---------------------------------------------------------------------

    def __call__(self, input_ids, attention_mask=None, neuron_mask=None, capture: common.Capture = "none",
                 intervention: common.Intervention | None = None) -> LMOutput:
        logits, neurons = self.forward(Inputs(input_ids, attention_mask), capture, "logits", neuron_mask,
                                       intervention)
        return LMOutput(logits=logits, neurons=neurons)

    def active_counts(self, input_ids, attention_mask=None) -> jax.Array:
        """float32 [B, M, F]: per sequence, the number of real tokens where each neuron's activation
        function output is > 0 (BLOOM: the GELU output; LLaMA: SiLU(gate)); LAPE's statistic."""
        return self.forward(Inputs(input_ids, attention_mask), "active", "none")[1]

    def pooled(self, input_ids, attention_mask=None, neuron_mask=None,
               intervention: common.Intervention | None = None) -> jax.Array:
        """float32 [B, M, F]: each layer's neurons (after any edit) averaged over each sequence's real
        tokens."""
        return self.forward(Inputs(input_ids, attention_mask), "pooled", "none", neuron_mask, intervention)[1]


def build_module(config: Any, dtype: str | Any = "float32", attention: common.Implementation = "auto"
                 ) -> tuple[common.CausalLM, Family]:
    """The Flax module (and its Family) for an HF config; `attention`: the attention implementation
    (`common.choose_implementation`)."""
    family = family_of(config)
    module = family.module_cls(family.spec(config), dtype=checkpoints.resolve_dtype(dtype), attention=attention)
    return module, family


def param_shapes(module: common.CausalLM) -> Any:
    """The params pytree of `module` as ShapeDtypeStructs (nothing allocated)."""
    return nn.meta.unbox(common.logical_param_shapes(module))


def load_pretrained(path: str | os.PathLike | checkpoints.ModelSource, dtype: str | Any = "float32",
                    mesh: Mesh | None = None, fsdp: bool = False, revision: str = "",
                    attention: common.Implementation = "auto") -> LM:
    """Load a checkpoint: a Hugging Face directory (config.json + safetensors or pytorch_model.bin), an
    orbax directory (config.json + params/, as `save_pretrained(..., format="orbax")` writes it), a hub
    id "org/name[@revision]" (fetched into the Hugging Face cache, `revision` as "@revision"; see
    `checkpoints.resolve_model`), or "demo", the shipped demo model.

    `dtype` is "float32" or "bfloat16" (parameters and matmuls; reductions stay float32). With a
    ("data", "model") `mesh` (see `sharding.make_mesh`) the parameters are split by the partition
    rules of `lingua_jax.sharding` (`fsdp` also splits them over "data"), each device's shard read
    straight from the checkpoint, and every forward runs with the batch split over "data". Without a
    mesh the model lives on this process's first local device (with several processes, each holds its
    own copy and computes on its own). `attention` chooses the attention implementation: "auto" (cuDNN
    flash attention on a CUDA GPU where it supports the model, else "blocked"), "blocked", "xla" or
    "cudnn" (see `lingua_jax.models.common.choose_implementation`).
    """
    found = path if isinstance(path, checkpoints.ModelSource) else checkpoints.resolve_model(path, revision)
    config = checkpoints.load_config(found.path)
    module, family = build_module(config, dtype, attention)
    shapes = param_shapes(module)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: device, shapes)
    else:
        shardings = sharding.param_shardings(module, mesh, fsdp)
    if checkpoints.is_orbax(found.path):
        params = checkpoints.load_orbax(found.path, shapes, module.dtype, shardings)
    else:
        params = checkpoints.load_params(found.path, family, shapes, module.dtype, shardings)
    source = {**found.describe(), "dtype": jnp.dtype(module.dtype).name}
    return LM(module, params, config, family, source, mesh)


def random_init(config: Any, dtype: str | Any = "float32", seed: int = 0, mesh: Mesh | None = None,
                attention: common.Implementation = "auto") -> LM:
    """An LM with the architecture of HF `config` and random weights (Flax's initialisers, `seed`),
    made on the devices: sharded by the partition rules when a `mesh` is given."""
    module, family = build_module(config, dtype, attention)
    out = None if mesh is None else sharding.param_shardings(module, mesh)
    params = jax.jit(lambda key: common.init_params(module, key), out_shardings=out)(jax.random.key(seed))
    return LM(module, params, config, family, {"path": None, "dtype": jnp.dtype(module.dtype).name,
                                               "random_init_seed": seed}, mesh)


def save_pretrained(lm: LM, path: str | os.PathLike, tokenizer: Any = None, format: str = "safetensors") -> Path:
    """Export `lm` to a checkpoint directory that `load_pretrained` reads: config.json plus either
    model.safetensors (format="safetensors": the Hugging Face format, loadable by `transformers`) or an
    orbax checkpoint of the parameters with their sharding (format="orbax"); the tokenizer's files
    too when given. With several processes every process must call it (the parameters are gathered,
    or saved by orbax, collectively) and only process 0 writes files."""
    if format not in ("safetensors", "orbax"):
        raise ValueError(f"format must be 'safetensors' or 'orbax', got {format!r}")
    path = Path(path).expanduser()
    writer = jax.process_index() == 0
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"cannot save a checkpoint into {str(path)!r}: it is a file")
    if writer:
        path.mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(lm.config)
        config.dtype = jnp.dtype(lm.dtype).name
        config.save_pretrained(path)
        if tokenizer is not None:
            tokenizer.save_pretrained(path)
    if format == "orbax":
        checkpoints.save_orbax(lm.params, path)  # collective: orbax coordinates the processes' writes
    else:
        checkpoints.save_params(lm.params, family_of(lm.config), path)
    sharding.barrier(f"checkpoint saved to {path}")
    return path
