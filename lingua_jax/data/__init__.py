"""Parallel corpora, evaluation text, tokenization and bucketing."""

from lingua_jax.data.batching import (
    Batch,
    Batches,
    batch_texts,
    bucket_sizes,
    make_batches,
    tokenize_each,
    windows,
)
from lingua_jax.data.corpus import (
    FLORES_CODES,
    NTREX_FILES,
    PAPER_LANGUAGES,
    ParallelCorpus,
    bundled_sample,
    load_bible,
    load_flores,
    load_line_aligned,
    load_ntrex,
    load_table,
)
from lingua_jax.data.tokenization import load_tokenizer, train_bpe_tokenizer
from lingua_jax.data.xlsum import (
    XLSUM_NAMES,
    join_documents,
    load_text_documents,
    load_xlsum_jsonl,
)
from lingua_jax.data.remote import load_hub_flores, load_hub_xlsum, load_hub_xstorycloze
from lingua_jax.data.xstorycloze import Story, cross_lingual_prompt, load_xstorycloze

__all__ = [
    "Batch", "Batches", "batch_texts", "bucket_sizes", "make_batches", "tokenize_each", "windows",
    "FLORES_CODES", "NTREX_FILES", "PAPER_LANGUAGES", "ParallelCorpus", "bundled_sample", "load_bible",
    "load_flores", "load_hub_flores", "load_line_aligned", "load_ntrex", "load_table",
    "load_tokenizer", "train_bpe_tokenizer",
    "XLSUM_NAMES", "join_documents", "load_hub_xlsum", "load_text_documents", "load_xlsum_jsonl",
    "Story", "cross_lingual_prompt", "load_hub_xstorycloze", "load_xstorycloze",
]
