"""Train a BLOOM or LLaMA from scratch and export it as a Hugging Face checkpoint.

    python launch/train.py --config=configs/demo_train.py --data_dir=../shared/data --workdir=/tmp/demo

The config file's docstring gives its exact command; `--config.train.steps=100` style flags override
any field. `workdir` receives config.json, model.safetensors, the tokenizer files, loss_curve.csv and
training.json.
"""

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from lingua_jax import train

REPO = Path(__file__).resolve().parents[1]

config_flags.DEFINE_config_file("config", None, "ml_collections config file (configs/*_train.py).")
flags.DEFINE_string("workdir", None, "Output directory for the trained model and its records.")
flags.DEFINE_string("data_dir", str(REPO.parent / "shared" / "data"),
                    "Folder with flores200_devtest/ and ntrex128/ (default: ../shared/data beside the repo).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    result = train.train_and_export(FLAGS.config, FLAGS.data_dir, FLAGS.workdir)
    print(f"final loss {result.loss[-1]:.4f} after {len(result.loss)} steps, {result.seconds:.0f} s; "
          f"model in {FLAGS.workdir}")


if __name__ == "__main__":
    app.run(main)
