"""XL-Sum articles for the perplexity protocol (METHOD.md): per language, `validation[:500]`, field
`text`, documents joined with "\\n\\n" before tokenizing once."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from lingua_jax.data.corpus import PAPER_LANGUAGES, read_lines

XLSUM_NAMES = {
    "en": "english", "zh": "chinese_simplified", "fr": "french", "es": "spanish", "pt": "portuguese",
    "ar": "arabic", "vi": "vietnamese", "hi": "hindi", "id": "indonesian",
}
# split name -> (file suffix of the JSONL release, split name on the Hub)
SPLITS = {
    "train": ("train", "train"), "validation": ("val", "validation"), "val": ("val", "validation"),
    "test": ("test", "test"),
}
DOCUMENT_SEPARATOR = "\n\n"


def xlsum_name(language: str) -> str:
    """The XL-Sum language name for a paper code (en -> english); other names are kept as given."""
    return XLSUM_NAMES.get(language, language)


def _split(split: str) -> tuple[str, str]:
    if split not in SPLITS:
        raise ValueError(f"unknown XL-Sum split {split!r}; expected one of {sorted(SPLITS)}")
    return SPLITS[split]


def load_xlsum_jsonl(
    directory: str | Path,
    languages: Sequence[str] = PAPER_LANGUAGES,
    split: str = "validation",
    limit: int | None = 500,
    field: str = "text",
) -> dict[str, list[str]]:
    """{language: [document, ...]} from the XL-Sum release layout `<name>_<train|val|test>.jsonl`
    (keys id, url, title, summary, text): the first `limit` records' `field`, in file order.

    `languages` are paper codes (mapped with XLSUM_NAMES) or XL-Sum names; the result is keyed by
    them as given.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    suffix = f"_{_split(split)[0]}.jsonl"
    documents = {}
    for language in languages:
        path = directory / f"{xlsum_name(language)}{suffix}"
        if not path.is_file():
            available = sorted(p.name.removesuffix(suffix) for p in directory.glob(f"*{suffix}"))
            raise FileNotFoundError(
                f"no XL-Sum file {path} for {language!r}; {split} files exist for {available}"
            )
        documents[language] = _jsonl_field(path, field)[:limit]
    return documents


def _jsonl_field(path: Path, field: str) -> list[str]:
    """`field` of every record of a JSONL file, with an error naming the file and line if absent."""
    values = []
    for i, line in enumerate(read_lines(path)):
        if line.strip():
            record = json.loads(line)
            if field not in record:
                raise KeyError(f"{path}: line {i} has no field {field!r}; it has {sorted(record)}")
            values.append(record[field])
    if not values:
        raise ValueError(f"{path} has no records")
    return values


def load_text_documents(directory: str | Path, files: Mapping[str, str]) -> dict[str, list[str]]:
    """{language: [document, ...]} from plain UTF-8 text files, one document per non-blank line.

    `files` maps a language code to its file name in `directory`.
    """
    directory = Path(directory)
    documents = {}
    for language, name in files.items():
        documents[language] = [line for line in read_lines(directory / name) if line.strip()]
        if not documents[language]:
            raise ValueError(f"{directory / name} has no text")
    return documents


def join_documents(
    documents: Mapping[str, Sequence[str]], separator: str = DOCUMENT_SEPARATOR
) -> dict[str, str]:
    """{language: one text}: each language's documents joined with "\\n\\n", to be tokenized once."""
    return {language: separator.join(docs) for language, docs in documents.items()}
