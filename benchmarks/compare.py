"""lingua_jax against the public reference code's method (benchmarks/reference_method.py) on the same
model, the same FLORES sentences and the same machine, each stage measured alternately (ours, theirs,
ours, theirs, ...) so both see the same machine load; prints the table of ratios.

    python benchmarks/compare.py                                    # ~5 min on 2 CPU cores
    python benchmarks/compare.py --n=100 --score_n=100 --rounds=2   # the full size (~30 min there)

The model is BLOOM-560m-shaped (24 layers, hidden 1024, 16 heads, vocabulary 250880) with random
float32 weights, built once with transformers into --model_dir, with a byte-level BPE tokenizer trained
on the FLORES devtest texts. Stages:
- extract: pooled activations of n sentences x 9 languages; ours packed (`extract(..., pack=True)`),
  theirs one `generate(max_new_tokens=1)` per sentence with forward hooks. MFU counts useful model
  FLOPs (real tokens, causal attention, no head) against a float32 matmul rate measured in the same
  round.
- scores: contribution scores and z-scores for random activations of BLOOM-7b1's neuron count
  (--score_layers x --score_neurons) and score_n samples x 9 languages; ours from the stored activations
  (two passes) and from per-language sums streamed during extraction; theirs the pairwise loop.
- perplexity: summed NLL of --ppl_windows windows of --ppl_seqlen tokens under a random 10% neuron mask.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import torch
import transformers
from absl import app, flags, logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lingua_jax as lj  # noqa: E402
from benchmarks import reference_method as reference  # noqa: E402
from lingua_jax import config as config_lib, data, evaluate, extract, metrics, tables, throughput  # noqa: E402

SHAPE = dict(hidden_size=1024, n_layer=24, n_head=16)  # BLOOM-560m

_MODEL_DIR = flags.DEFINE_string("model_dir", "/tmp/lingua_jax_bench/bloom-560m-random", "Built here if missing.")
_VOCAB = flags.DEFINE_integer("vocab_size", 250880, "Model vocabulary (BLOOM's: 250880).")
_TOKENIZER_VOCAB = flags.DEFINE_integer("tokenizer_vocab", 32000, "BPE vocabulary trained on FLORES.")
_FLORES = flags.DEFINE_string("flores", None, "FLORES-200 devtest folder (default: flores200_devtest in the "
                              "data directory, $LINGUA_JAX_DATA_DIR or ~/.cache/lingua_jax/data).")
_STAGES = flags.DEFINE_list("stages", ["extract", "scores", "perplexity"], "Stages to compare.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternating rounds per stage (ours then theirs, each round).")
_N = flags.DEFINE_integer("n", 20, "Sentences per language for extraction (the paper: 100).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Packed rows per batch (ours).")
_BUCKETED = flags.DEFINE_bool("bucketed", False, "Also time ours bucketed (pack=False, batch_size 16).")
_SCORE_N = flags.DEFINE_integer("score_n", 30, "Samples per language for the scores (the paper: 100).")
_SCORE_SHAPE = flags.DEFINE_list("score_shape", ["30", "16384"], "Layers, neurons per layer (BLOOM-7b1).")
_PPL_SEQLEN = flags.DEFINE_integer("ppl_seqlen", 1024, "Perplexity window length.")
_PPL_WINDOWS = flags.DEFINE_integer("ppl_windows", 2, "Perplexity windows.")
_PPL_BATCH = flags.DEFINE_integer("ppl_batch", 1, "Windows per forward (both).")
_MATMUL = flags.DEFINE_integer("matmul_size", 2048, "Side of the float32 matmul whose rate MFU divides by.")
_OUTPUT = flags.DEFINE_string("output_dir", "/tmp/lingua_jax_bench/results", "Where compare.csv/json/md go.")


def build_model(directory: Path, vocab_size: int, tokenizer_vocab: int, texts: list[str]) -> None:
    """A random float32 BLOOM-560m-shaped checkpoint and a BPE tokenizer, saved with transformers."""
    if (directory / "config.json").is_file():
        return
    logging.info("building the random model in %s", directory)
    torch.manual_seed(0)
    model = transformers.BloomForCausalLM(transformers.BloomConfig(vocab_size=vocab_size, **SHAPE)).eval()
    model.save_pretrained(directory)
    data.train_bpe_tokenizer(texts, tokenizer_vocab).save_pretrained(directory)


def alternate(ours: Callable[[], Any], theirs: Callable[[], Any], rounds: int, probe: bool = False
              ) -> tuple[list[float], list[float], list[float], Any, Any]:
    """Seconds of ours and theirs in each round (ours first), the float32 matmul rate measured after
    ours in each round (when `probe`), and the last results of both."""
    ours_s, theirs_s, rates = [], [], []
    for r in range(rounds):
        start = time.perf_counter()
        mine = jax.block_until_ready(ours())
        ours_s.append(time.perf_counter() - start)
        if probe:
            rates.append(throughput.matmul_rate(size=_MATMUL.value))
        start = time.perf_counter()
        other = theirs()
        theirs_s.append(time.perf_counter() - start)
        logging.info("round %d: ours %.2f s, theirs %.2f s", r, ours_s[-1], theirs_s[-1])
    return ours_s, theirs_s, rates, mine, other


def row(stage: str, ours_s: list[float], theirs_s: list[float], work: float, unit: str, **extra: Any
        ) -> dict[str, Any]:
    """A table row: median seconds, rates of `work` units per second, the median per-round ratio."""
    ours, theirs = float(np.median(ours_s)), float(np.median(theirs_s))
    return {"stage": stage, "ours_s": ours, "reference_s": theirs, f"ours_{unit}_per_s": work / ours,
            f"reference_{unit}_per_s": work / theirs,
            "speedup": (float(np.median(np.asarray(theirs_s) / np.asarray(ours_s))) if len(ours_s) == len(theirs_s)
                        else theirs / ours), **extra}


def mfu(flops: float, ours_s: list[float], theirs_s: list[float], rates: list[float]) -> dict[str, float]:
    """Model FLOPs utilisation of both, each round against that round's matmul rate; medians."""
    return {"ours_mfu": float(np.median([flops / t / r for t, r in zip(ours_s, rates)])),
            "reference_mfu": float(np.median([flops / t / r for t, r in zip(theirs_s, rates)])),
            "matmul_gflops": float(np.median(rates)) / 1e9}


