"""launch/evolution.py over three tiny checkpoints (two identical), and launch/convert.py."""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import transformers

import lingua_jax as lj
from lingua_jax import data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep_checkpoints(tmp_path_factory):
    """Two random tiny BLOOMs (seeds 0, 1) and a byte-identical copy of the first, with a tokenizer."""
    root = tmp_path_factory.mktemp("sweep")
    tokenizer = data.train_bpe_tokenizer(data.bundled_sample().texts, 400)
    config = transformers.BloomConfig(vocab_size=len(tokenizer), hidden_size=32, n_layer=2, n_head=4)
    for seed in (0, 1):
        lj.save_pretrained(lj.lm.random_init(config, seed=seed), root / f"step{seed}", tokenizer)
    shutil.copytree(root / "step0", root / "step0_again")
    return root, [root / "step0", root / "step1", root / "step0_again"]


def run(script, *flags):
    out = subprocess.run([sys.executable, str(REPO / "launch" / script), *map(str, flags)], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def test_evolution_table_plots_and_identical_weights(sweep_checkpoints, tmp_path):
    root, paths = sweep_checkpoints
    stdout = run("evolution.py", "--config", REPO / "configs" / "tiny_bloom.py", "--config.corpus.n=8",
                 "--checkpoints=" + ",".join(map(str, paths)), "--labels=a,b,c", "--x=100,200,300",
                 f"--results_dir={tmp_path}", "--stages=extract,metrics,regions")
    assert "identical weights: c = a" in stdout
    with open(tmp_path / "evolution.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["a", "b", "c"] and [r["identical_to"] for r in rows] == ["", "", "a"]
    assert {"x", "lrds", "sads", "sklr", "xstorycloze", "fingerprint", "lrds_low", "sads_high"} <= set(rows[0])
    assert float(rows[0]["lrds_low"]) <= float(rows[0]["lrds"]) <= float(rows[0]["lrds_high"])
    assert rows[2]["lrds"] == rows[0]["lrds"] and rows[1]["lrds"] != rows[0]["lrds"]
    assert rows[0]["fingerprint"] == rows[2]["fingerprint"] != rows[1]["fingerprint"]
    assert not (tmp_path / "c").exists(), "identical weights must not be analysed again"
    regions = json.loads((tmp_path / "a" / "regions" / "done.json").read_text())["outputs"]
    assert float(rows[0]["sklr"]) == regions["sklr"]
    for png in ("evolution.png", "key_neurons_per_layer.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
    summary = (tmp_path / "summary.md").read_text()
    assert "| c | a |" in summary and "LRDS 95% interval" in summary


def test_convert_to_orbax_and_load_either(sweep_checkpoints, tmp_path):
    _, paths = sweep_checkpoints
    stdout = run("convert.py", f"--input={paths[1]}", f"--output={tmp_path / 'orbax'}", "--mesh=2,4")
    assert "orbax checkpoint" in stdout and (tmp_path / "orbax" / "tokenizer.json").is_file()
    ids = np.arange(10, dtype=np.int32).reshape(2, 5)
    np.testing.assert_array_equal(lj.load_pretrained(tmp_path / "orbax")(ids).logits,
                                  lj.load_pretrained(paths[1])(ids).logits)


def test_orbax_checkpoints_have_fingerprints(sweep_checkpoints, tmp_path):
    """A sweep may mix formats: an orbax directory's params are fingerprinted (less the time of saving),
    equal for a byte copy, different for other weights."""
    from lingua_jax import evolution

    _, paths = sweep_checkpoints
    for i in (0, 1):
        lj.save_pretrained(lj.load_pretrained(paths[i]), tmp_path / f"orbax{i}", format="orbax")
    shutil.copytree(tmp_path / "orbax0", tmp_path / "orbax0_again")
    (tmp_path / "orbax0_again" / "params" / "_CHECKPOINT_METADATA").write_text('{"commit_timestamp_nsecs": 1}')
    prints = [evolution.fingerprint(tmp_path / name) for name in ("orbax0", "orbax0_again", "orbax1")]
    assert prints[0] == prints[1] != prints[2]
