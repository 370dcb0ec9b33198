"""Train a BLOOM or LLaMA from scratch and export it as a Hugging Face checkpoint.

    python launch/train.py --config=configs/demo_train.py --data_dir=/path/to/data --workdir=/tmp/demo

The config file's docstring gives its exact command; `--config.train.steps=100` style flags override
any field. `workdir` receives config.json, model.safetensors, the tokenizer files, loss_curve.csv and
training.json.
"""

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from lingua_jax import config as config_lib, train

config_flags.DEFINE_config_file("config", None, "ml_collections config file (configs/*_train.py).")
flags.DEFINE_string("workdir", None, "Output directory for the trained model and its records.")
flags.DEFINE_string("data_dir", None, "Folder with flores200_devtest/ (FLORES-200 devtest, as "
                    "launch/fetch_data.py writes it) and ntrex128/ (github.com/MicrosoftTranslator/NTREX); "
                    "default: $LINGUA_JAX_DATA_DIR, else ~/.cache/lingua_jax/data.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    data_dir = Path(FLAGS.data_dir).expanduser() if FLAGS.data_dir else config_lib.data_dir()
    result = train.train_and_export(FLAGS.config, data_dir, Path(FLAGS.workdir).expanduser())
    print(f"final loss {result.loss[-1]:.4f} after {len(result.loss)} steps, {result.seconds:.0f} s; "
          f"model in {Path(FLAGS.workdir).expanduser()}")


if __name__ == "__main__":
    app.run(main)
