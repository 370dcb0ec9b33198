"""Two processes on localhost (4 fake CPU devices each, gloo) give the one-process results."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import lingua_jax as lj
import multihost_worker
from lingua_jax import data, extract, pipeline
from lingua_jax.data import xstorycloze

VOCAB = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_processes(*args: str) -> None:
    """multihost_worker.py as processes 0 and 1 of two, on a free port; fails with their logs."""
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    script = Path(multihost_worker.__file__)
    procs = [subprocess.Popen([sys.executable, str(script), str(pid), "2", port, *args],
                              cwd=script.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for pid in (0, 1)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n\n".join(log[-3000:] for log in logs)


def test_two_processes_equal_one(checkpoint, tmp_path):
    path = checkpoint("llama_mesh", VOCAB)
    out = tmp_path / "results.npz"
    two_processes(str(path), str(out))
    both = np.load(out)
    alone = multihost_worker.run(lj.load_pretrained(path), tmp_path / "alone")
    for name, value in alone.items():
        assert np.abs(both[name] - value).max() <= 1e-5 * np.abs(value).max(), name
    # each process wrote its own part of the activation store: disjoint cells that cover it once
    cells = [{tuple(c) for c in json.loads(Path(f"{out}.cells{pid}.json").read_text())} for pid in (0, 1)]
    samples, _, neurons = alone["acts"].shape
    every = {(row, start) for row in range(samples) for start in range(0, neurons, neurons // 4)}
    assert cells[0] and cells[1] and not cells[0] & cells[1] and cells[0] | cells[1] == every
    np.testing.assert_array_equal(extract.load(tmp_path / "store").acts, both["acts"])


def story_files(directory: Path) -> Path:
    """XStoryCloze TSVs for en, zh and ar: 5 stories each (10 endings: not a multiple of 8)."""
    directory.mkdir()
    header = "\t".join(xstorycloze.TSV_HEADER)
    for lang in ("en", "zh", "ar"):
        rows = [f"s{k}\t{lang} {k} a.\t{lang} b.\t{lang} c.\t{lang} d.\tgood end {k}.\tbad end.\t{1 + k % 2}"
                for k in range(5)]
        (directory / xstorycloze.TSV_PATTERN.format(language=lang)).write_text("\n".join([header, *rows]) + "\n")
    return directory


def test_pipeline_stages_with_no_mesh_on_two_processes(checkpoint, tmp_path):
    """No mesh configured: the two processes run one data-parallel mesh over their 8 devices. Every
    batched stage (bucketed extraction, perplexity, XStoryCloze, generation) gets batches of 3, which
    it rounds up to the data axis; the results equal one process's, and only process 0 wrote files."""
    path = tmp_path / "model"
    shutil.copytree(checkpoint("llama_mesh", VOCAB), path)
    data.train_bpe_tokenizer(data.bundled_sample().texts, VOCAB).save_pretrained(path)
    stories = story_files(tmp_path / "stories")
    settings = {"checkpoint": str(path), "stories": str(stories), "results": str(tmp_path / "both")}
    two_processes(json.dumps(settings), str(tmp_path / "log"), "pipeline")
    alone = multihost_worker.pipeline_config(str(path), str(stories), str(tmp_path / "alone"))
    pipeline.Analysis(alone).run(multihost_worker.PIPELINE_STAGES)

    def outputs(results: Path, stage: str) -> dict:
        return json.loads((results / stage / "done.json").read_text())["outputs"]

    both, one = tmp_path / "both", tmp_path / "alone"
    np.testing.assert_allclose(extract.load(both / "extract").acts, extract.load(one / "extract").acts,
                               rtol=1e-5, atol=1e-6)
    assert (both / "regions" / "regions.npz").read_bytes() == (one / "regions" / "regions.npz").read_bytes()
    for a, b in zip(outputs(both, "ablation")["records"], outputs(one, "ablation")["records"]):
        assert a.keys() == b.keys() and a["ablated"] == b["ablated"]
        for key in (k for k in a if k.startswith("ppl_")):
            assert abs(a[key] - b[key]) <= 1e-5 * b[key], (a["ablated"], key)
    assert outputs(both, "xstorycloze")["rows"] == outputs(one, "xstorycloze")["rows"]
    assert [r["stories"] for r in outputs(one, "xstorycloze")["rows"]] == [5, 5, 5]
    generations = [json.loads((r / "generation" / "generations.json").read_text()) for r in (both, one)]
    assert generations[0] == generations[1] and len(generations[1]) == 3
    writes = [json.loads(Path(f"{tmp_path / 'log'}.writes{pid}.json").read_text()) for pid in (0, 1)]
    assert len(writes[0]) > 20 and any(p.endswith("done.json") for p in writes[0])
    assert writes[1] == [], writes[1][:5]
