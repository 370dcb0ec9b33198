"""meta-llama/Llama-2-70b-hf with the paper's protocol (FLORES-200 x 9 languages, tau = 2, XL-Sum perplexity).
Tensor-parallel over every device (140 GB of bfloat16 weights fit on no single one).

    python launch/fetch_data.py --config configs/llama2_70b.py   # once, where there is a network
    python launch/analyze.py --config configs/llama2_70b.py      # the model from the HF cache, else the Hub
    python launch/analyze.py --config configs/llama2_70b.py --config.model.path=/path/to/local/copy
"""

from lingua_jax.config import paper_model


def get_config():
    return paper_model("meta-llama/Llama-2-70b-hf", "llama", mesh=(1, -1), fsdp=True)
