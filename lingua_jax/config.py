"""The defaults every experiment config starts from (see configs/*.py for the run commands), and
`resolve_paths`, which turns a config's path settings into absolute paths once, at the start of a run.

Path settings accept `~` and paths relative to the working directory. Data paths (corpus.path,
ablation.text.path, xstorycloze.path) may start with "@data/": "@data/x" is x under the data directory,
`data_dir` if set, else $LINGUA_JAX_DATA_DIR, else ~/.cache/lingua_jax/data (where
`launch/fetch_data.py` puts what a config needs).
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_collections

from lingua_jax import hub
from lingua_jax.data import PAPER_LANGUAGES

DATA_DIR_VARIABLE = "LINGUA_JAX_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/lingua_jax/data"
DATA_PREFIX = "@data/"
DATA_PATHS = ("corpus.path", "ablation.text.path", "xstorycloze.path")


def base_config() -> ml_collections.ConfigDict:
    """Every setting the analysis reads, with the paper's protocol as default where it has one."""
    c = ml_collections.ConfigDict()
    c.results_dir = "results/run"
    c.data_dir = ""  # default: $LINGUA_JAX_DATA_DIR, else ~/.cache/lingua_jax/data
    c.stages = "extract,metrics,regions,stability,ablation,xstorycloze,generation,steer,compare,report"
    # path: "demo" (the shipped demo model), a local directory, or a hub id "org/name[@revision]";
    # revision: a branch, tag or commit of a hub id ("" = main)
    # attention: "auto" (cuDNN flash attention on a CUDA GPU where it supports the model, else the blocked
    # XLA path), "blocked", "xla" or "cudnn"
    c.model = ml_collections.ConfigDict(dict(path="demo", revision="", dtype="float32", mesh=(), fsdp=False,
                                             attention="auto"))
    c.model.random = ml_collections.ConfigDict()  # set fields (family, hidden_size, ...) for a random model
    c.tokenizer = ""  # default: the model's tokenizer; else a directory or a hub id
    # kind: bundled | flores | ntrex | table | bible (local files at `path`) | hub_flores (FLORES+ on the Hub)
    c.corpus = ml_collections.ConfigDict(dict(kind="bundled", path="", languages=",".join(PAPER_LANGUAGES),
                                              n=100, seed=0))
    # pack: several sentences per row, each attending only to itself (same numbers, ~5x faster on CPU);
    # batch_size is then rows per batch
    c.extract = ml_collections.ConfigDict(dict(batch_size=16, add_special_tokens=False, max_length=256, pack=True))
    # offset: added to every normalised activation before scoring; the reference code's 1e-5 reproduces its
    # region sizes at scale (METHOD.md), the paper's equations have 0
    c.regions = ml_collections.ConfigDict(dict(threshold=2.0, offset=0.0))
    # 95% intervals of LRDS, SADS and the regions from `samples` resamples of the sentences (0: none)
    c.bootstrap = ml_collections.ConfigDict(dict(samples=1000, seed=0))
    # text kind: bundled | xlsum (the XL-Sum JSONL release layout at `path`) | hub_xlsum (its parquet on the Hub)
    c.ablation = ml_collections.ConfigDict(dict(
        text=ml_collections.ConfigDict(dict(kind="xlsum", path="@data/xlsum", split="validation", limit=500)),
        seqlen=2048, max_windows=0, batch_size=8, random_fraction=ml_collections.FieldReference(None, float),
        seed=0))
    # kind: tsv (the XStoryCloze TSV release at `path`; skipped, and said so, while absent) | hub | none
    c.xstorycloze = ml_collections.ConfigDict(dict(kind="tsv", path="@data/xstorycloze",
                                                   languages=("en", "zh", "es", "ar", "hi", "id"), limit=0,
                                                   batch_size=8))
    c.generation = ml_collections.ConfigDict(dict(prompts_per_language=2, max_new_tokens=64))
    # steering: each target language's region set to its mean / median activation x each strength; random
    # regions of the same size drawn with `seed`; the perplexity cost on max_windows windows per language (0: all)
    c.steer = ml_collections.ConfigDict(dict(prompts_per_language=2, strengths=(1.0, 2.0, 4.0),
                                             statistics="mean,median", max_new_tokens=32, max_windows=8,
                                             batch_size=64, seed=0))
    # definitions of language-specific neurons (lingua_jax/methods.py): zscore (this paper), zscore_ref, lape,
    # ap, aprob. With more than zscore, the compare stage ablates each at its own size and at compare.budget
    # neurons per language (a fraction of M·F below 1, else a count), and measures their overlaps
    c.methods = "zscore"
    # steer_strength: each method's sets are also steered with (mean activation x this), prompts as in steer;
    # max_windows: the perplexity table on the first max_windows windows per language (0: the ablation's)
    c.compare = ml_collections.ConfigDict(dict(budget=0.02, steer_strength=2.0, max_windows=0))
    c.lape = ml_collections.ConfigDict(dict(top_rate=0.01, filter_rate=0.95, bar_ratio=0.95))
    c.ap = ml_collections.ConfigDict(dict(top=1000, bottom=1000))  # Kojima et al. 2024's counts per language
    c.aprob = ml_collections.ConfigDict(dict(quantile=0.9, top_rate=0.01, filter_rate=0.95, bar_ratio=0.95))
    return c


