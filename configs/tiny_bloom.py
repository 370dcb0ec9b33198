"""A tiny random BLOOM built on the fly: a smoke run of every stage in seconds (numbers meaningless).

    python launch/analyze.py --config configs/tiny_bloom.py
"""

from lingua_jax.config import tiny_random


def get_config():
    return tiny_random("bloom")
