"""The defaults every experiment config starts from (see configs/*.py for the run commands)."""

from __future__ import annotations

import ml_collections

from lingua_jax.data import PAPER_LANGUAGES


def base_config() -> ml_collections.ConfigDict:
    """Every setting the analysis reads, with the paper's protocol as default where it has one."""
    c = ml_collections.ConfigDict()
    c.results_dir = "results/run"
    c.stages = "extract,metrics,regions,ablation,xstorycloze,generation,compare,report"
    c.model = ml_collections.ConfigDict(dict(path="demo", dtype="float32", mesh=(), fsdp=False))
    c.model.random = ml_collections.ConfigDict()  # set fields (family, hidden_size, ...) for a random model
    c.tokenizer = ""  # default: the model directory's tokenizer
    c.corpus = ml_collections.ConfigDict(dict(kind="bundled", path="", languages=",".join(PAPER_LANGUAGES),
                                              n=100, seed=0))
    # pack: several sentences per row, each attending only to itself (same numbers, ~5x faster on CPU);
    # batch_size is then rows per batch
    c.extract = ml_collections.ConfigDict(dict(batch_size=16, add_special_tokens=False, max_length=256, pack=True))
    c.regions = ml_collections.ConfigDict(dict(threshold=2.0))
    c.ablation = ml_collections.ConfigDict(dict(
        text=ml_collections.ConfigDict(dict(kind="xlsum", path="@data/xlsum_sample", split="validation",
                                            limit=500)),
        seqlen=2048, max_windows=0, batch_size=8, random_fraction=ml_collections.FieldReference(None, float),
        seed=0))
    c.xstorycloze = ml_collections.ConfigDict(dict(kind="tsv", path="@data/xstorycloze",
                                                   languages=("en", "zh", "es", "ar", "hi", "id"), limit=0,
                                                   batch_size=8))
    c.generation = ml_collections.ConfigDict(dict(prompts_per_language=2, max_new_tokens=64))
    c.methods = "zscore"  # "zscore,lape" adds the comparison with LAPE (Tang et al., 2024)
    c.lape = ml_collections.ConfigDict(dict(top_rate=0.01, filter_rate=0.95, bar_ratio=0.95))
    return c


def tiny_random(family: str) -> ml_collections.ConfigDict:
    """A tiny random model built on the fly (smoke runs: its numbers only show the pipeline works)."""
    c = base_config()
    sizes = {"bloom": dict(hidden_size=64, n_layer=2, n_head=4),
             "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2)}[family]
    c.model.random = ml_collections.ConfigDict(dict(family=family, seed=0, vocab_size=512, **sizes))
    c.results_dir = f"results/tiny_{family}"
    c.corpus.n = 12
    c.ablation.text.kind = "bundled"
    c.ablation.seqlen = 64
    c.xstorycloze.limit = 8
    c.generation.max_new_tokens = 8
    return c


def paper_model(hub_id: str, family: str, mesh: tuple[int, int] = (-1, 1), fsdp: bool = False
                ) -> ml_collections.ConfigDict:
    """One of the paper's models with the paper's protocol: FLORES-200 (100 sentences x 9 languages),
    tau = 2, XL-Sum validation[:500] windows of 2048 (BLOOM) / 4096 (LLaMA-2) tokens, bfloat16.

    `model.path` is the hub id (downloaded when online) or a local directory given on the command line.
    """
    c = base_config()
    c.model.path = hub_id
    c.model.revision = ""
    c.model.dtype = "bfloat16"
    c.model.mesh = mesh
    c.model.fsdp = fsdp
    c.corpus.kind = "flores"
    c.corpus.path = "@data/flores200_devtest"
    c.ablation.seqlen = {"bloom": 2048, "llama": 4096}[family]
    c.results_dir = "results/" + hub_id.split("/")[-1]
    return c
