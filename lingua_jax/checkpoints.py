"""Checkpoints: where a model's files are (a local directory, the shipped demo or a hub id, resolved by
`resolve_model`), its config.json and weights, mapped onto the Flax parameter tree; orbax too.

The Flax modules name their parameters as the HF checkpoint does, so the mapping is a rule, not a
table: a Flax path (transformer, h, self_attention, query_key_value, kernel) with the layer stack `h`
scanned to a leading [M] axis is HF's `transformer.h.<i>.self_attention.query_key_value.weight`,
transposed (Dense kernels are [in, out], torch Linear weights [out, in]). Tensors are read one at a
time and by slice (safetensors and torch's mmap), so host memory peaks near one copy of the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from lingua_jax import hub
from lingua_jax.models import Family, family_named
from lingua_jax.sharding import to_host

# Flax leaf name -> (HF leaf name, transpose?)
LEAF_NAMES = {"kernel": ("weight", True), "scale": ("weight", False), "embedding": ("weight", False),
              "weight": ("weight", False), "bias": ("bias", False)}
# HF tensors that carry no parameters (buffers some checkpoints store).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq", "attention.masked_bias", "attention.bias")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DEMO_MODEL = Path(__file__).parent / "assets" / "demo"  # the model path "demo"
# What loading a hub model downloads: config and tokenizer files, then safetensors weights, or the
# PyTorch pickles where a revision has no safetensors (many of BLOOM's intermediate checkpoints).
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "tokenizer.model", "vocab.json", "merges.txt")
WEIGHT_FILES = (("model*.safetensors", "model.safetensors.index.json"),
                ("pytorch_model*.bin", "pytorch_model.bin.index.json"))


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model's files are: `path`, a local directory; for a hub model also its id, the revision
    asked for (a branch, tag or commit) and the commit it resolved to."""

    path: Path
    hub_id: str | None = None
    revision: str | None = None
    commit: str | None = None

    def describe(self) -> dict[str, str]:
        """{"path"} (+ "hub_id", "revision", "commit" for a hub model): what reports and caches name."""
        about = {"path": str(self.path)}
        if self.hub_id:
            about.update(hub_id=self.hub_id, revision=self.revision, commit=self.commit)
        return about


def resolve_model(spec: str | os.PathLike, revision: str = "", weights: bool = True) -> ModelSource:
    """Where the model `spec` is: "demo" (the shipped demo model), a local directory (`~` and relative
    paths allowed: relative to the working directory), or a hub id "org/name" / "org/name@revision",
    fetched with huggingface_hub into its cache (config, tokenizer and, with `weights`, the weight
    files: safetensors where the revision has them, else pytorch_model*.bin). `revision` is the same
    as "@revision"; giving two different ones is an error."""
    spec = str(spec)
    if spec == "demo":
        return ModelSource(DEMO_MODEL)
    local = Path(spec).expanduser()
    if local.is_dir() or not hub.is_hub_id(spec):
        if local.exists() and not local.is_dir():
            raise NotADirectoryError(f"model path {spec!r} is a file: give the checkpoint's directory")
        if not local.is_dir():
            raise FileNotFoundError(f"checkpoint directory {spec!r} does not exist (nor is it a hub id "
                                    "org/name[@revision])")
        if revision:
            raise ValueError(f"revision {revision!r} was given for the local directory {spec!r}: revisions "
                             "apply to hub ids only")
        return ModelSource(local.resolve())
    repo, pinned = hub.split_revision(spec)
    if pinned and revision and pinned != revision:
        raise ValueError(f"{spec!r} names revision {pinned!r} but model.revision is {revision!r}")
    revision = pinned or revision
    files = CONFIG_FILES + TOKENIZER_FILES
    found = hub.snapshot(repo, revision, files + WEIGHT_FILES[0] if weights else files)
    if weights and not any(found.path.glob("model*.safetensors*")):
        found = hub.snapshot(repo, found.commit, files + WEIGHT_FILES[1])
    return ModelSource(found.path, repo, revision or "main", found.commit)


