"""What tokens per second and model-FLOPs utilisation (MFU) are made of: model FLOPs per architecture,
the peak they are compared with, timing, compile counting, and a grid of measured forwards.

Model FLOPs follow the usual MFU convention (PaLM, Chowdhery et al. 2022, appendix B): 2 FLOPs per
multiply-add of every matmul with a weight matrix, plus attention's scores and weighted values over the
keys each query really sees (causal: the t-th token of a sentence attends to t keys), plus the LM head
where logits are computed. Norms, activation functions, softmax and embedding lookups are not counted,
nor is any padding, filler row or attention across packed sentences: only useful work is.

The peak: on CPU (and for float32 anywhere) the measured rate of a large jitted matmul of that dtype on
this machine; on GPU and TPU in bfloat16 the chip's dense spec-sheet rate (`SPEC_PEAKS`), times the
number of devices.

Shapes: B batch, T tokens, V vocabulary, M layers, F neurons per layer, D hidden size.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import transformers
from absl import logging
from matplotlib.figure import Figure

from lingua_jax import checkpoints, evaluate, plots
from lingua_jax.lm import LM
from lingua_jax.models import BloomSpec, DecoderSpec, family_named

STAGES = ("pooled", "logits", "perplexity")
COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

# Dense bfloat16 peak FLOP/s per JAX device, matched in order against `device.device_kind`.
SPEC_PEAKS: tuple[tuple[str, float], ...] = (
    ("TPU v2", 22.5e12), ("TPU v3", 61.5e12),  # a v2/v3 JAX device is one core (half a chip)
    ("TPU v4", 275e12), ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12), ("TPU v6e", 918e12),
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("H800", 989e12), ("GH200", 989e12),
    ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("L40S", 362e12), ("L4", 121e12),
)

# Architectures of the paper's models (Hugging Face config fields), so a config that names a hub id
# can be measured offline with random weights.
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "bigscience/bloom-560m": ("bloom", dict(vocab_size=250880, hidden_size=1024, n_layer=24, n_head=16)),
    "bigscience/bloom-1b1": ("bloom", dict(vocab_size=250880, hidden_size=1536, n_layer=24, n_head=16)),
    "bigscience/bloom-1b7": ("bloom", dict(vocab_size=250880, hidden_size=2048, n_layer=24, n_head=16)),
    "bigscience/bloom-3b": ("bloom", dict(vocab_size=250880, hidden_size=2560, n_layer=30, n_head=32)),
    "bigscience/bloom-7b1": ("bloom", dict(vocab_size=250880, hidden_size=4096, n_layer=30, n_head=32)),
    "meta-llama/Meta-Llama-3-8B": ("llama", dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                                                 num_hidden_layers=32, num_attention_heads=32,
                                                 num_key_value_heads=8, rms_norm_eps=1e-5, rope_theta=500000.0,
                                                 max_position_embeddings=8192)),
    "meta-llama/Llama-2-7b-hf": ("llama", dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                                               num_hidden_layers=32, num_attention_heads=32,
                                               num_key_value_heads=32, rms_norm_eps=1e-5)),
    "meta-llama/Llama-2-13b-hf": ("llama", dict(vocab_size=32000, hidden_size=5120, intermediate_size=13824,
                                                num_hidden_layers=40, num_attention_heads=40,
                                                num_key_value_heads=40, rms_norm_eps=1e-5)),
    "meta-llama/Llama-2-70b-hf": ("llama", dict(vocab_size=32000, hidden_size=8192, intermediate_size=28672,
                                                num_hidden_layers=80, num_attention_heads=64,
                                                num_key_value_heads=8, rms_norm_eps=1e-5)),
}


# --- model FLOPs ------------------------------------------------------------------------------------

def weight_flops_per_token(spec: BloomSpec | DecoderSpec) -> int:
    """2 × the weights of every layer's matmuls (attention projections and MLP), all M layers."""
    d = spec.hidden_size
    if isinstance(spec, BloomSpec):
        per_layer = 3 * d * d + d * d + 2 * d * spec.num_neurons
    elif isinstance(spec, DecoderSpec):
        q, kv = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
        per_layer = d * q + 2 * d * kv + q * d + 3 * d * spec.intermediate_size
    else:
        raise TypeError(f"no FLOP count for {type(spec).__name__}")
    return 2 * spec.num_layers * per_layer


def attention_flops(spec: BloomSpec | DecoderSpec, length: int) -> int:
    """Scores and weighted values of one causal sequence of `length` tokens, all layers: the t-th
    token attends to t keys (at most W in a layer with a sliding window of W), 2 matmuls of 2 · H · hd
    FLOPs per (query, key) pair."""
    pairs = length * (length + 1) // 2
    slides = spec.layer_slides() if isinstance(spec, DecoderSpec) else None
    if slides is None:
        return spec.num_layers * 2 * 2 * spec.num_heads * spec.head_dim * pairs
    window = spec.sliding_window
    windowed = pairs if length <= window else window * (window + 1) // 2 + (length - window) * window
    per_layer = np.where(slides, windowed, pairs).astype(np.int64)
    return int(per_layer.sum()) * 2 * 2 * spec.num_heads * spec.head_dim


