"""The benchmarks run as documented: `benchmarks/gpu.sh` (the prepared GPU measurement, here as its CPU
dry run on the tiny architectures) drives `benchmarks/compare.py` for a BLOOM and a LLaMA model, whose
PyTorch peer must reproduce lingua_jax's pooled activations and summed NLL (compare.py asserts it) and
whose tables hold every contender's rate and MFU. Speed itself is judged by the benchmarks, not here."""

import json
import os
import subprocess
import sys
from pathlib import Path

from lingua_jax.data import FLORES_CODES, bundled_sample

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_dry_run_on_cpu(tmp_path):
    flores = tmp_path / "flores200_devtest"
    flores.mkdir()
    sample = bundled_sample()
    for lang in sample.languages:
        (flores / f"{FLORES_CODES[lang]}.devtest").write_text("\n".join(sample[lang]) + "\n")
    env = {**os.environ, "DEVICE": "cpu", "ARCHITECTURES": "tiny-bloom tiny-llama", "RESULTS": str(tmp_path / "out"),
           "MODELS": str(tmp_path / "models"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("XLA_FLAGS", None)  # one CPU device, as a user's run
    run = subprocess.run(["bash", "benchmarks/gpu.sh", f"--flores={flores}", "--n=2", "--ppl_seqlen=64", "--rounds=1"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    for name, family in (("tiny-bloom", "bloom"), ("tiny-llama", "llama")):
        table = json.loads((tmp_path / "out" / name / "compare.json").read_text())
        assert table["device"] == "cpu" and table["model"].startswith(f"random {name}: {family}")
        rows = {row["stage"]: row for row in table["rows"]}
        assert set(rows) == {"extract (packed)", "masked perplexity (seqlen 64)"}
        assert "reference" not in table["columns"]  # --noreference
        for row in rows.values():
            assert row["lingua_jax/peer"] > 0 and row["peer"] > 0
            assert 0 < row["MFU lingua_jax"] and 0 < row["MFU peer"]
        assert rows["extract (packed)"]["peer_max_abs_diff"] <= 1e-4
        assert rows["masked perplexity (seqlen 64)"]["peer_max_abs_diff"] <= 1e-4