def read_json(path: Path) -> Any:
    """A JSON file's content; a clear error naming the file when it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): the file is damaged or truncated") from e


def load_config(path: str | os.PathLike) -> Any:
    """The HF config of a local checkpoint directory, read by its family's config class (never remote
    code)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{str(path)!r} has no config.json: not a Hugging Face checkpoint directory")
    model_type = read_json(path / "config.json").get("model_type")
    return family_named(model_type, str(path / "config.json")).config_cls.from_pretrained(path)


def resolve_dtype(dtype: str | Any) -> Any:
    """'float32' | 'bfloat16' (or the jnp dtype) -> the jnp dtype."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(DTYPES)}")
        return DTYPES[dtype]
    return dtype


class TensorReader:
    """Tensors of one checkpoint by name, read lazily and by slice: model.safetensors, sharded
    safetensors with their index, or pytorch_model.bin (single or sharded, torch needed, mmapped)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._files: dict[str, Path] = {}  # tensor name -> file
        self._open: dict[Path, Any] = {}
        for weights, index in (("model.safetensors", "model.safetensors.index.json"),
                               ("pytorch_model.bin", "pytorch_model.bin.index.json")):
            if (self.path / index).is_file():
                weight_map = read_json(self.path / index).get("weight_map")
                if not isinstance(weight_map, dict):
                    raise ValueError(f"{self.path / index} has no 'weight_map' mapping tensor names to files")
                self._files = {name: self.path / f for name, f in weight_map.items()}
                break
            if (self.path / weights).is_file():
                self._files = {name: self.path / weights for name in _tensor_names(self.path / weights)}
                break
        else:
            raise FileNotFoundError(
                f"{str(self.path)!r} has no weights: expected model.safetensors, "
                "model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json")
        for f in sorted(set(self._files.values())):
            if not f.is_file():
                raise FileNotFoundError(f"weight file {str(f)!r} listed in the index is missing")
        self._torch = weights.endswith(".bin")

    def names(self) -> list[str]:
        return sorted(self._files)

    def __contains__(self, name: str) -> bool:
        return name in self._files

    def shape(self, name: str) -> tuple[int, ...]:
        return self._apply(name, lambda t: tuple(t.get_shape() if hasattr(t, "get_shape") else t.shape))

    def read(self, name: str, index: tuple[slice, ...]) -> np.ndarray:
        """tensor[index] as numpy; only that slice is read from disk."""
        return self._apply(name, lambda t: _torch_to_numpy(t[index]) if self._torch else t[index])

    def _apply(self, name: str, fn: Callable[[Any], Any]) -> Any:
        """fn(the tensor `name`, lazily: a safetensors slice or an mmapped torch tensor). Safetensors
        files are opened per read: their mapped pages leave the process again, so reading a whole
        checkpoint does not add a second copy of the model to its resident memory."""
        file = self._files[name]
        if self._torch:
            if file not in self._open:
                self._open[file] = _torch_load(file)
            return fn(self._open[file][name])
        with _safe_open(file) as f:
            return fn(f.get_slice(name))


def _tensor_names(file: Path) -> list[str]:
    if file.suffix == ".bin":
        return list(_torch_load(file))
    with _safe_open(file) as f:
        return list(f.keys())


def _safe_open(file: Path) -> Any:
    """safetensors' `safe_open` on `file`, with an error naming the file when it is not readable."""
    from safetensors import SafetensorError, safe_open
    try:
        return safe_open(str(file), framework="numpy")
    except SafetensorError as e:
        raise ValueError(f"{file} is not a readable safetensors file ({e}): it is damaged or truncated "
                         "(an interrupted download?); download it again") from e


def _torch_load(file: Path) -> dict[str, Any]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{str(file)!r} is a PyTorch pickle checkpoint: reading it needs torch "
                          "(pip install torch==2.13.0), or convert it to safetensors") from e
    try:
        return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{file} is not a readable PyTorch checkpoint ({e}): it is damaged or truncated "
                         "(an interrupted download?); download it again") from e


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


