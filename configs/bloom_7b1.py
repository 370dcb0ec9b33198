"""bigscience/bloom-7b1 with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).

    python launch/fetch_data.py --config configs/bloom_7b1.py   # once, where there is a network
    python launch/analyze.py --config configs/bloom_7b1.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/bloom_7b1.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("bigscience/bloom-7b1", "bloom")
