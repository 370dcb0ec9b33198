"""The offline default: the demo BLOOM that ships with lingua_jax, the bundled parallel sample and text.

    python launch/analyze.py                     # this config; results in results/demo
    python launch/analyze.py --config.corpus.n=30 --config.results_dir=/tmp/demo
"""

from lingua_jax.config import base_config


def get_config():
    c = base_config()
    c.results_dir = "results/demo"
    c.corpus.n = 60
    c.extract.max_length = 64
    c.ablation.text.kind = "bundled"
    c.ablation.seqlen = 64
    c.ablation.batch_size = 32  # 2048 tokens per batch (on 2 CPU cores ~20% faster than 8 windows)
    c.xstorycloze.limit = 50
    c.generation.max_new_tokens = 24
    c.steer.max_new_tokens = 24
    c.steer.max_windows = 4  # the perplexity cost of each of the 109 steering edits: 4 windows per language
    c.compare.max_windows = 8  # and of each of the shoot-out's 72 sets: 8 windows per language
    c.methods = "zscore,lape,ap,aprob"  # the method shoot-out (compare stage)
    c.ap.top = c.ap.bottom = 6  # Kojima et al.'s 1000 + 1000 of LLaMA-2-7B's 352k neurons, scaled to 2048
    return c
