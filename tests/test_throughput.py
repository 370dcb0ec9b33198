"""launch/throughput.py keeps running and writing its table; model FLOPs are the models' real matmuls.

The speed itself is judged by benchmarks/compare.py, not by a timed test.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lingua_jax import throughput
from lingua_jax.lm import build_module

REPO = Path(__file__).resolve().parents[1]
COLUMNS = {"stage", "batch_size", "seq_len", "tokens_per_s", "model_tflops_per_s", "peak_tflops_per_s", "mfu",
           "compiles", "compile_s", "seconds_per_call", "peak_source"}


def test_script_on_the_tiny_config_writes_its_table(tmp_path):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    run = subprocess.run(
        [sys.executable, str(REPO / "launch" / "throughput.py"), "--config", str(REPO / "configs" / "tiny_bloom.py"),
         "--batch_sizes=2", "--seq_lens=8,16", "--min_time=0.01", "--matmul_size=128",
         f"--output_dir={tmp_path}"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "throughput.csv") as f:
        rows = list(csv.DictReader(f))
    assert COLUMNS <= set(rows[0])
    assert [(r["stage"], r["seq_len"]) for r in rows] == [(s, t) for s in throughput.STAGES for t in ("8", "16")]
    for row in rows:
        assert float(row["tokens_per_s"]) > 0 and 0 < float(row["mfu"]) and float(row["peak_tflops_per_s"]) > 0
        assert int(row["compiles"]) >= 1, "each new shape compiles its program once"
        assert row["peak_source"].startswith("measured float32 matmul")
    assert (tmp_path / "throughput.png").stat().st_size > 0 and (tmp_path / "throughput.md").is_file()
    assert "| pooled | 2 | 8 |" in run.stdout


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded"])
def test_weight_flops_are_twice_the_layer_matmul_weights(name):
    from torch_reference import make_model
    model = make_model(name)
    layers = model.transformer.h if name.startswith("bloom") else model.model.layers
    weights = sum(p.numel() for p in layers.parameters() if p.ndim == 2)
    spec = build_module(model.config)[0].spec
    assert throughput.weight_flops_per_token(spec) == 2 * weights


def test_forward_flops_count_causal_pairs_and_the_head():
    spec = build_module(throughput.hf_config("bloom", vocab_size=50, hidden_size=8, n_layer=2, n_head=2))[0].spec
    per_token = throughput.weight_flops_per_token(spec)
    pair = 2 * 2 * spec.num_heads * spec.head_dim * spec.num_layers  # scores + weighted values, all layers
    assert throughput.forward_flops(spec, [3]) == 3 * per_token + 6 * pair  # keys seen: 1 + 2 + 3
    assert throughput.forward_flops(spec, [3, 1], head_positions=4) == (4 * per_token + 7 * pair
                                                                       + 4 * 2 * 8 * 50)


def test_compile_counter_counts_one_compile_per_new_shape():
    square = jax.jit(lambda x: x * x + 1.0)
    inputs = [np.ones(n, np.float32) for n in (3, 3, 5)]
    with throughput.CompileCounter() as compiles:
        for x in inputs:
            square(x).block_until_ready()
    assert compiles.names["jit(<lambda>)"] == 2 and compiles.seconds > 0


def test_spec_peak_only_for_known_accelerators_in_bfloat16():
    class Device:
        platform, device_kind = "gpu", "NVIDIA H100 80GB HBM3"
    assert throughput.spec_peak(Device, jnp.bfloat16) == 989e12
    assert throughput.spec_peak(Device, jnp.float32) is None
    Device.device_kind = "NVIDIA H100 PCIe"
    assert throughput.spec_peak(Device, jnp.bfloat16) == 756e12
    assert throughput.spec_peak(jax.devices("cpu")[0], jnp.bfloat16) is None
    np.testing.assert_array_less(0, throughput.matmul_rate(size=64, repeats=1))