def head_flops(spec: BloomSpec | DecoderSpec, positions: int) -> int:
    """The LM head at `positions` positions: 2 · D · V each."""
    return 2 * spec.hidden_size * spec.vocab_size * positions


def forward_flops(spec: BloomSpec | DecoderSpec, lengths: Sequence[int] | np.ndarray, head_positions: int = 0) -> int:
    """Useful model FLOPs of forwards over sequences of the given real lengths (each alone, causal),
    plus the LM head at `head_positions` positions in all."""
    lengths = np.asarray(lengths, np.int64)
    return int(weight_flops_per_token(spec) * lengths.sum()
               + sum(attention_flops(spec, int(n)) for n in lengths) + head_flops(spec, head_positions))


# --- the peak -----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Peak:
    """flops: FLOP/s that MFU divides by (all devices together); source: where that number comes from."""

    flops: float
    source: str


def matmul_rate(dtype: Any = jnp.float32, size: int = 2048, repeats: int = 5, device: Any = None) -> float:
    """FLOP/s of the fastest of `repeats` jitted [size, size] @ [size, size] matmuls on `device`
    (default: the first), inputs already there."""
    device = device or jax.local_devices()[0]
    a = jax.device_put(jax.random.normal(jax.random.key(0), (size, size), dtype), device)
    b = jax.device_put(jax.random.normal(jax.random.key(1), (size, size), dtype), device)
    matmul = jax.jit(jnp.matmul)
    matmul(a, b).block_until_ready()
    best = min(timed(lambda: matmul(a, b)) for _ in range(repeats))
    return 2 * size**3 / best


def spec_peak(device: Any, dtype: Any) -> float | None:
    """The spec-sheet dense bfloat16 FLOP/s of one `device`, or None (CPU, float32, unknown chip)."""
    if device.platform == "cpu" or jnp.dtype(dtype) != jnp.bfloat16:
        return None
    return next((peak for name, peak in SPEC_PEAKS if name in device.device_kind), None)


def peak(dtype: Any, num_devices: int = 1, matmul_size: int = 2048) -> Peak:
    """The spec-sheet peak of the devices when known (`spec_peak`), else the measured matmul rate of
    one device times `num_devices`."""
    device = jax.local_devices()[0]
    known = spec_peak(device, dtype)
    if known is not None:
        return Peak(known * num_devices, f"spec sheet: {device.device_kind} bf16 dense x{num_devices}")
    rate = matmul_rate(dtype, matmul_size, device=device)
    return Peak(rate * num_devices, f"measured {jnp.dtype(dtype).name} matmul {matmul_size}^3 x{num_devices}")


# --- timing and compiles ------------------------------------------------------------------------------

