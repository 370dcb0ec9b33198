"""A tiny random LLAMA built on the fly: a smoke run of every stage in seconds (numbers meaningless).

    python launch/analyze.py --config configs/tiny_llama.py
"""

from lingua_jax.config import tiny_random


def get_config():
    return tiny_random("llama")
