"""CohereLabs/aya-expanse-8b with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
Cohere (attention and MLP in parallel on one LayerNorm, interleaved rotary pairs, logit_scale 0.125); gated:
accept its terms and set HF_TOKEN.

    python launch/fetch_data.py --config configs/aya_expanse_8b.py   # once, where there is a network
    python launch/analyze.py --config configs/aya_expanse_8b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/aya_expanse_8b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("CohereLabs/aya-expanse-8b", "cohere")
