"""meta-llama/Llama-2-13b-hf with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).

    python launch/fetch_data.py --config configs/llama2_13b.py   # once, where there is a network
    python launch/analyze.py --config configs/llama2_13b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/llama2_13b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("meta-llama/Llama-2-13b-hf", "llama")
