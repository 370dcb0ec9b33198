"""Tokenizers: train a small byte-level BPE (tests, toy models) and load saved ones, offline only."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

# Special tokens in id order: <pad> = 0, <s> = 1, </s> = 2, <unk> = 3.
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
BYTE_ALPHABET = 256


def train_bpe_tokenizer(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 2, add_bos: bool = True
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, wrapped as a transformers fast tokenizer.

    Every string is encodable (256 byte symbols, no unknowns). Special tokens <pad> <s> </s> <unk>
    take ids 0-3 and are set as pad/bos/eos/unk. With `add_bos`, `add_special_tokens=True` prepends
    <s> (as LLaMA does); otherwise it adds nothing (as BLOOM). Training is deterministic for the same
    texts and settings. The result can be `save_pretrained` and reloaded with `load_tokenizer`.
    """
    specials = list(SPECIAL_TOKENS.values())
    if vocab_size <= BYTE_ALPHABET + len(specials):
        raise ValueError(f"vocab_size {vocab_size} leaves no room for merges: it must exceed "
                         f"{BYTE_ALPHABET} bytes + {len(specials)} special tokens")
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    if add_bos:
        bos = SPECIAL_TOKENS["bos_token"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """`AutoTokenizer.from_pretrained` on a local folder: no download, no remote code."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {path}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        present = sorted(p.name for p in path.iterdir())
        raise FileNotFoundError(f"{path} has no tokenizer files (looked for {list(TOKENIZER_FILES)}); "
                                f"it has {present}")
    return AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
