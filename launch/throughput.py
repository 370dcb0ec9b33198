"""Tokens per second and model-FLOPs utilisation of pooled extraction, full-logit forwards and masked
perplexity, over a grid of batch sizes and sequence lengths, for any experiment config, on CPU, GPU or
TPU. Weights are random with the config's architecture (speed does not depend on their values); MFU is
against a measured matmul rate on CPU (and for float32) and the chip's spec-sheet peak in bfloat16 on
GPU/TPU (see lingua_jax/throughput.py).

    python launch/throughput.py --config configs/tiny_bloom.py --min_time=0.2
    python launch/throughput.py --config configs/bloom_560m.py --batch_sizes=1,8 --seq_lens=64,256,1024
    python launch/throughput.py --config configs/bloom_7b1.py --dtype=bfloat16 --stages=pooled \\
        --batch_sizes=8,32 --seq_lens=128,512,2048       # on a GPU or TPU
Writes throughput.csv/.json/.md and throughput.png into --output_dir (default <results_dir>/throughput)
and prints the table.
"""

import datetime
import platform
from pathlib import Path

import jax
from absl import app, flags
from ml_collections import config_flags

from lingua_jax import sharding, tables, throughput
from lingua_jax.lm import random_init

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(Path(__file__).resolve().parents[1] / "configs" / "tiny_bloom.py"), "Experiment config file.")
_STAGES = flags.DEFINE_list("stages", list(throughput.STAGES), f"Stages to measure, from {throughput.STAGES}.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes.")
_SEQ_LENS = flags.DEFINE_list("seq_lens", ["64", "256"], "Sequence lengths.")
_DTYPE = flags.DEFINE_string("dtype", None, "float32 or bfloat16 (default: the config's model.dtype).")
_MIN_TIME = flags.DEFINE_float("min_time", 2.0, "Seconds of timed calls per grid point (at least 2 calls).")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 2048, "Side of the matmul whose rate is the measured peak.")
_MAX_LOGITS_GIB = flags.DEFINE_float("max_logits_gib", 2.0, "Skip 'logits' points with more float32 logits.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where to write the table and plot.")

COLUMNS = ("stage", "batch_size", "seq_len", "tokens_per_s", "model_tflops_per_s", "mfu", "compiles",
           "compile_s", "seconds_per_call")


def main(argv):
    del argv
    config = _CONFIG.value
    dtype = _DTYPE.value or config.model.dtype
    name, hf = throughput.architecture_of(config.model)
    mesh = sharding.make_mesh(tuple(config.model.mesh)) if config.model.get("mesh") else None
    lm = random_init(hf, dtype, mesh=mesh)
    device = jax.local_devices()[0]
    rows = list(throughput.grid(lm, _STAGES.value, [int(b) for b in _BATCH_SIZES.value],
                                [int(t) for t in _SEQ_LENS.value], _MIN_TIME.value, _MATMUL_SIZE.value,
                                int(_MAX_LOGITS_GIB.value * 2**30)))
    about = {"model": name, "family": lm.family, "dtype": dtype, "weights": "random",
             "platform": device.platform, "device": device.device_kind,
             "devices": 1 if mesh is None else mesh.size, "host": platform.node(),
             "date": datetime.date.today().isoformat(), "jax": jax.__version__}
    out = Path(_OUTPUT_DIR.value or Path(config.results_dir) / "throughput").expanduser()
    paths = tables.write_table(rows, out, "throughput", metadata=about)
    throughput.plot(rows, out / "throughput.png", f"{name} ({dtype}) on {device.device_kind}")
    print(", ".join(f"{k}: {v}" for k, v in about.items()))
    print(tables.markdown_table(COLUMNS, [[r[c] for c in COLUMNS] for r in rows]))
    print(f"table: {paths['csv'].resolve()}\nplot: {(out / 'throughput.png').resolve()}")


if __name__ == "__main__":
    app.run(main)
