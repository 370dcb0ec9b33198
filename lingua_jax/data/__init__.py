"""Parallel corpora, evaluation text, tokenization and bucketing."""