def tiny_random(family: str) -> ml_collections.ConfigDict:
    """A tiny random model built on the fly (smoke runs: its numbers only show the pipeline works)."""
    c = base_config()
    llama = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2)
    sizes = {"bloom": dict(hidden_size=64, n_layer=2, n_head=4), "llama": llama,
             # a window of 8 and two rotary embeddings, shorter than most sentences
             "gemma3_text": dict(llama, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                                 layer_types=["sliding_attention", "full_attention"])}[family]
    c.model.random = ml_collections.ConfigDict(dict(family=family, seed=0, vocab_size=512, **sizes))
    c.results_dir = f"results/tiny_{family}"
    c.corpus.n = 12
    c.ablation.text.kind = "bundled"
    c.ablation.seqlen = 64
    c.ablation.max_windows = 8
    c.steer.max_windows = 2  # the perplexity cost of each steering edit
    c.xstorycloze.limit = 8
    c.generation.max_new_tokens = 8
    c.steer.max_new_tokens = 8
    c.methods = "zscore,lape,ap,aprob"
    c.ap.top = c.ap.bottom = 5
    return c


def paper_model(hub_id: str, family: str, mesh: tuple[int, int] = (-1, 1), fsdp: bool = False
                ) -> ml_collections.ConfigDict:
    """One of the paper's models (or a later one) with the paper's protocol: FLORES-200 (100 sentences x 9
    languages), tau = 2, XL-Sum validation[:500] windows of 2048 (BLOOM) / 4096 (LLaMA-2, and every later
    family) tokens, bfloat16.

    `model.path` is the hub id (fetched into the Hugging Face cache, or found there when offline) or a
    local directory given on the command line; the data are read from the data directory, where
    `launch/fetch_data.py --config <this config>` puts them.
    """
    c = base_config()
    c.model.path = hub_id
    c.model.dtype = "bfloat16"
    c.model.mesh = mesh
    c.model.fsdp = fsdp
    c.corpus.kind = "flores"
    c.corpus.path = "@data/flores200_devtest"
    c.ablation.seqlen = 2048 if family == "bloom" else 4096
    c.results_dir = "results/" + hub_id.split("/")[-1]
    return c


def languages(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The analysed languages, `corpus.languages` ("en,zh" or a sequence)."""
    langs = config.corpus.languages
    return tuple(langs.split(",") if isinstance(langs, str) else langs)


def data_dir(config: ml_collections.ConfigDict | None = None) -> Path:
    """The data directory: `config.data_dir`, else $LINGUA_JAX_DATA_DIR, else ~/.cache/lingua_jax/data;
    absolute."""
    chosen = (config or {}).get("data_dir") or os.environ.get(DATA_DIR_VARIABLE) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().absolute()


def resolve_data_path(path: str, data: Path) -> str:
    """One data path setting, absolute: "@data/x" -> data/x; "" stays "" (not used)."""
    if not path:
        return ""
    if path.startswith(DATA_PREFIX):
        return str(data / path[len(DATA_PREFIX):])
    return str(Path(path).expanduser().absolute())


def resolve_model_path(path: str) -> str:
    """A model or tokenizer setting: "demo", "" and hub ids (org/name[@revision]) that are not local
    directories are kept; local paths become absolute."""
    if path in ("", "demo"):
        return path
    local = Path(path).expanduser()
    if hub.is_hub_id(path) and not local.exists():
        return path
    return str(local.absolute())


def resolve_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` whose path settings (results_dir, data_dir, model.path, tokenizer and the data
    paths) are absolute, `~` expanded and relative ones taken against the working directory now, so a
    run reads and writes the same places whatever happens later."""
    resolved = config.copy_and_resolve_references()
    data = data_dir(config)
    with resolved.unlocked():
        resolved.data_dir = str(data)
        resolved.results_dir = str(Path(config.results_dir).expanduser().absolute())
        resolved.model.path = resolve_model_path(config.model.path)
        resolved.tokenizer = resolve_model_path(config.get("tokenizer", ""))
        for name in DATA_PATHS:
            section, field = name.rsplit(".", 1)
            part = resolved
            for key in section.split("."):
                part = part[key]
            part[field] = resolve_data_path(part.get(field, ""), data)
    return resolved