def compare_extract(lm: lj.LM, model: Any, tokenizer: Any, corpus: data.ParallelCorpus) -> list[dict[str, Any]]:
    lengths = [len(t) for t in data.tokenize_each(tokenizer, corpus.texts)]
    flops = throughput.forward_flops(lm.spec, lengths)
    with throughput.CompileCounter() as compiles:
        start = time.perf_counter()
        extract.extract(lm, tokenizer, corpus, batch_size=_BATCH.value, pack=True)
        cold = time.perf_counter() - start
    ours_s, theirs_s, rates, mine, other = alternate(
        lambda: extract.extract(lm, tokenizer, corpus, batch_size=_BATCH.value, pack=True),
        lambda: reference.extract(model, tokenizer, corpus.texts), _ROUNDS.value, probe=True)
    rows = [row("extract (packed)", ours_s, theirs_s, sum(lengths), "tokens", **mfu(flops, ours_s, theirs_s, rates),
                compiles=f"{compiles.count} ({compiles})", first_call_s=cold,
                max_abs_diff=float(np.abs(mine.acts.reshape(len(other), -1) - other).max()),
                notes=f"{len(corpus.texts)} sentences, {sum(lengths)} tokens, "
                      f"token efficiency {mine.metadata['token_efficiency']:.3f}, shapes {mine.metadata['batch_shapes']}")]
    if _BUCKETED.value:
        with throughput.CompileCounter() as compiles:
            bucketed = extract.extract(lm, tokenizer, corpus, batch_size=16)
        ours_s, theirs_s, rates, _, _ = alternate(lambda: extract.extract(lm, tokenizer, corpus, batch_size=16),
                                                  lambda: reference.extract(model, tokenizer, corpus.texts),
                                                  _ROUNDS.value, probe=True)
        rows.append(row("extract (bucketed)", ours_s, theirs_s, sum(lengths), "tokens",
                        **mfu(flops, ours_s, theirs_s, rates), compiles=f"{compiles.count} ({compiles})",
                        notes=f"shapes {bucketed.metadata['batch_shapes']}"))
    return rows


