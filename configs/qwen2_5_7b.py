"""Qwen/Qwen2.5-7B with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
Qwen2 (q/k/v biases); 28 query heads, so the model axis must divide 28 (the default mesh is data-parallel).

    python launch/fetch_data.py --config configs/qwen2_5_7b.py   # once, where there is a network
    python launch/analyze.py --config configs/qwen2_5_7b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/qwen2_5_7b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("Qwen/Qwen2.5-7B", "qwen2")
