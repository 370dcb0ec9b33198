"""bigscience/bloom-3b with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).

    python launch/analyze.py --config configs/bloom_3b.py --config.model.path=/path/to/local/copy
    python launch/analyze.py --config configs/bloom_3b.py   # downloads bigscience/bloom-3b when online
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("bigscience/bloom-3b", "bloom")
