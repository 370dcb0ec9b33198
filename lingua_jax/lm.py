"""`LM`: a loaded model (Flax module, params, HF config) with jit-compiled forwards, and
`load_pretrained`, which builds one from a checkpoint directory or a hub id.

Shapes: B batch, T tokens, V vocabulary, M layers, F neurons per layer.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lingua_jax import checkpoints, sharding
from lingua_jax.models import Family, common, family_of


@flax.struct.dataclass
class LMOutput:
    """logits [B, T, V] (None when not computed); neurons [B, M, T, F] ("full"), [B, M, F] float32
    ("pooled", mean over each sequence's real tokens) or None."""

    logits: jax.Array | None
    neurons: jax.Array | None


class LM:
    """A causal LM with every MLP neuron exposed.

    `lm(input_ids, attention_mask, neuron_mask=None, capture="none", intervention=None)` -> LMOutput;
    `lm.pooled(...)` -> [B, M, F] float32 without computing logits. `intervention` (`Intervention`) sets,
    adds to, scales or zeroes chosen neurons; `neuron_mask` is its zeroing shorthand, True/1 where a
    neuron is zeroed. Either covers [M, F] for the whole batch or [B, M, F] per example. `attention_mask`
    is 1 on real tokens; left or right padding gives each sequence the results it has alone. One compile
    per input shape and mode.
    """

    def __init__(self, module: common.CausalLM, params: Any, config: Any, family: Family,
                 source: dict[str, Any] | None = None, mesh: Mesh | None = None):
        self.module = module
        self.mesh = mesh
        self.source = source or {}  # what the weights are (path, dtype): reports and caches name it
        self.params = params
        self.config = config
        self.family = family.name
        self._forward = jax.jit(self._apply, static_argnames=("capture", "output"))

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
        """`batch_size` rounded up to a multiple of the data axis. Batched stages build batches of this
        many rows and fill the extra ones with padding whose results they drop, so any batch size works
        on any mesh."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return -(-batch_size // self.data_parallelism) * self.data_parallelism

    def _apply(self, params, input_ids, attention_mask, intervention, capture, output):
        out, state = self.module.clone(capture=capture).apply(
            {"params": params}, input_ids, attention_mask, intervention, output=output, mutable=["intermediates"])
        return out, common.collect_neurons(state.get("intermediates", {}), capture)

    def check_inputs(self, input_ids, attention_mask=None, neuron_mask=None, intervention=None):
        """Validated, placed jnp inputs: int ids [B, T], int32 mask [B, T] (ones if None), and the
        Intervention (`neuron_mask` as its "zero" shorthand; None when neither is given)."""
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(f"input_ids must be an integer array [B, T], got {input_ids.dtype}{input_ids.shape}")
        attention_mask = (jnp.ones_like(input_ids) if attention_mask is None
                          else jnp.asarray(attention_mask).astype(jnp.int32))
        if attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask has shape {attention_mask.shape}, input_ids {input_ids.shape}")
        edit = self.check_intervention(neuron_mask, intervention, batch=input_ids.shape[0])
        return self.place(input_ids), self.place(attention_mask), edit

    def check_intervention(self, neuron_mask=None, intervention=None, batch: int | None = None,
                           leading: str = "B", split: bool = True) -> common.Intervention | None:
        """`common.as_intervention(neuron_mask, intervention)` with its shapes checked, [M, F] or
        [batch, M, F] (`leading` names that axis in errors), placed: a leading axis is split over "data"
        when `split` (one edit per example), else replicated."""
        edit = common.as_intervention(neuron_mask, intervention)
        if edit is None:
            return None
        layers = (self.num_layers, self.num_neurons)
        name = "neuron_mask" if intervention is None else "intervention mask"
        if edit.mask.shape not in (layers, (batch,) + layers):
            raise ValueError(f"{name} has shape {edit.mask.shape}; expected {layers} (M, F) or "
                             f"{(batch,) + layers} ({leading}, M, F)")
        if edit.values is not None and edit.values.shape != edit.mask.shape:
            raise ValueError(f"intervention values have shape {edit.values.shape}; expected the mask's "
                             f"{edit.mask.shape}")
        return jax.tree.map(lambda a: self.place(a, batched=split and edit.mask.ndim == 3), edit)

    def place(self, x: jax.Array | None, batched: bool = True) -> jax.Array | None:
        """On a mesh: `x` [B, ...] split over "data" (batched) or replicated; otherwise unchanged."""
        if self.mesh is None or x is None:
            return x
        if not batched:
            return jax.device_put(x, NamedSharding(self.mesh, PartitionSpec()))
        if x.shape[0] % self.mesh.shape["data"]:
            raise ValueError(f"a batch of {x.shape[0]} rows does not divide over the mesh's data axis "
                             f"({self.mesh.shape['data']}): use a batch size that is a multiple of it")
        return jax.device_put(x, sharding.batch_sharding(self.mesh))

    def __call__(self, input_ids, attention_mask=None, neuron_mask=None, capture: common.Capture = "none",
                 intervention: common.Intervention | None = None) -> LMOutput:
        if capture not in common.CAPTURE_MODES:
            raise ValueError(f"capture must be one of {common.CAPTURE_MODES}, got {capture!r}")
        logits, neurons = self._forward(
            self.params, *self.check_inputs(input_ids, attention_mask, neuron_mask, intervention),
            capture=capture, output="logits")
        return LMOutput(logits=logits, neurons=neurons)

    def active_counts(self, input_ids, attention_mask=None) -> jax.Array:
        """float32 [B, M, F]: per sequence, the number of real tokens where each neuron's activation
        function output is > 0 (BLOOM: the GELU output; LLaMA: SiLU(gate)); LAPE's statistic."""
        _, counts = self._forward(self.params, *self.check_inputs(input_ids, attention_mask),
                                  capture="active", output="none")
        return counts

    def pooled(self, input_ids, attention_mask=None, neuron_mask=None,
               intervention: common.Intervention | None = None) -> jax.Array:
        """float32 [B, M, F]: each layer's neurons (after any edit) averaged over each sequence's real
        tokens."""
        _, neurons = self._forward(
            self.params, *self.check_inputs(input_ids, attention_mask, neuron_mask, intervention),
            capture="pooled", output="none")
        return neurons


def build_module(config: Any, dtype: str | Any = "float32") -> tuple[common.CausalLM, Family]:
    """The Flax module (and its Family) for an HF config."""
    family = family_of(config)
    return family.module_cls(family.spec(config), dtype=checkpoints.resolve_dtype(dtype)), family


def param_shapes(module: common.CausalLM) -> Any:
    """The params pytree of `module` as ShapeDtypeStructs (nothing allocated)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(module.init, jax.random.key(0), ids, jnp.ones_like(ids))["params"]


def load_pretrained(path: str | os.PathLike | checkpoints.ModelSource, dtype: str | Any = "float32",
                    mesh: Mesh | None = None, fsdp: bool = False, revision: str = "") -> LM:
    """Load a checkpoint: a Hugging Face directory (config.json + safetensors or pytorch_model.bin), an
    orbax directory (config.json + params/, as `save_pretrained(..., format="orbax")` writes it), a hub
    id "org/name[@revision]" (fetched into the Hugging Face cache, `revision` as "@revision"; see
    `checkpoints.resolve_model`), or "demo", the shipped demo model.

    `dtype` is "float32" or "bfloat16" (parameters and matmuls; reductions stay float32). With a
    ("data", "model") `mesh` (see `sharding.make_mesh`) the parameters are split by the partition
    rules of `lingua_jax.sharding` (`fsdp` also splits them over "data"), each device's shard read
    straight from the checkpoint, and every forward runs with the batch split over "data". Without a
    mesh the model lives on this process's first local device (with several processes, each holds its
    own copy and computes on its own).
    """
    found = path if isinstance(path, checkpoints.ModelSource) else checkpoints.resolve_model(path, revision)
    config = checkpoints.load_config(found.path)
    module, family = build_module(config, dtype)
    shapes = param_shapes(module)
    if mesh is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: device, shapes)
    else:
        shardings = sharding.param_shardings(shapes, module.spec, mesh, fsdp)
    if checkpoints.is_orbax(found.path):
        params = checkpoints.load_orbax(found.path, shapes, module.dtype, shardings)
    else:
        params = checkpoints.load_params(found.path, family, shapes, module.dtype, shardings)
    source = {**found.describe(), "dtype": jnp.dtype(module.dtype).name}
    return LM(module, params, config, family, source, mesh)


def random_init(config: Any, dtype: str | Any = "float32", seed: int = 0, mesh: Mesh | None = None) -> LM:
    """An LM with the architecture of HF `config` and random weights (Flax's initialisers, `seed`),
    made on the devices: sharded by the partition rules when a `mesh` is given."""
    module, family = build_module(config, dtype)
    out = None if mesh is None else sharding.param_shardings(param_shapes(module), module.spec, mesh)
    ids = jnp.zeros((1, 1), jnp.int32)
    params = jax.jit(lambda key: module.init(key, ids, jnp.ones_like(ids))["params"], out_shardings=out)(
        jax.random.key(seed))
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
