"""One process of the two-process tests (test_multihost.py): 4 fake CPU devices, gloo collectives.

    multihost_worker.py PID NUM PORT CHECKPOINT OUT            # `run` on a (2, 4) mesh over both
    multihost_worker.py PID NUM PORT CONFIG_JSON OUT pipeline   # the pipeline's stages, no mesh set

`run` and `pipeline_config` are also what the test computes in one process, for comparison.
"""

import json
import os
import sys
from pathlib import Path

if __name__ == "__main__":  # before jax is imported
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    os.environ["JAX_PLATFORMS"] = "cpu"

import numpy as np  # noqa: E402

import ml_collections  # noqa: E402

import lingua_jax as lj  # noqa: E402
from lingua_jax import data, evaluate, extract, pipeline, sharding  # noqa: E402
from lingua_jax.config import base_config  # noqa: E402

PIPELINE_STAGES = ("extract", "regions", "ablation", "xstorycloze", "generation")


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


def pipeline_config(checkpoint: str, stories: str, results: str) -> ml_collections.ConfigDict:
    """Three languages, no mesh set, and batch sizes of 3, which do not divide a data axis of 8; the
    bucketed extraction (packing rounds its rows anyway)."""
    c = base_config()
    c.model.path, c.results_dir = checkpoint, results
    c.corpus.languages, c.corpus.n = "en,zh,ar", 5
    c.extract.update(pack=False, batch_size=3, max_length=64)
    c.regions.threshold = 0.05  # the top 5% of each language's z-scores (tau = 2 needs 6+ languages)
    c.ablation.text.kind, c.ablation.seqlen, c.ablation.max_windows, c.ablation.batch_size = "bundled", 32, 2, 3
    c.xstorycloze.update(path=stories, batch_size=3)
    c.generation.update(prompts_per_language=1, max_new_tokens=6)
    return c


class WriteLog:
    """Every file this process opens for writing, renames or creates under `root` (Python's audit
    events; tensorstore's own writes of the activation store are C++ and not seen here)."""

    WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def __init__(self, root: Path):
        self.root, self.paths = str(root), []
        sys.addaudithook(self)

    def __call__(self, event: str, args: tuple) -> None:
        if event == "open" and args[0] is not None and not isinstance(args[0], int):
            mode, flags = args[1], args[2]
            writing = any(c in mode for c in "wax+") if mode else bool(flags & self.WRITING)
            if writing:
                self._note(args[0])
        elif event in ("os.rename", "os.replace"):
            self._note(args[0])
            self._note(args[1])
        elif event in ("os.mkdir", "os.remove", "os.symlink"):
            self._note(args[0])

    def _note(self, path) -> None:
        path = os.fspath(path)
        if isinstance(path, str) and path.startswith(self.root):
            self.paths.append(path)


def main(pid: int, num: int, port: str, checkpoint: str, out: str, mode: str = "run") -> None:
    sharding.initialize_distributed(f"127.0.0.1:{port}", num, pid, cpu_collectives="gloo")
    if mode == "pipeline":
        settings = json.loads(checkpoint)
        log = WriteLog(Path(settings["results"]))
        pipeline.Analysis(pipeline_config(**settings)).run(PIPELINE_STAGES)
        Path(f"{out}.writes{pid}.json").write_text(json.dumps(log.paths))
        return
    create, recorded = extract.create_store, []
    extract.create_store = lambda *args: recorded.append(RecordedStore(create(*args))) or recorded[-1]
    results = run(lj.load_pretrained(checkpoint, mesh=sharding.make_mesh((2, 4))), Path(out).parent / "store")
    Path(f"{out}.cells{pid}.json").write_text(json.dumps(recorded[0].cells))
    if pid == 0:
        np.savez(out, **results)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:])
