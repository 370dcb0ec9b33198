"""A tiny training run for tests: 2 layers, hidden 32, a 300-token BPE, 30 steps of 8 x 32 tokens on
FLORES-200 devtest lines 200-399. Seconds on a CPU.

    python launch/train.py --config=configs/tiny_train.py --data_dir=/path/to/data --workdir=/tmp/tiny_lm

Pass `--config=configs/tiny_train.py:llama` for the LLaMA variant.
"""

import importlib.util
from pathlib import Path

import ml_collections


def demo_config() -> ml_collections.ConfigDict:
    """configs/demo_train.py's config (loaded by path: configs/ is not a package)."""
    spec = importlib.util.spec_from_file_location("demo_train", Path(__file__).with_name("demo_train.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def get_config(family: str = "bloom") -> ml_collections.ConfigDict:
    config = demo_config()
    config.model.update(family=family, num_layers=2, hidden_size=32, num_heads=2)
    if family == "llama":
        config.model.update(intermediate_size=80, num_kv_heads=1, max_positions=64)
    config.tokenizer.vocab_size = 300
    config.data.update(flores_lines=(200, 400), ntrex=False)
    config.train.update(steps=30, batch_size=8, seq_len=32, loss_chunk=16, learning_rate=1e-2, warmup_steps=3,
                        log_every=10)
    return config