def compare_scores(num_languages: int) -> list[dict[str, Any]]:
    layers, neurons = map(int, _SCORE_SHAPE.value)
    n = _SCORE_N.value
    acts = (np.random.default_rng(0).standard_normal((num_languages * n, layers, neurons), dtype=np.float32)
            + np.float32(0.1))
    lang = np.repeat(np.arange(num_languages), n)
    ours = lambda: np.asarray(metrics.zscores(metrics.contribution_scores(acts, lang)))
    theirs = lambda: reference.contribution_zscores(acts.reshape(len(acts), -1), num_languages)
    ours()  # compile
    ours_s, theirs_s, _, z, z_ref = alternate(ours, theirs, _ROUNDS.value)
    sums = metrics.language_sums(acts, lang)
    streamed = lambda: np.asarray(metrics.zscores(metrics.contribution_scores_from_sums(*sums)))
    streamed()
    streamed_s = [throughput.timed(streamed) for _ in range(3)]
    # parity: the reference's loop without its +1e-5 offset (which moves z on signal-free random data)
    pairs = n * (n - 1) / 2
    loop = reference.pairwise_scores(acts[lang == 0].reshape(n, -1), offset=0.0)
    mine = np.asarray(metrics.contribution_scores_from_sums(*sums))[0].reshape(-1) / pairs
    diff = float(np.abs(mine - loop).max() / np.abs(loop).max())
    what = (f"{num_languages} x {n} samples, {layers} x {neurons} neurons ({acts.nbytes / 2**30:.2f} GiB); "
            f"diff: scores of language 0 vs the loop without its 1e-5 offset, relative; z vs the loop with it: "
            f"{float(np.nanmax(np.abs(z - z_ref.reshape(z.shape)))):.3g}")
    return [row("scores + z (two passes)", ours_s, theirs_s, len(acts), "samples", max_abs_diff=diff, notes=what),
            row("scores + z (streamed sums)", streamed_s, theirs_s, len(acts), "samples",
                notes="per-language sums accumulated during extraction; scoring reads only them")]


def compare_perplexity(lm: lj.LM, model: Any, tokenizer: Any, texts: list[str]) -> list[dict[str, Any]]:
    stream = np.asarray(tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"])
    windows = data.windows(stream, _PPL_SEQLEN.value)[:_PPL_WINDOWS.value]
    mask = evaluate.random_mask(lm.num_layers, lm.num_neurons, 0.1, seed=0)
    with throughput.CompileCounter() as compiles:
        evaluate.window_nll(lm, windows, mask, batch_size=_PPL_BATCH.value)
    ours_s, theirs_s, rates, nll, nll_ref = alternate(
        lambda: evaluate.window_nll(lm, windows, mask, batch_size=_PPL_BATCH.value),
        lambda: reference.window_nll(model, windows, _PPL_BATCH.value, mask), _ROUNDS.value, probe=True)
    t = windows.shape[1]
    flops = throughput.forward_flops(lm.spec, [t] * len(windows), len(windows) * (t - 1))
    return [row(f"masked perplexity (seqlen {t})", ours_s, theirs_s, windows.size, "tokens",
                **mfu(flops, ours_s, theirs_s, rates), compiles=f"{compiles.count} ({compiles})",
                max_abs_diff=abs(float(nll.sum()) - nll_ref) / nll_ref,
                notes=f"{len(windows)} windows, batch {_PPL_BATCH.value}; diff is relative (summed NLL)")]


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, torch threads {torch.get_num_threads()}"


def main(argv):
    del argv
    flores = data.load_flores(_FLORES.value or config_lib.data_dir() / "flores200_devtest")
    model_dir = Path(_MODEL_DIR.value)
    build_model(model_dir, _VOCAB.value, _TOKENIZER_VOCAB.value, list(flores.texts))
    tokenizer = data.load_tokenizer(model_dir)
    corpus = flores.select(_N.value, seed=0)
    needs_models = {"extract", "perplexity"} & set(_STAGES.value)
    lm = lj.load_pretrained(model_dir, "float32") if needs_models else None
    model = (transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
             if needs_models else None)
    rows = []
    for stage in _STAGES.value:
        if stage == "extract":
            rows += compare_extract(lm, model, tokenizer, corpus)
        elif stage == "scores":
            rows += compare_scores(len(flores.languages))
        elif stage == "perplexity":
            rows += compare_perplexity(lm, model, tokenizer, list(flores.select(50, seed=1).texts))
        else:
            raise ValueError(f"unknown stage {stage!r}")
    about = {"date": datetime.date.today().isoformat(), "machine": machine(), "jax": jax.__version__,
             "torch": torch.__version__, "transformers": transformers.__version__,
             "model": f"random BLOOM {SHAPE}, vocab {_VOCAB.value}, float32", "rounds": _ROUNDS.value,
             "sentences_per_language": _N.value}
    out = Path(_OUTPUT.value)
    paths = tables.write_table(rows, out, "compare", metadata=about)
    print("\n".join(f"{k}: {v}" for k, v in about.items()))
    print(paths["md"].read_text())
    print(f"written: {paths['md'].resolve()}")


if __name__ == "__main__":
    app.run(main)
