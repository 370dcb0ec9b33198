"""mistralai/Mistral-Nemo-Base-2407 with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
Mistral-Nemo (head_dim 128, not hidden / heads; no sliding window).

    python launch/fetch_data.py --config configs/mistral_nemo_12b.py   # once, where there is a network
    python launch/analyze.py --config configs/mistral_nemo_12b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/mistral_nemo_12b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("mistralai/Mistral-Nemo-Base-2407", "mistral")
