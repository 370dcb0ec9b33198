"""meta-llama/Llama-3.1-70B with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
Tensor-parallel over every device with FSDP (141 GB of bfloat16 weights); gated: set HF_TOKEN.

    python launch/fetch_data.py --config configs/llama3_1_70b.py   # once, where there is a network
    python launch/analyze.py --config configs/llama3_1_70b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/llama3_1_70b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("meta-llama/Llama-3.1-70B", "llama", mesh=(1, -1), fsdp=True)
