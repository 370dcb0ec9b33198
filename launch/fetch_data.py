"""Fetch what a config reads from the network, ahead of time: its data sets into the data directory
(in the layouts the analysis reads), the model and hub data into the Hugging Face cache. Run it where
there is a network; then `launch/analyze.py` with the same config runs offline (HF_HUB_OFFLINE=1).

    python launch/fetch_data.py --config configs/bloom_7b1.py                 # data + model
    python launch/fetch_data.py --config configs/bloom_7b1.py --nomodel --data_dir=/shared/lingua_jax
    HF_HOME=/shared/hf python launch/fetch_data.py --config configs/llama2_7b.py   # for a pod

FLORES+ and Llama-2 are gated on the Hub: accept their terms there and set HF_TOKEN first.
"""

from absl import app, flags
from ml_collections import config_flags

from lingua_jax import config as config_lib
from lingua_jax.fetch import fetch

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data directory (overrides config.data_dir).")
_MODEL = flags.DEFINE_bool("model", True, "Also fetch the model (and tokenizer) into the Hugging Face cache.")


def main(argv):
    del argv
    config = _CONFIG.value
    if _DATA_DIR.value:
        config.data_dir = _DATA_DIR.value
    for line in fetch(config, model=_MODEL.value):
        print(line)
    print(f"data directory: {config_lib.data_dir(config)}")


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
