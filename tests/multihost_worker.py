"""One process of the two-process test (test_multihost.py): 4 fake CPU devices, gloo collectives,
a (2, 4) mesh over both processes' 8 devices. Usage: multihost_worker.py PID NUM PORT CHECKPOINT OUT.
`run` is also what the test computes in one process, for comparison."""

import os
import sys

if __name__ == "__main__":  # before jax is imported
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"

import numpy as np  # noqa: E402

import lingua_jax as lj  # noqa: E402
from lingua_jax import evaluate, sharding  # noqa: E402


def run(lm: lj.LM) -> dict[str, np.ndarray]:
    """Pooled activations and logits of a fixed padded batch (gathered to the host), and perplexity."""
    rng = np.random.RandomState(0)
    ids = rng.randint(0, lm.spec.vocab_size, (8, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[::2, :5] = 0
    out = lm(ids, mask, capture="pooled")
    ppl = evaluate.perplexity(lm, rng.randint(0, lm.spec.vocab_size, 4 * 16), 16, batch_size=8)
    return {"pooled": sharding.to_host(out.neurons), "logits": sharding.to_host(out.logits),
            "perplexity": np.array(ppl)}


def main(pid: int, num: int, port: str, checkpoint: str, out: str) -> None:
    sharding.initialize_distributed(f"127.0.0.1:{port}", num, pid, cpu_collectives="gloo")
    results = run(lj.load_pretrained(checkpoint, mesh=sharding.make_mesh((2, 4))))
    if pid == 0:
        np.savez(out, **results)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
