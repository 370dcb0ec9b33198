"""The analysis over training checkpoints or model sizes: one row per checkpoint (LRDS, SADS, SKLR,
XStoryCloze accuracy), plots against step or size, the per-layer key-neuron distribution, and a
report of checkpoints with identical weights. Each checkpoint's analysis is resumable.

    python launch/evolution.py --config configs/bloom_560m.py \\
        --checkpoints=bigscience/bloom-560m-intermediate@global_step1000,bigscience/bloom-560m-intermediate@global_step10000 \\
        --x=1000,10000 --results_dir=results/bloom-560m-evolution
    python launch/evolution.py --config configs/bloom_560m.py --checkpoints=/m/bloom-560m,/m/bloom-1b1 \\
        --labels=560m,1b1 --x=0.56,1.1 --xlabel="parameters (B)" --log_x
"""

from absl import app, flags
from ml_collections import config_flags

from lingua_jax import evolution

_CONFIG = config_flags.DEFINE_config_file("config", None, "Analysis config applied to every checkpoint.")
_CHECKPOINTS = flags.DEFINE_list("checkpoints", None, "Local directories or hub_id@revision.", required=True)
_LABELS = flags.DEFINE_list("labels", None, "One label per checkpoint (default: the revision or folder).")
_X = flags.DEFINE_list("x", None, "Training step or model size per checkpoint (default: 0, 1, 2, ...).")
_XLABEL = flags.DEFINE_string("xlabel", "training step", "What x is.")
_LOG_X = flags.DEFINE_bool("log_x", False, "Logarithmic x axis (model sizes).")
_RESULTS = flags.DEFINE_string("results_dir", "results/evolution", "Where the sweep's results go.")
_STAGES = flags.DEFINE_list("stages", list(evolution.ROW_STAGES), "Stages run for each checkpoint.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data directory (overrides config.data_dir).")


def default_label(spec: str) -> str:
    return spec.rstrip("/").split("@")[-1].split("/")[-1]


def main(argv):
    del argv
    config = _CONFIG.value
    if _DATA_DIR.value:
        config.data_dir = _DATA_DIR.value
    specs = _CHECKPOINTS.value
    labels = _LABELS.value or [default_label(s) for s in specs]
    xs = [float(x) for x in _X.value] if _X.value else list(range(len(specs)))
    out = evolution.sweep(config, specs, labels, xs, _RESULTS.value, _STAGES.value, _XLABEL.value,
                          _LOG_X.value)
    print(f"results: {out['summary'].resolve()}")
    for label, earlier in out["identical"]:
        print(f"identical weights: {label} = {earlier}")


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
