"""Loading a sharded checkpoint onto 8 fake devices holds about one copy of the weights on the host."""

import json
import subprocess
import sys

import numpy as np
import transformers
from safetensors.numpy import save_file

MEASURE = """
import os, resource, sys
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
import jax
import lingua_jax as lj
from lingua_jax import sharding
jax.block_until_ready(jax.numpy.ones(8) + 1)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
lm = lj.load_pretrained(sys.argv[1], mesh=sharding.make_mesh((1, 8)))
jax.block_until_ready(lm.params)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, sum(x.nbytes for x in jax.tree_util.tree_leaves(lm.params)))
"""


def write_llama(path, layers=8, hidden=512, neurons=2048, vocab=128):
    """A random LLaMA of about 130 MB in float32, one safetensors shard per layer."""
    transformers.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=neurons,
                             num_hidden_layers=layers, num_attention_heads=8).save_pretrained(path)
    rng = np.random.default_rng(0)
    weight_map = {}
    for i in range(layers):
        shapes = {f"self_attn.{p}_proj": (hidden, hidden) for p in "qkvo"}
        shapes.update({"mlp.gate_proj": (neurons, hidden), "mlp.up_proj": (neurons, hidden),
                       "mlp.down_proj": (hidden, neurons)})
        tensors = {f"model.layers.{i}.{n}.weight": rng.standard_normal(s, np.float32) * 0.02
                   for n, s in shapes.items()}
        for norm in ("input_layernorm", "post_attention_layernorm"):
            tensors[f"model.layers.{i}.{norm}.weight"] = np.ones(hidden, np.float32)
        if i == 0:
            tensors.update({"model.embed_tokens.weight": rng.standard_normal((vocab, hidden), np.float32),
                            "lm_head.weight": rng.standard_normal((vocab, hidden), np.float32),
                            "model.norm.weight": np.ones(hidden, np.float32)})
        file = f"model-{i + 1:05d}-of-{layers:05d}.safetensors"
        save_file(tensors, str(path / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_peak_host_memory_is_near_one_copy(tmp_path):
    write_llama(tmp_path)
    out = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    growth, model = map(int, out.stdout.split()[-2:])
    print(f"peak RSS growth {growth / 2**20:.0f} MiB for {model / 2**20:.0f} MiB of weights")
    assert model > 120 * 2**20
    assert growth < 1.75 * model, f"loading held {growth / model:.2f} copies of the weights"
