"""google/gemma-3-1b-pt with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
Gemma 3 text (q/k norms, five sliding layers of 512 per global one, each kind with its own rotary
embedding); gated: accept its terms and set HF_TOKEN.

    python launch/fetch_data.py --config configs/gemma3_1b.py   # once, where there is a network
    python launch/analyze.py --config configs/gemma3_1b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/gemma3_1b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("google/gemma-3-1b-pt", "gemma3_text")