def load_params(path: str | os.PathLike, family: Family, shapes: Any, dtype: Any, shardings: Any) -> Any:
    """Read an HF checkpoint into a params pytree shaped like `shapes` (a tree of ShapeDtypeStruct),
    placed with `shardings` (a matching tree of jax Shardings).

    Every device's shard is read straight from the checkpoint (`jax.make_array_from_callback`), so a
    process reads only the slices its devices hold and never assembles a whole tensor it does not keep.
    """
    reader = TensorReader(path)
    prefix = family.base_prefix + "."
    has_prefix = any(n.startswith(prefix) for n in reader.names())
    used: set[str] = set()

    def stored(fpath: tuple[str, ...], layer: int | None, expected: tuple[int, ...]) -> tuple[str, bool]:
        name, transpose = hf_name(family, fpath, layer)
        name = name if has_prefix or not name.startswith(prefix) else name[len(prefix):]
        if name not in reader:
            raise KeyError(f"checkpoint {str(path)!r} has no tensor {name!r}")
        shape = reader.shape(name)
        if (shape[::-1] if transpose else shape) != expected:
            raise ValueError(f"tensor {name!r} has shape {shape} but the config implies "
                             f"{expected[::-1] if transpose else expected}")
        used.add(name)
        return name, transpose

    def leaf(fpath: tuple[str, ...], shape: jax.ShapeDtypeStruct, sharding: Any) -> jax.Array:
        stacked = family.stack in fpath
        per_layer = shape.shape[1:] if stacked else shape.shape
        names = ([stored(fpath, i, per_layer) for i in range(shape.shape[0])] if stacked
                 else [stored(fpath, None, per_layer)])

        def read(index: tuple[slice, ...]) -> np.ndarray:
            index = tuple(index) + (slice(None),) * (len(shape.shape) - len(index))
            layers = names[index[0]] if stacked else names
            inner = index[1:] if stacked else index
            parts = [(reader.read(n, inner[::-1]).T if t else reader.read(n, inner)).astype(dtype)
                     for n, t in layers]
            return np.stack(parts) if stacked else parts[0]

        return jax.make_array_from_callback(shape.shape, sharding, read, dtype=dtype)

    flat, tree = jax.tree_util.tree_flatten_with_path(shapes)
    leaves = [leaf(tuple(k.key for k in kp), s, sh)
              for (kp, s), sh in zip(flat, jax.tree_util.tree_leaves(shardings))]
    unused = [n for n in reader.names() if n not in used and not n.endswith(IGNORED_SUFFIXES)
              and n != "lm_head.weight"]  # a tied head may be stored too
    if unused:
        logging.warning("checkpoint %s: %d tensors not used: %s", path, len(unused), unused[:8])
    return jax.tree_util.tree_unflatten(tree, leaves)


def save_params(params: Any, family: Family, path: str | os.PathLike) -> Path:
    """Write a params pytree as HF's model.safetensors (the inverse of `load_params`). With several
    processes every one must call it: each tensor is gathered from all of them, and process 0 writes."""
    from safetensors.numpy import save_file

    tensors = {}
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        fpath = tuple(k.key for k in keypath)
        value = to_host(leaf)
        for layer, array in (enumerate(value) if family.stack in fpath else [(None, value)]):
            name, transpose = hf_name(family, fpath, layer)
            tensors[name] = np.ascontiguousarray(array.T if transpose else array)
    path = Path(path)
    if jax.process_index() == 0:
        path.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path / "model.safetensors"


ORBAX_PARAMS = "params"  # an orbax checkpoint directory is config.json + params/ (orbax StandardCheckpointer)


def is_orbax(path: str | os.PathLike) -> bool:
    return (Path(path) / ORBAX_PARAMS / "_CHECKPOINT_METADATA").is_file()


def save_orbax(params: Any, path: str | os.PathLike) -> Path:
    """Write a params pytree, with its sharding, as an orbax checkpoint in `path`/params."""
    import orbax.checkpoint as ocp

    target = Path(path).resolve() / ORBAX_PARAMS
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(target, params, force=True)
    checkpointer.wait_until_finished()
    return target


def load_orbax(path: str | os.PathLike, shapes: Any, dtype: Any, shardings: Any) -> Any:
    """Restore `path`/params onto `shardings` (any mesh shape, not only the one it was saved from)."""
    import orbax.checkpoint as ocp

    abstract = jax.tree_util.tree_map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, dtype, sharding=sh),
                                      shapes, shardings)
    return ocp.StandardCheckpointer().restore(Path(path).resolve() / ORBAX_PARAMS, abstract)
