"""Meshes and partition rules: batch on "data", Megatron-style tensor parallelism on "model".

Column-split (output features on "model"): query_key_value, q/k/v_proj, dense_h_to_4h, gate/up_proj,
the LM head (vocabulary). Row-split (input features on "model"): the attention output (dense, o_proj),
dense_4h_to_h, down_proj. The embedding is split over the vocabulary. Norms are replicated. BLOOM's
fused query_key_value is head-major ([H, 3, hd] along its output), so an even column split gives each
device whole heads. With `fsdp=True` every parameter is also split over "data" along its first free
dimension that divides evenly. Stacked layer parameters keep their leading [M] axis whole.

Fallbacks (logged): key/value projections whose head count does not divide the model axis, and an
embedding/LM head whose vocabulary does not, are replicated. Query heads and neurons must divide it.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from lingua_jax.models import FAMILIES

AXES = ("data", "model")
COLUMN = {"query_key_value", "q_proj", "k_proj", "v_proj", "dense_h_to_4h", "gate_proj", "up_proj", "lm_head"}
ROW = {"dense", "o_proj", "dense_4h_to_h", "down_proj"}
EMBEDDINGS = {"word_embeddings", "embed_tokens"}
KV = {"k_proj", "v_proj"}


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


def partition_spec(path: tuple[str, ...], shape: tuple[int, ...], spec: Any, mesh: Mesh, fsdp: bool) -> P:
    """The PartitionSpec of one parameter, from its Flax path and shape."""
    model = mesh.shape["model"]
    module, leaf = path[-2], path[-1]
    axes: list[str | None] = [None] * len(shape)
    kv_heads = getattr(spec, "num_kv_heads", spec.num_heads)
    if module in KV and kv_heads % model:
        logging.warning("%d key/value heads do not divide the model axis (%d): %s replicated",
                        kv_heads, model, "/".join(path))
    elif module in COLUMN and leaf in ("kernel", "bias"):
        axes[-1] = "model"
    elif module in ROW and leaf == "kernel":
        axes[-2] = "model"
    elif module in EMBEDDINGS and leaf == "embedding":
        axes[0] = "model"
    if module in EMBEDDINGS | {"lm_head"} and spec.vocab_size % model:
        logging.warning("vocabulary %d does not divide the model axis (%d): %s replicated",
                        spec.vocab_size, model, "/".join(path))
        axes = [None] * len(shape)
    if fsdp:
        data = mesh.shape["data"]
        stacked = any(f.stack in path for f in FAMILIES.values())
        free = [d for d in range(int(stacked), len(shape)) if axes[d] is None and shape[d] % data == 0]
        if free and data > 1:
            axes[free[0]] = "data"
    return P(*axes)


def param_shardings(shapes: Any, spec: Any, mesh: Mesh, fsdp: bool = False) -> Any:
    """NamedShardings for a params pytree (or its ShapeDtypeStructs)."""
    check_divisible(spec, mesh)
    return jax.tree_util.tree_map_with_path(
        lambda kp, x: NamedSharding(mesh, partition_spec(tuple(k.key for k in kp), x.shape, spec, mesh, fsdp)),
        shapes)


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
