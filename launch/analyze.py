"""Run the analysis stages for one model: extract -> metrics -> regions -> ablation -> xstorycloze ->
generation -> report. Finished stages are skipped on a re-run; a killed run resumes.

    python launch/analyze.py                                   # offline default: the shipped demo model
    python launch/analyze.py --config configs/tiny_bloom.py    # smoke run on a tiny random model
    python launch/analyze.py --config configs/bloom_7b1.py     # bigscience/bloom-7b1 from the HF cache/Hub
    python launch/analyze.py --config configs/bloom_7b1.py --config.model.path=/models/bloom-7b1 \\
        --data_dir=/data/lingua_jax --stages=extract,metrics,regions
Data (FLORES, XL-Sum, XStoryCloze) are read from --data_dir (default: $LINGUA_JAX_DATA_DIR, else
~/.cache/lingua_jax/data), where `python launch/fetch_data.py --config ...` puts what a config needs.
Multi-host (run on every host): add --coordinator_address=host0:1234 --num_processes=N --process_id=i,
or --distributed on a TPU pod (its environment supplies them).
"""

from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from lingua_jax import pipeline, sharding

_CONFIG = config_flags.DEFINE_config_file(
    "config", str(Path(__file__).resolve().parents[1] / "configs" / "demo.py"), "Experiment config file.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data directory (overrides config.data_dir).")
_STAGES = flags.DEFINE_list("stages", None, f"Stages to run (default: the config's), from {pipeline.STAGES}.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize (multi-host).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
_CPU_COLLECTIVES = flags.DEFINE_string("cpu_collectives", None, "e.g. 'gloo' for multi-process CPU runs.")


def main(argv):
    del argv
    if _DISTRIBUTED.value or _COORDINATOR.value:
        sharding.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                                        _CPU_COLLECTIVES.value)
    config = _CONFIG.value
    if _DATA_DIR.value:
        config.data_dir = _DATA_DIR.value
    analysis = pipeline.Analysis(config)
    outputs = analysis.run(_STAGES.value or config.stages.split(","))
    summary = outputs.get("report", {}).get("summary")
    print(f"results: {analysis.results / summary if summary else analysis.results}")


if __name__ == "__main__":
    app.run(main)
