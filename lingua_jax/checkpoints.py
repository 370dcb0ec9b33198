"""Hugging Face checkpoints: read config.json and weights, map them onto the Flax parameter tree.

The Flax modules name their parameters as the HF checkpoint does, so the mapping is a rule, not a
table: a Flax path (transformer, h, self_attention, query_key_value, kernel) with the layer stack `h`
scanned to a leading [M] axis is HF's `transformer.h.<i>.self_attention.query_key_value.weight`,
transposed (Dense kernels are [in, out], torch Linear weights [out, in]). Tensors are read one at a
time (safetensors and torch's mmap), so host memory peaks near one copy of the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from transformers import AutoConfig

from lingua_jax.models import Family, family_of

# Flax leaf name -> (HF leaf name, transpose?)
LEAF_NAMES = {"kernel": ("weight", True), "scale": ("weight", False), "embedding": ("weight", False),
              "weight": ("weight", False), "bias": ("bias", False)}
# HF tensors that carry no parameters (buffers some checkpoints store).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "attention.masked_bias", "attention.bias")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def load_config(path: str | os.PathLike) -> Any:
    """The HF config of a local checkpoint directory (never remote code)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} has no config.json: not a Hugging Face checkpoint directory")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type not in ("bloom", "llama"):
        raise ValueError(f"unsupported model_type {model_type!r} in {path / 'config.json'}: "
                         "lingua_jax supports ['bloom', 'llama']")
    return AutoConfig.from_pretrained(path, trust_remote_code=False)


def resolve_dtype(dtype: str | Any) -> Any:
    """'float32' | 'bfloat16' (or the jnp dtype) -> the jnp dtype."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(DTYPES)}")
        return DTYPES[dtype]
    return dtype


class TensorReader:
    """Name -> numpy tensor over one checkpoint: model.safetensors, sharded safetensors with their
    index, or pytorch_model.bin (single or sharded, torch needed). Tensors are read lazily, one by one.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._files: dict[str, Path] = {}  # tensor name -> file
        self._open: dict[Path, Any] = {}
        for weights, index in (("model.safetensors", "model.safetensors.index.json"),
                               ("pytorch_model.bin", "pytorch_model.bin.index.json")):
            if (self.path / index).is_file():
                weight_map = json.loads((self.path / index).read_text())["weight_map"]
                self._files = {name: self.path / f for name, f in weight_map.items()}
                break
            if (self.path / weights).is_file():
                self._files = {name: self.path / weights for name in self._names_in(self.path / weights)}
                break
        else:
            raise FileNotFoundError(
                f"{str(self.path)!r} has no weights: expected model.safetensors, "
                "model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json")
        for f in sorted(set(self._files.values())):
            if not f.is_file():
                raise FileNotFoundError(f"weight file {str(f)!r} listed in the index is missing")

    def names(self) -> list[str]:
        return sorted(self._files)

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def get(self, name: str) -> np.ndarray:
        handle = self._handle(self._files[name])
        if isinstance(handle, dict):  # torch state dict (mmapped)
            return _torch_to_numpy(handle[name])
        return handle.get_tensor(name)

    def _names_in(self, file: Path) -> list[str]:
        handle = self._handle(file)
        return list(handle.keys())

    def _handle(self, file: Path) -> Any:
        if file not in self._open:
            if file.suffix == ".safetensors":
                from safetensors import safe_open
                self._open[file] = safe_open(str(file), framework="numpy")
            else:
                self._open[file] = _torch_load(file)
        return self._open[file]


def _torch_load(file: Path) -> dict[str, Any]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{str(file)!r} is a PyTorch pickle checkpoint: reading it needs torch "
                          "(pip install torch==2.13.0), or convert it to safetensors") from e
    return torch.load(file, map_location="cpu", weights_only=True, mmap=True)


def _torch_to_numpy(tensor: Any) -> np.ndarray:
    import torch
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(jnp.bfloat16)
    return tensor.numpy()


def hf_name(family: Family, path: tuple[str, ...], layer: int | None) -> tuple[str, bool]:
    """Flax param path (+ layer index for stacked leaves) -> (HF tensor name, transpose?)."""
    *modules, leaf = path
    hf_leaf, transpose = LEAF_NAMES[leaf]
    parts = []
    for m in modules:
        parts.append(m)
        if m == family.stack:
            parts.append(str(layer))
    return ".".join(parts + [hf_leaf]), transpose


def _flax_paths(tree: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
    for keypath, leaf in jax.tree_util.tree_leaves_with_path(tree):
        yield tuple(k.key for k in keypath), leaf


def load_params(path: str | os.PathLike, family: Family, shapes: Any, dtype: Any,
                place: Callable[[tuple[str, ...], np.ndarray], jax.Array] = lambda p, x: jnp.asarray(x)) -> Any:
    """Read an HF checkpoint into a params pytree shaped like `shapes` (a tree of ShapeDtypeStruct).

    Each leaf is assembled on the host (stacked leaves layer by layer), handed to `place(path, array)`
    (device_put, sharding) and dropped before the next, so the host holds one leaf at a time.
    """
    reader = TensorReader(path)
    prefix = family.base_prefix + "."
    has_prefix = any(n.startswith(prefix) for n in reader.names())
    used: set[str] = set()

    def read(name: str, transpose: bool, expected: tuple[int, ...]) -> np.ndarray:
        stored = name if has_prefix or not name.startswith(prefix) else name[len(prefix):]
        if stored not in reader:
            raise KeyError(f"checkpoint {str(path)!r} has no tensor {stored!r}")
        used.add(stored)
        tensor = reader.get(stored)
        tensor = tensor.T if transpose else tensor
        if tensor.shape != expected:
            raise ValueError(f"tensor {stored!r} has shape {tuple(tensor.shape)} but the config implies "
                             f"{expected}{' (after transposing)' if transpose else ''}")
        return tensor

    leaves = []
    for fpath, shape in _flax_paths(shapes):
        host = np.empty(shape.shape, dtype=dtype)
        if family.stack in fpath:
            for layer in range(shape.shape[0]):
                host[layer] = read(*hf_name(family, fpath, layer), shape.shape[1:])
        else:
            host[...] = read(*hf_name(family, fpath, None), shape.shape)
        leaves.append(place(fpath, host))
        del host
    unused = [n for n in reader.names() if n not in used and not n.endswith(IGNORED_SUFFIXES)
              and n != "lm_head.weight"]  # a tied head may be stored too
    if unused:
        logging.warning("checkpoint %s: %d tensors not used: %s", path, len(unused), unused[:8])
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), leaves)

