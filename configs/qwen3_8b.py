"""Qwen/Qwen3-8B with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
Qwen3 (per-head q/k norms, head_dim 128).

    python launch/fetch_data.py --config configs/qwen3_8b.py   # once, where there is a network
    python launch/analyze.py --config configs/qwen3_8b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/qwen3_8b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("Qwen/Qwen3-8B", "qwen3")
