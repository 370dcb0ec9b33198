"""meta-llama/Llama-3.1-8B with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
LLaMA 3.1's RoPE scaling (rope_type llama3); gated: accept its license and set HF_TOKEN.

    python launch/fetch_data.py --config configs/llama3_1_8b.py   # once, where there is a network
    python launch/analyze.py --config configs/llama3_1_8b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/llama3_1_8b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("meta-llama/Llama-3.1-8B", "llama")
