"""The shipped demo model: a tiny BLOOM trained from scratch on FLORES-200 + NTREX-128 text.

4 layers, hidden 128, 4 heads (2048 neurons), an 8000-token byte-level BPE; FLORES-200 devtest lines
200-1011 (lines 0-199 stay out: analysis corpora may use them) and all of NTREX-128 in the nine
languages of the paper; 800 AdamW steps of 32 windows of 128 tokens. About 15 minutes on 2 CPU cores.

Run (from the repository root; writes the model, tokenizer, loss_curve.csv and training.json):

    python launch/train.py --config=configs/demo_train.py --data_dir=/path/to/data \
        --workdir=lingua_jax/assets/demo
"""

import ml_collections

from lingua_jax.data import PAPER_LANGUAGES


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.mesh = (-1, 1)  # (data, model): all devices on "data"
    config.model = ml_collections.ConfigDict(dict(
        family="bloom", num_layers=4, hidden_size=128, num_heads=4, dtype="float32",
        intermediate_size=0, num_kv_heads=0, max_positions=0))  # the last three: LLaMA only
    config.tokenizer = ml_collections.ConfigDict(dict(vocab_size=8000, min_frequency=2))
    config.data = ml_collections.ConfigDict(dict(languages=PAPER_LANGUAGES, flores_lines=(200, 1012), ntrex=True))
    config.train = ml_collections.ConfigDict(dict(
        steps=800, batch_size=32, seq_len=128, loss_chunk=128, learning_rate=3e-3, warmup_steps=80,
        end_lr_fraction=0.1, weight_decay=0.1, b1=0.9, b2=0.95, eps=1e-8, clip_norm=1.0, log_every=50))
    return config
