"""Meshes and partition rules: batch on "data", Megatron-style tensor parallelism on "model".

Every parameter carries logical axis names, declared where the module creates it
(`nn.with_logical_partitioning`, see `lingua_jax.models.common`): "vocab", "embed", "heads", "kv_heads",
"mlp", "head_dim" and, for the scanned layer stack, "layers". `logical_rules` maps them to mesh axes
(the MaxText way): the vocabulary, query heads, key/value heads and neurons on "model" (so
query_key_value, q/k/v_proj, dense_h_to_4h, gate/up_proj and the LM head are column-split, the
attention output and dense_4h_to_h/down_proj row-split, the embedding vocabulary-split), the rest
replicated; with `fsdp=True` "embed" also goes on "data". A new family declares its parameters' axes and
needs nothing here. BLOOM's fused query_key_value is head-major ([H, 3, hd] along its output), so an even
column split gives each device whole heads.

Fallbacks (logged): key/value heads that do not divide the model axis, a vocabulary that does not, and
under FSDP a hidden size that does not divide the data axis are replicated. Query heads and neurons must
divide the model axis (a clear error).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lingua_jax.models import common

AXES = ("data", "model")


def make_mesh(shape: tuple[int, int] = (-1, 1), devices: list[Any] | None = None) -> Mesh:
    """A ("data", "model") mesh over `devices` (default: all); -1 takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    data, model = shape
    if data == -1:
        data = len(devices) // model
    if model == -1:
        model = len(devices) // data
    if data * model != len(devices):
        raise ValueError(f"mesh shape {shape} does not fit {len(devices)} devices")
    return Mesh(np.asarray(devices).reshape(data, model), AXES)


def default_mesh(shape: tuple[int, ...] = ()) -> Mesh | None:
    """The mesh of a config's `model.mesh`: `shape` (data, model) when given. With none: no mesh (one
    device) in a single process, and with several processes a data-parallel mesh (-1, 1) over all their
    devices, since one device cannot span processes and each process computing everything alone
    would repeat all the work."""
    if shape:
        return make_mesh(tuple(shape))
    return make_mesh((-1, 1)) if jax.process_count() > 1 else None


def check_divisible(spec: Any, mesh: Mesh) -> None:
    """Clear errors for a model that cannot be split over the mesh's model axis."""
    model = mesh.shape["model"]
    if spec.num_heads % model:
        raise ValueError(f"num_heads={spec.num_heads} is not divisible by the mesh's model axis ({model}): "
                         "use a model axis that divides the head count")
    if spec.num_neurons % model:
        raise ValueError(f"{spec.num_neurons} neurons per layer are not divisible by the model axis ({model})")


def logical_rules(spec: Any, mesh: Mesh, fsdp: bool = False) -> tuple[tuple[str, str | None], ...]:
    """(logical axis, mesh axis or None) for the parameters of a model of `spec` on `mesh`: vocabulary,
    query heads, key/value heads and neurons on "model" (kv heads and the vocabulary replicated, with a
    warning, when they do not divide it), the hidden size on "data" with `fsdp` (replicated, with a
    warning, when it does not divide it), the rest (head_dim, the stacked layers) replicated."""
    check_divisible(spec, mesh)
    model, data = mesh.shape["model"], mesh.shape["data"]

    def split(axis: str, count: int, mesh_axis: str, size: int, what: str) -> tuple[str, str | None]:
        if count % size:
            logging.warning("%s %d do not divide the mesh's %s axis (%d): replicated", what, count, mesh_axis, size)
            return axis, None
        return axis, mesh_axis

    embed = split(common.EMBED, spec.hidden_size, "data", data, "the hidden size") if fsdp and data > 1 else (
        common.EMBED, None)
    return (split(common.VOCAB, spec.vocab_size, "model", model, "the vocabulary"), (common.HEADS, "model"),
            split(common.KV_HEADS, getattr(spec, "num_kv_heads", spec.num_heads), "model", model,
                  "the key/value heads"),
            (common.MLP, "model"), embed, (common.HEAD_DIM, None), (common.LAYERS, None))


def param_shardings(module: Any, mesh: Mesh, fsdp: bool = False) -> Any:
    """NamedShardings for the params of a CausalLM `module`, from the logical axes its parameters declare
    (`logical_rules`); a parameter without them is an error naming it."""
    shapes = common.logical_param_shapes(module)
    rules = logical_rules(module.spec, mesh, fsdp)

    def named(path: Any, box: Any) -> NamedSharding:
        if not isinstance(box, nn.LogicallyPartitioned):
            raise TypeError(f"parameter {jax.tree_util.keystr(path)} declares no logical axes: create it "
                            "with lingua_jax.models.common.dense, embedding or logical")
        return NamedSharding(mesh, nn.logical_to_mesh_axes(box.names, rules))

    return jax.tree_util.tree_map_with_path(named, shapes, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Inputs [B, ...] split over "data"."""
    return NamedSharding(mesh, P("data"))


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None, cpu_collectives: str | None = None) -> None:
    """`jax.distributed.initialize` for multi-host runs (arguments None: the TPU/Slurm environment's
    defaults). On CPU hosts `cpu_collectives="gloo"` lets processes exchange data."""
    if cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def to_host(x: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-host) array as numpy on every process."""
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(x)
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
