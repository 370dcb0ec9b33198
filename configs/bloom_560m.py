"""bigscience/bloom-560m with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).

    python launch/analyze.py --config configs/bloom_560m.py --config.model.path=/path/to/local/copy
    python launch/analyze.py --config configs/bloom_560m.py   # downloads bigscience/bloom-560m when online
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("bigscience/bloom-560m", "bloom")
