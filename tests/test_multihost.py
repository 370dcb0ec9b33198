"""Two processes on localhost (4 fake CPU devices each, gloo) give the one-process results."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import lingua_jax as lj
import multihost_worker
from lingua_jax import extract

VOCAB = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one(checkpoint, tmp_path):
    path = checkpoint("llama_mesh", VOCAB)
    port, out = str(free_port()), tmp_path / "results.npz"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    script = Path(multihost_worker.__file__)
    procs = [subprocess.Popen([sys.executable, str(script), str(pid), "2", port, str(path), str(out)],
                              cwd=script.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for pid in (0, 1)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n\n".join(log[-3000:] for log in logs)
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
