"""mistralai/Mistral-7B-v0.1 with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
Mistral (sliding-window attention over 4096 tokens in every layer: exact at the 4096-token windows).

    python launch/fetch_data.py --config configs/mistral_7b.py   # once, where there is a network
    python launch/analyze.py --config configs/mistral_7b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/mistral_7b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("mistralai/Mistral-7B-v0.1", "mistral")
