"""google/gemma-2-9b with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
Gemma 2 (soft caps, alternating sliding/global layers, head_dim 256); gated: accept its terms and set HF_TOKEN.

    python launch/fetch_data.py --config configs/gemma2_9b.py   # once, where there is a network
    python launch/analyze.py --config configs/gemma2_9b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/gemma2_9b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("google/gemma-2-9b", "gemma2")
