"""Content fingerprints of the artefacts a result depends on: checkpoint files and texts.

A checkpoint directory's fingerprint covers the name, size and sha256 of each of its files that
loading reads (config.json, tokenizer files, weights and their indexes, an orbax params/ tree), plus
the JSON header of every safetensors file. Hashing 140 GB takes minutes, so each file's sha256 is
cached (in ~/.cache/lingua_jax/file_hashes.json, or under $XDG_CACHE_HOME) by its absolute path, size
and modification time in nanoseconds: replacing or editing a file changes at least one of them.
Blind spot: a file rewritten in place with the same size and its old mtime restored (`touch -d`,
`cp -p` or `rsync -t` of other bytes of the same length) keeps its cached hash; the safetensors
headers (dtypes, shapes, offsets) are read afresh every time, so only equal-shaped weights can pass
unnoticed that way. A hub snapshot is named by its commit instead (the Hub's content address).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from pathlib import Path

from absl import logging

from lingua_jax.checkpoints import CONFIG_FILES, ORBAX_PARAMS, TOKENIZER_FILES

_MEMORY: dict[tuple[str, int, int], str] = {}


def cache_file() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lingua_jax" / "file_hashes.json"


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, cached by (absolute path, size, mtime_ns) across runs."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _MEMORY:
        return _MEMORY[key]
    store = cache_file()
    try:
        cached = json.loads(store.read_text()) if store.is_file() else {}
    except (OSError, json.JSONDecodeError):
        cached = {}
    entry = "|".join(map(str, key))
    if entry not in cached:
        if stat.st_size > 1 << 30:
            logging.info("hashing %s (%.1f GB), once: the hash is cached", path, stat.st_size / 2**30)
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        cached[entry] = digest.hexdigest()
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            temporary = store.with_name(f".{store.name}.{os.getpid()}")
            temporary.write_text(json.dumps(cached))
            os.replace(temporary, store)
        except OSError as e:  # a read-only home: hash again next time
            logging.warning("cannot cache file hashes in %s: %s", store, e)
    _MEMORY[key] = cached[entry]
    return cached[entry]


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory: *.safetensors, *.bin and their indexes, or an orbax
    checkpoint's params/ tree (less _CHECKPOINT_METADATA, which holds the time of saving)."""
    files = sorted(p for p in directory.iterdir()
                   if p.is_file() and (p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")))
    params = directory / ORBAX_PARAMS
    if params.is_dir():
        files += sorted(p for p in params.rglob("*") if p.is_file() and p.name != "_CHECKPOINT_METADATA")
    return files


def safetensors_header(path: Path) -> bytes:
    """The JSON header of a safetensors file (dtypes, shapes and offsets of its tensors)."""
    with open(path, "rb") as f:
        size = f.read(8)
        return f.read(struct.unpack("<Q", size)[0]) if len(size) == 8 else b""


def files_fingerprint(directory: Path, files: Iterable[Path]) -> str:
    """sha256 over each file's path relative to `directory`, size and content hash, and the header of
    every safetensors file."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(directory)}\0{path.stat().st_size}\0{file_sha256(path)}\0".encode())
        if path.suffix == ".safetensors":
            digest.update(safetensors_header(path))
    return digest.hexdigest()


def checkpoint(directory: str | os.PathLike) -> str:
    """The fingerprint of everything loading reads from a checkpoint directory: config.json, the
    tokenizer files and the weight files."""
    directory = Path(directory)
    extra = [directory / name for name in CONFIG_FILES + TOKENIZER_FILES if (directory / name).is_file()]
    return files_fingerprint(directory, sorted(extra) + weight_files(directory))


def texts(*parts: object) -> str:
    """sha256 of texts (or anything JSON-serialisable: dicts of lists of strings, ...)."""
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str).encode()).hexdigest()
