"""One process of the two-process test (test_multihost.py): 4 fake CPU devices, gloo collectives,
a (2, 4) mesh over both processes' 8 devices. Usage: multihost_worker.py PID NUM PORT CHECKPOINT OUT.
`run` is also what the test computes in one process, for comparison."""

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # before jax is imported
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"

import numpy as np  # noqa: E402

import lingua_jax as lj  # noqa: E402
from lingua_jax import data, evaluate, extract, sharding  # noqa: E402


def run(lm: lj.LM, store: Path) -> dict[str, np.ndarray]:
    """Pooled activations and logits of a fixed padded batch (gathered to the host), perplexity, and
    the packed extraction of a small corpus into the activation store `store`."""
    rng = np.random.RandomState(0)
    ids = rng.randint(0, lm.spec.vocab_size, (8, 12)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[::2, :5] = 0
    out = lm(ids, mask, capture="pooled")
    ppl = evaluate.perplexity(lm, rng.randint(0, lm.spec.vocab_size, 4 * 16), 16, batch_size=8)
    corpus = data.bundled_sample(("en", "fr")).select(6, seed=0)
    tokenizer = data.train_bpe_tokenizer(corpus.texts, lm.spec.vocab_size)
    acts = extract.extract_cached(store, lm, tokenizer, corpus, batch_size=2, pack=True, max_length=64)
    return {"pooled": sharding.to_host(out.neurons), "logits": sharding.to_host(out.logits),
            "perplexity": np.array(ppl), "acts": acts.acts, "sums": acts.sums}


class RecordedStore:
    """Stands in for the activation store's array: records the (sample, first neuron) cells this
    process writes, and passes everything on."""

    def __init__(self, array):
        self.array, self.cells = array, []

    @property
    def oindex(self):
        return self

    def __getitem__(self, key):
        rows, _, neurons = key
        self.cells += [(int(row), neurons.start or 0) for row in rows]
        return self.array.oindex[key]

    def read(self):
        return self.array.read()


def main(pid: int, num: int, port: str, checkpoint: str, out: str) -> None:
    sharding.initialize_distributed(f"127.0.0.1:{port}", num, pid, cpu_collectives="gloo")
    create, recorded = extract.create_store, []
    extract.create_store = lambda *args: recorded.append(RecordedStore(create(*args))) or recorded[-1]
    results = run(lj.load_pretrained(checkpoint, mesh=sharding.make_mesh((2, 4))), Path(out).parent / "store")
    Path(f"{out}.cells{pid}.json").write_text(json.dumps(recorded[0].cells))
    if pid == 0:
        np.savez(out, **results)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
