"""A tiny random Gemma 3 (text) built on the fly, with a sliding window of 8 and a second rotary embedding in
its sliding layer: a smoke run of every stage on a later family (numbers meaningless).

    python launch/analyze.py --config configs/tiny_gemma3.py
"""

from lingua_jax.config import tiny_random


def get_config():
    return tiny_random("gemma3_text")
