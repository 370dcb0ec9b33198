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
    c.xstorycloze.limit = 50
    c.generation.max_new_tokens = 24
    c.methods = "zscore,lape,ap,aprob"  # the method shoot-out (compare stage)
    c.ap.top = c.ap.bottom = 6  # Kojima et al.'s 1000 + 1000 of LLaMA-2-7B's 352k neurons, scaled to 2048
    return c
