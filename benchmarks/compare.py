"""lingua_jax against two PyTorch baselines on the same model, the same FLORES sentences and the same
machine: the public reference code's method (benchmarks/reference_method.py: one sentence per
`generate`, full logits, pairwise loops) and the strongest plain PyTorch peer (benchmarks/peer.py:
length-sorted batches through the backbone, pooling inside the hooks, SDPA attention, chunked loss).
Each stage runs its contenders alternately (lingua_jax, peer, reference, lingua_jax, ...) so all see
the same machine load. The three-way table gives each one's rate, lingua_jax's speed ratio over the
peer and over the reference, and each one's MFU against a matmul measured in the same round.

    python benchmarks/compare.py                                               # ~15 min on 2 CPU cores
    python benchmarks/compare.py --n=10 --score_n=10 --rounds=1 --ppl_windows=1  # ~5-10 min there
    python benchmarks/compare.py --n=100 --score_n=100 --rounds=1                # the paper's size: 12 min idle
    python benchmarks/compare.py --device=gpu                                    # on a GPU, bfloat16
    python benchmarks/compare.py --device=gpu --architecture=meta-llama/Meta-Llama-3-8B --ppl_seqlen=4096

Each with --flores=DIR/flores200_devtest unless that folder is in the data directory
($LINGUA_JAX_DATA_DIR or ~/.cache/lingua_jax/data); the first run also builds the model (~1 min).
The reference's one-sentence forwards dominate the time and suffer most when the machine is shared.

The model has the architecture of --architecture (default BLOOM-560m: 24 layers, hidden 1024, 16 heads,
vocabulary 250880; any of `lingua_jax.throughput.ARCHITECTURES`, such as bigscience/bloom-7b1 or
meta-llama/Meta-Llama-3-8B, or tiny-bloom / tiny-llama for a smoke run of seconds) with random weights,
built once with transformers (on the benchmark's device, in its dtype) into --model_dir, with a
byte-level BPE tokenizer trained on the FLORES devtest texts; float32 on CPU (torch with one thread per
core), bfloat16 with --device=gpu (JAX's GPU backend, torch on CUDA; the peer's SDPA there is flash
attention, or for BLOOM the fused memory-efficient kernel, the one that takes ALiBi's additive bias).
The reference method hooks BLOOM's GELU as the public code does, so it runs for BLOOM architectures
only (and not at all with --noreference). On a GPU each MFU is also given against the chip's bfloat16
spec-sheet peak (`throughput.SPEC_PEAKS`). Stages:
- extract: pooled activations of n sentences x 9 languages; ours packed (`extract(..., pack=True)`,
  with --bucketed also `pack=False`). The peer's pooled activations must equal ours (asserted: 1e-4 in
  float32), so all three do the same work. MFU: useful model FLOPs (real tokens, causal attention, no
  head) over the rate of a JAX matmul in the benchmark's dtype measured after ours in each round; a
  torch matmul measured beside it shows the BLAS the PyTorch contenders run on.
- scores: contribution scores and z-scores for random activations of BLOOM-7b1's neuron count
  (--score_shape) and score_n samples x 9 languages; ours from the stored activations (two passes) and
  from per-language sums streamed during extraction; the peer the closed form in torch; the reference
  the pairwise loop. Not FLOP-bound: no MFU.
- perplexity: summed NLL of --ppl_windows windows of --ppl_seqlen tokens under a random 10% neuron
  mask, in batches of --ppl_batch windows, the same windows for all three (the peer's NLL must equal
  ours: 1e-4 relative in float32, asserted).
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from absl import app, flags, logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lingua_jax as lj  # noqa: E402
from benchmarks import peer, reference_method as reference  # noqa: E402
from lingua_jax import config as config_lib, data, evaluate, extract, metrics, tables, throughput  # noqa: E402

# Smoke-run architectures (seconds on a CPU), beside throughput.ARCHITECTURES.
TINY = {"tiny-bloom": ("bloom", dict(vocab_size=4096, hidden_size=64, n_layer=2, n_head=4)),
        "tiny-llama": ("llama", dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))}
ARCHITECTURES = {**throughput.ARCHITECTURES, **TINY}
OURS, PEER, REFERENCE = "lingua_jax", "peer", "reference"
# Largest difference allowed between the peer's results and ours: pooled activations (absolute, relative
# to their largest value in bfloat16), summed NLL (relative).
TOLERANCE = {"float32": {"acts": 1e-4, "nll": 1e-4}, "bfloat16": {"acts": 3e-2, "nll": 1e-2}}

_DEVICE = flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "cpu: float32, JAX's CPU backend, torch on "
                            "CPU; gpu: bfloat16, JAX's GPU backend, torch on CUDA.")
_ARCHITECTURE = flags.DEFINE_enum("architecture", "bigscience/bloom-560m", list(ARCHITECTURES),
                                   "The model's architecture (random weights).")
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "Where the random model is built (default: "
                                 "/tmp/lingua_jax_bench/<architecture>-random), reused while its config matches.")
_REFERENCE = flags.DEFINE_bool("reference", True, "Also time the reference method (BLOOM architectures only).")
_TOKENIZER_VOCAB = flags.DEFINE_integer("tokenizer_vocab", 32000, "BPE vocabulary trained on FLORES.")
_FLORES = flags.DEFINE_string("flores", None, "FLORES-200 devtest folder (default: flores200_devtest in the "
                              "data directory, $LINGUA_JAX_DATA_DIR or ~/.cache/lingua_jax/data).")
_STAGES = flags.DEFINE_list("stages", ["extract", "scores", "perplexity"], "Stages to compare.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds per stage (lingua_jax, peer, reference).")
_N = flags.DEFINE_integer("n", 20, "Sentences per language for extraction (the paper: 100).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Packed rows per batch (ours).")
_PEER_BATCH = flags.DEFINE_integer("peer_batch", 16, "Sentences per padded batch (the peer; ours bucketed).")
_BUCKETED = flags.DEFINE_bool("bucketed", False, "Also time ours bucketed (pack=False, --peer_batch).")
_SCORE_N = flags.DEFINE_integer("score_n", 30, "Samples per language for the scores (the paper: 100).")
_SCORE_SHAPE = flags.DEFINE_list("score_shape", ["30", "16384"], "Layers, neurons per layer (BLOOM-7b1).")
_PPL_SEQLEN = flags.DEFINE_integer("ppl_seqlen", 1024, "Perplexity window length.")
_PPL_WINDOWS = flags.DEFINE_integer("ppl_windows", 2, "Perplexity windows.")
_PPL_BATCH = flags.DEFINE_integer("ppl_batch", 2, "Windows per forward (all three).")
_MATMUL = flags.DEFINE_integer("matmul_size", 0, "Side of the matmul whose rate MFU divides by (0: 2048 on "
                               "CPU, 8192 on GPU).")
_OUTPUT = flags.DEFINE_string("output_dir", "/tmp/lingua_jax_bench/results", "Where compare.csv/json/md go.")


class Setup:
    """The device, dtype and matmul probe of this run, from --device."""

    def __init__(self, device: str, family: str):
        self.gpu = device == "gpu"
        self.reference = _REFERENCE.value and family == "bloom"  # the reference hooks BLOOM's GELU
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave GPU memory to torch as well
        jax.config.update("jax_platforms", "cuda" if self.gpu else "cpu")
        if self.gpu and not torch.cuda.is_available():
            raise RuntimeError("--device=gpu: torch sees no CUDA device")
        if not self.gpu:
            torch.set_num_threads(len(os.sched_getaffinity(0)))
        self.dtype = "bfloat16" if self.gpu else "float32"
        self.torch_dtype = getattr(torch, self.dtype)
        self.torch_device = torch.device("cuda" if self.gpu else "cpu")
        self.matmul_size = _MATMUL.value or (8192 if self.gpu else 2048)
        self.tolerance = TOLERANCE[self.dtype]
        self.peak = throughput.spec_peak(jax.devices()[0], self.dtype) if self.gpu else None

    def matmul_rates(self, repeats: int = 5) -> tuple[float, float]:
        """FLOP/s of the fastest of `repeats` [size, size] @ [size, size] matmuls in the benchmark's
        dtype: JAX's (what MFU divides by) and torch's (its BLAS on this machine), one after the other."""
        a, b = (torch.randn(self.matmul_size, self.matmul_size, dtype=self.torch_dtype, device=self.torch_device)
                for _ in range(2))
        seconds = []
        for _ in range(repeats + 1):  # the first is a warm-up
            start = time.perf_counter()
            a @ b
            if self.gpu:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - start)
        torch_rate = 2 * self.matmul_size**3 / min(seconds[1:])
        return throughput.matmul_rate(jnp.dtype(self.dtype), self.matmul_size, repeats), torch_rate


def build_model(directory: Path, architecture: str, setup: Setup, tokenizer_vocab: int, texts: list[str]) -> None:
    """A checkpoint of `architecture` with random weights (transformers' initialisers, made on the
    benchmark's device in its dtype) and a BPE tokenizer trained on `texts`, saved with transformers;
    kept while the saved config has the architecture's fields."""
    family, fields = ARCHITECTURES[architecture]
    config = throughput.hf_config(family, **fields)
    if (directory / "config.json").is_file():
        if _fields(transformers.AutoConfig.from_pretrained(directory)) == _fields(config):
            return
        logging.info("%s holds another model: rebuilding it as %s", directory, architecture)
    logging.info("building a random %s in %s", architecture, directory)
    torch.manual_seed(0)
    with torch.device(setup.torch_device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=setup.torch_dtype).eval()
    model.save_pretrained(directory)
    data.train_bpe_tokenizer(texts, min(tokenizer_vocab, fields["vocab_size"])).save_pretrained(directory)


def _fields(config: transformers.PretrainedConfig) -> dict[str, Any]:
    """What makes a config's model: its fields but the saved dtype and provenance."""
    return {k: v for k, v in config.to_dict().items()
            if k not in ("architectures", "dtype", "torch_dtype", "transformers_version", "_name_or_path")}


def alternate(calls: dict[str, Callable[[], Any]], rounds: int, probe: Callable[[], Any] | None = None
              ) -> tuple[dict[str, list[float]], list[Any], dict[str, Any]]:
    """Seconds of each call in each round (in the order given), what `probe` (the matmul rates)
    measures after the first call of each round (when given), and the last result of each."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    rates, results = [], {}
    for r in range(rounds):
        for i, (name, call) in enumerate(calls.items()):
            start = time.perf_counter()
            results[name] = jax.block_until_ready(call())
            seconds[name].append(time.perf_counter() - start)
            if probe is not None and i == 0:
                rates.append(probe())
        logging.info("round %d: %s", r, ", ".join(f"{name} {s[-1]:.2f} s" for name, s in seconds.items()))
    return seconds, rates, results


def row(stage: str, seconds: dict[str, list[float]], work: float, unit: str, ours: str = OURS,
        flops: float | None = None, rates: list[tuple[float, float]] | None = None, peak: float | None = None,
        **extra: Any) -> dict[str, Any]:
    """A table row: `work` units per second of each contender (median seconds), lingua_jax's speed over
    the peer's and the reference's (median per-round ratios; the reference where it ran), and when
    `flops` each one's MFU against that round's JAX matmul rate (medians; the PyTorch ones' also
    against torch's matmul rate), and against the chip's spec-sheet `peak` when given."""
    times = {name: seconds[key] for name, key in ((REFERENCE, REFERENCE), (PEER, PEER), (OURS, ours))
             if key in seconds}
    out: dict[str, Any] = {"stage": stage, "unit": f"{unit}/s"}
    out.update({name: work / float(np.median(t)) for name, t in times.items()})
    for other in (PEER, REFERENCE):
        if other in times:
            out[f"{OURS}/{other}"] = float(np.median(np.asarray(times[other]) / np.asarray(times[OURS])))
    mfu = lambda t, which: float(np.median([flops / s / r[which] for s, r in zip(t, rates)]))
    out.update({f"MFU {name}": None if flops is None else mfu(t, 0) for name, t in times.items()})
    out.update({f"{name} s": float(np.median(t)) for name, t in times.items()})
    if flops is not None:
        out["matmul GFLOP/s"] = float(np.median([r[0] for r in rates])) / 1e9
        out["torch matmul GFLOP/s"] = float(np.median([r[1] for r in rates])) / 1e9
        out.update({f"MFU {name} vs torch matmul": mfu(times[name], 1) for name in (PEER, REFERENCE)
                    if name in times})
        if peak is not None:
            out.update({f"MFU {name} vs spec peak": flops / float(np.median(t)) / peak for name, t in times.items()})
    return {**out, **extra}


def compare_extract(setup: Setup, lm: lj.LM, model: Any, tokenizer: Any, corpus: data.ParallelCorpus
                    ) -> list[dict[str, Any]]:
    lengths = [len(t) for t in data.tokenize_each(tokenizer, corpus.texts)]
    flops = throughput.forward_flops(lm.spec, lengths)
    texts = list(corpus.texts)
    calls = {OURS: lambda: extract.extract(lm, tokenizer, corpus, batch_size=_BATCH.value, pack=True)}
    if _BUCKETED.value:
        calls["bucketed"] = lambda: extract.extract(lm, tokenizer, corpus, batch_size=_PEER_BATCH.value, pack=False)
    calls[PEER] = lambda: peer.extract(model, tokenizer, texts, _PEER_BATCH.value)
    if setup.reference:
        calls[REFERENCE] = lambda: reference.extract(model, tokenizer, texts)
    compiled = {}
    for name in [name for name in (OURS, "bucketed") if name in calls]:
        with throughput.CompileCounter() as compiles:
            cold = throughput.timed(calls[name])
        compiled[name] = {"compiles": f"{compiles.count} ({compiles})", "first_call_s": cold}
    seconds, rates, results = alternate(calls, _ROUNDS.value, setup.matmul_rates)
    mine = results[OURS].acts
    peer_diff = float(np.abs(mine - results[PEER]).max())
    reference_diff = (float(np.abs(mine.reshape(len(texts), -1) - results[REFERENCE]).max())
                      if setup.reference else None)
    allowed = setup.tolerance["acts"] * (1.0 if setup.dtype == "float32" else float(np.abs(mine).max()))
    assert peer_diff <= allowed, f"the peer's pooled activations differ from ours by {peer_diff} (> {allowed})"
    metadata = results[OURS].metadata
    rows = [row("extract (packed)", seconds, sum(lengths), "tokens", flops=flops, rates=rates, peak=setup.peak,
                **compiled[OURS], peer_max_abs_diff=peer_diff, reference_max_abs_diff=reference_diff,
                notes=f"{len(texts)} sentences, {sum(lengths)} tokens; ours packed, token efficiency "
                      f"{metadata['token_efficiency']:.3f}, shapes {metadata['batch_shapes']}; peer batches "
                      f"of {_PEER_BATCH.value}")]
    if _BUCKETED.value:
        bucketed = results["bucketed"]
        rows.append(row("extract (bucketed)", seconds, sum(lengths), "tokens", ours="bucketed", flops=flops,
                        rates=rates, peak=setup.peak, **compiled["bucketed"],
                        peer_max_abs_diff=float(np.abs(bucketed.acts - results[PEER]).max()),
                        notes=f"ours pack=False, batch {_PEER_BATCH.value}, shapes "
                              f"{bucketed.metadata['batch_shapes']}"))
    return rows


def compare_scores(num_languages: int) -> list[dict[str, Any]]:
    layers, neurons = map(int, _SCORE_SHAPE.value)
    n = _SCORE_N.value
    acts = (np.random.default_rng(0).standard_normal((num_languages * n, layers, neurons), dtype=np.float32)
            + np.float32(0.1))
    lang = np.repeat(np.arange(num_languages), n)
    sums = metrics.language_sums(acts, lang)
    calls = {OURS: lambda: np.asarray(metrics.zscores(metrics.contribution_scores(acts, lang))),
             "streamed": lambda: np.asarray(metrics.zscores(metrics.contribution_scores_from_sums(*sums))),
             PEER: lambda: peer.contribution_zscores(acts.reshape(len(acts), -1), lang, num_languages)}
    if _REFERENCE.value:
        calls[REFERENCE] = lambda: reference.contribution_zscores(acts.reshape(len(acts), -1), num_languages)
    calls[OURS](), calls["streamed"]()  # compile
    seconds, _, results = alternate(calls, _ROUNDS.value)
    z = results[OURS]
    peer_diff = float(np.nanmax(np.abs(z - results[PEER].reshape(z.shape))))
    # parity: the reference's loop without its +1e-5 offset (which moves z on signal-free random data)
    pairs = n * (n - 1) / 2
    loop = reference.pairwise_scores(acts[lang == 0].reshape(n, -1), offset=0.0)
    mine = np.asarray(metrics.contribution_scores_from_sums(*sums))[0].reshape(-1) / pairs
    diff = float(np.abs(mine - loop).max() / np.abs(loop).max())
    what = (f"{num_languages} x {n} samples, {layers} x {neurons} neurons ({acts.nbytes / 2**30:.2f} GiB); "
            f"reference diff: scores of language 0 vs the loop without its 1e-5 offset, relative")
    if REFERENCE in results:
        what += f"; z vs the loop with it: {float(np.nanmax(np.abs(z - results[REFERENCE].reshape(z.shape)))):.3g}"
    return [row("scores + z (two passes)", seconds, len(acts), "samples", peer_max_abs_diff=peer_diff,
                reference_max_abs_diff=diff, notes=what),
            row("scores + z (streamed sums)", seconds, len(acts), "samples", ours="streamed",
                notes="ours: per-language sums accumulated during extraction, scoring reads only them; "
                      "peer and reference from the stored activations")]


def compare_perplexity(setup: Setup, lm: lj.LM, model: Any, tokenizer: Any, texts: list[str]
                       ) -> list[dict[str, Any]]:
    stream = np.asarray(tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"])
    windows = data.windows(stream, _PPL_SEQLEN.value)[:_PPL_WINDOWS.value]
    mask = evaluate.random_mask(lm.num_layers, lm.num_neurons, 0.1, seed=0)
    batch = _PPL_BATCH.value
    calls = {OURS: lambda: evaluate.window_nll(lm, windows, mask, batch_size=batch),
             PEER: lambda: peer.window_nll(model, windows, batch, mask)}
    if setup.reference:
        calls[REFERENCE] = lambda: reference.window_nll(model, windows, batch, mask)
    with throughput.CompileCounter() as compiles:
        cold = throughput.timed(calls[OURS])
    seconds, rates, results = alternate(calls, _ROUNDS.value, setup.matmul_rates)
    nll = float(results[OURS].sum())
    peer_diff = abs(results[PEER] - nll) / nll
    assert peer_diff <= setup.tolerance["nll"], f"the peer's summed NLL differs from ours by {peer_diff:.3g}"
    t = windows.shape[1]
    flops = throughput.forward_flops(lm.spec, [t] * len(windows), len(windows) * (t - 1))
    return [row(f"masked perplexity (seqlen {t})", seconds, windows.size, "tokens", flops=flops, rates=rates,
                peak=setup.peak, compiles=f"{compiles.count} ({compiles})", first_call_s=cold,
                peer_max_abs_diff=peer_diff,
                reference_max_abs_diff=abs(results[REFERENCE] - nll) / nll if setup.reference else None,
                notes=f"{len(windows)} windows, batch {batch}; diffs are relative (summed NLL)")]


def machine(setup: Setup) -> str:
    if setup.gpu:
        return f"{torch.cuda.get_device_name()}; JAX {jax.devices()[0].device_kind}"
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, torch threads {torch.get_num_threads()}"


MAIN_COLUMNS = ("stage", "unit", REFERENCE, PEER, OURS, f"{OURS}/{PEER}", f"{OURS}/{REFERENCE}",
                f"MFU {REFERENCE}", f"MFU {PEER}", f"MFU {OURS}")


def main(argv):
    del argv
    began, load = time.perf_counter(), os.getloadavg()[0]
    family, fields = ARCHITECTURES[_ARCHITECTURE.value]
    setup = Setup(_DEVICE.value, family)
    flores = data.load_flores(_FLORES.value or config_lib.data_dir() / "flores200_devtest")
    model_dir = Path(_MODEL_DIR.value or f"/tmp/lingua_jax_bench/{_ARCHITECTURE.value.split('/')[-1].lower()}-random")
    needs_models = {"extract", "perplexity"} & set(_STAGES.value)
    lm = model = None
    if needs_models:
        build_model(model_dir, _ARCHITECTURE.value, setup, _TOKENIZER_VOCAB.value, list(flores.texts))
        lm = lj.load_pretrained(model_dir, setup.dtype)
        attention = {} if family == "bloom" else {"attn_implementation": "sdpa"}  # BLOOM: peer.sdpa_attention
        model = (transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=setup.torch_dtype, **attention)
                 .to(setup.torch_device).eval())
    tokenizer = data.load_tokenizer(model_dir) if needs_models else None
    corpus = flores.select(_N.value, seed=0)
    rows = []
    for stage in _STAGES.value:
        if stage == "extract":
            rows += compare_extract(setup, lm, model, tokenizer, corpus)
        elif stage == "scores":
            rows += compare_scores(len(flores.languages))
        elif stage == "perplexity":
            rows += compare_perplexity(setup, lm, model, tokenizer, list(flores.select(50, seed=1).texts))
        else:
            raise ValueError(f"unknown stage {stage!r}")
    about = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": machine(setup),
             "device": _DEVICE.value, "dtype": setup.dtype, "jax": f"{jax.__version__} ({jax.default_backend()})",
             "torch": torch.__version__, "transformers": transformers.__version__,
             "model": f"random {_ARCHITECTURE.value}: {family} {fields}", "rounds": _ROUNDS.value,
             "sentences_per_language": _N.value,
             "matmul": f"{setup.dtype} {setup.matmul_size}^3, after lingua_jax in each round",
             "spec_peak_tflops": None if setup.peak is None else setup.peak / 1e12,
             "command": " ".join(["python", *sys.argv]), "wall_s": round(time.perf_counter() - began),
             "load_average": f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (1 min)"}
    paths = tables.write_table(rows, Path(_OUTPUT.value), "compare", metadata=about)
    print("\n".join(f"{k}: {v}" for k, v in about.items()))
    print(tables.markdown_table(MAIN_COLUMNS, [[r.get(c) for c in MAIN_COLUMNS] for r in rows]))
    for r in rows:
        print(f"- {r['stage']}: {r.get('notes', '')}; diffs from lingua_jax: peer {r.get('peer_max_abs_diff', 'n/a')}, "
              f"reference {r.get('reference_max_abs_diff', 'n/a')}")
        if r.get("matmul GFLOP/s"):
            versus = ", ".join(f"{name} {r[f'MFU {name} vs torch matmul']:.3f}" for name in (PEER, REFERENCE)
                               if f"MFU {name} vs torch matmul" in r)
            print(f"  matmul GFLOP/s: JAX {r['matmul GFLOP/s']:.0f}, torch {r['torch matmul GFLOP/s']:.0f}; MFU vs "
                  f"torch's: {versus}")
        if f"MFU {OURS} vs spec peak" in r:
            print("  MFU vs the chip's bfloat16 spec peak: " + ", ".join(
                f"{name} {r[f'MFU {name} vs spec peak']:.3f}" for name in (REFERENCE, PEER, OURS)
                if f"MFU {name} vs spec peak" in r))
    print(f"all columns: {paths['md'].resolve()}")


if __name__ == "__main__":
    app.run(main)