def timed(fn: Callable[[], Any]) -> float:
    """Seconds for fn() and everything it returns to be ready."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def time_calls(fn: Callable[[], Any], min_time: float = 1.0, min_calls: int = 2, max_calls: int = 1000
               ) -> list[float]:
    """Seconds of each of several calls of fn (warm: call it once before), at least `min_calls` and
    until `min_time` seconds have passed."""
    times: list[float] = []
    while len(times) < min_calls or (sum(times) < min_time and len(times) < max_calls):
        times.append(timed(fn))
    return times


class CompileCounter:
    """Counts XLA backend compiles while active: `with CompileCounter() as c: ...`; then c.count,
    c.seconds and c.names (compiles per jitted function name, e.g. {"_apply": 1})."""

    _active: list["CompileCounter"] = []
    _registered = False

    def __init__(self):
        self.names: collections.Counter[str] = collections.Counter()
        self.seconds = 0.0

    @property
    def count(self) -> int:
        return sum(self.names.values())

    def __str__(self) -> str:
        return ", ".join(f"{name} x{n}" for name, n in sorted(self.names.items()))

    @classmethod
    def _listen(cls, event: str, duration: float, fun_name: str = "?", **_: Any) -> None:
        if event == COMPILE_EVENT:
            for counter in cls._active:
                counter.names[fun_name] += 1
                counter.seconds += duration

    def __enter__(self) -> "CompileCounter":
        if not CompileCounter._registered:
            jax.monitoring.register_event_duration_secs_listener(CompileCounter._listen)
            CompileCounter._registered = True
        CompileCounter._active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        CompileCounter._active.remove(self)


# --- models to measure --------------------------------------------------------------------------------

def hf_config(family: str, **fields: Any) -> transformers.PretrainedConfig:
    """The HF config of `family` (a registered model_type) with `fields`."""
    return family_named(family).config_cls(**fields)


def architecture_of(model: Mapping[str, Any]) -> tuple[str, Any]:
    """(name, HF config) of an experiment config's `model` section: its `random` fields, the config.json
    of a local `path`, `ARCHITECTURES` for a known hub id (nothing downloaded), else the config.json of
    the hub id (fetched into, or found in, the Hugging Face cache; no weights)."""
    random = dict(model.get("random") or {})
    if random:
        fields = {k: v for k, v in random.items() if k not in ("family", "seed")}
        return f"random {random['family']}", hf_config(random["family"], **fields)
    path = str(model["path"])
    if path in ARCHITECTURES and not Path(path).expanduser().is_dir():
        family, fields = ARCHITECTURES[path]
        return path, hf_config(family, **fields)
    source = checkpoints.resolve_model(path, model.get("revision", ""), weights=False)
    return source.hub_id or str(source.path), checkpoints.load_config(source.path)


# --- the grid -----------------------------------------------------------------------------------------

def stage_call(lm: LM, stage: str, batch_size: int, seq_len: int, seed: int = 0
               ) -> tuple[Callable[[], Any], int]:
    """(a call to time, its useful model FLOPs) for one stage on [batch_size, seq_len] random tokens:
    "pooled" (`lm.pooled`: neurons only, no head), "logits" (`lm(...)`: logits at every position),
    "perplexity" (`evaluate.window_nll` under a random 10% neuron mask: head at positions 1..T-1)."""
    rng = np.random.default_rng(seed)
    spec = lm.spec
    ids = rng.integers(0, spec.vocab_size, (batch_size, seq_len)).astype(np.int32)
    mask = np.ones_like(ids)
    lengths = [seq_len] * batch_size
    if stage == "pooled":
        return (lambda: lm.pooled(ids, mask)), forward_flops(spec, lengths)
    if stage == "logits":
        return (lambda: lm(ids, mask).logits), forward_flops(spec, lengths, batch_size * seq_len)
    if stage == "perplexity":
        neuron_mask = evaluate.random_mask(lm.num_layers, lm.num_neurons, 0.1, seed)
        return ((lambda: evaluate.window_nll(lm, ids, neuron_mask, batch_size=batch_size)),
                forward_flops(spec, lengths, batch_size * (seq_len - 1)))
    raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")


def measure(lm: LM, stage: str, batch_size: int, seq_len: int, min_time: float, peak_of: Callable[[], Peak]
            ) -> dict[str, Any]:
    """One row of the grid: compile (counted), then timed calls; tokens/s and MFU against `peak_of()`,
    which is called right after the timing (so a measured peak sees the same machine load)."""
    with CompileCounter() as compiles:
        call, flops = stage_call(lm, stage, batch_size, seq_len)
        first = timed(call)
        times = time_calls(call, min_time)
    best = peak_of()
    seconds = float(np.median(times))
    tokens = batch_size * seq_len
    return {"stage": stage, "batch_size": batch_size, "seq_len": seq_len, "tokens_per_call": tokens,
            "calls": len(times), "seconds_per_call": seconds, "tokens_per_s": tokens / seconds,
            "model_tflops_per_call": flops / 1e12, "model_tflops_per_s": flops / seconds / 1e12,
            "peak_tflops_per_s": best.flops / 1e12, "mfu": flops / seconds / best.flops,
            "compiles": compiles.count, "compile_s": compiles.seconds, "first_call_s": first,
            "compiled": str(compiles), "peak_source": best.source}


def grid(lm: LM, stages: Sequence[str], batch_sizes: Sequence[int], seq_lens: Sequence[int], min_time: float = 1.0,
         matmul_size: int = 2048, max_logits_bytes: int = 1 << 31) -> Iterator[dict[str, Any]]:
    """`measure` every (stage, batch size, seq len); "logits" points whose float32 logits [B, T, V]
    would exceed `max_logits_bytes` are skipped (logged)."""
    devices = 1 if lm.mesh is None else lm.mesh.size
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; known: {STAGES}")
    for stage in stages:
        for batch_size in batch_sizes:
            for seq_len in seq_lens:
                if stage == "logits" and 4 * batch_size * seq_len * lm.spec.vocab_size > max_logits_bytes:
                    logging.info("skipping logits at [%d, %d]: float32 logits over %d bytes", batch_size,
                                 seq_len, max_logits_bytes)
                    continue
                row = measure(lm, stage, batch_size, seq_len, min_time, lambda: peak(lm.dtype, devices, matmul_size))
                logging.info("%s", row)
                yield row


def plot(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "") -> Path:
    """tokens/s (left) and MFU (right) against sequence length, one line per (stage, batch size)."""
    fig = Figure(figsize=(11, 4.2))
    speed, mfu = fig.subplots(1, 2)
    for key in dict.fromkeys((r["stage"], r["batch_size"]) for r in rows):
        line = sorted((r for r in rows if (r["stage"], r["batch_size"]) == key), key=lambda r: r["seq_len"])
        x = [r["seq_len"] for r in line]
        label = f"{key[0]}, batch {key[1]}"
        speed.plot(x, [r["tokens_per_s"] for r in line], marker="o", label=label)
        mfu.plot(x, [100 * r["mfu"] for r in line], marker="o", label=label)
    for ax, name in ((speed, "tokens / s"), (mfu, "MFU (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    speed.set_yscale("log")
    mfu.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    return plots.save_figure(fig, path, dpi=120)

