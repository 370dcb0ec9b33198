"""Parallel corpora: n aligned sentences in each of L languages, and their loaders.

Sample order is language-major: sample k = l * n + i is sentence i in language l, so `lang[k] = l` and
`sem[k] = i` (METHOD.md: sample i of every language is a translation of the same text).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PAPER_LANGUAGES = ("en", "zh", "fr", "es", "pt", "ar", "vi", "hi", "id")
FLORES_CODES = {
    "en": "eng_Latn", "zh": "zho_Hans", "fr": "fra_Latn", "es": "spa_Latn", "pt": "por_Latn",
    "ar": "arb_Arab", "vi": "vie_Latn", "hi": "hin_Deva", "id": "ind_Latn",
}
NTREX_FILES = {
    "en": "newstest2019-src.eng.txt", "zh": "newstest2019-ref.zho-CN.txt",
    "fr": "newstest2019-ref.fra.txt", "es": "newstest2019-ref.spa.txt", "pt": "newstest2019-ref.por.txt",
    "ar": "newstest2019-ref.arb.txt", "vi": "newstest2019-ref.vie.txt", "hi": "newstest2019-ref.hin.txt",
    "id": "newstest2019-ref.ind.txt",
}
BUNDLED_DIR = Path(__file__).with_name("parallel_sample")


class ParallelCorpus:
    """n aligned sentences in each of L >= 2 languages.

    Built from {language code: [sentence, ...]}; every language must have the same number of
    sentences and none may be empty or whitespace only. `source_lines` int [n] are the line numbers
    (0-based) of the sentences in the source they were read from, kept through `select` so a report
    can say which sentences it used; `source` names that source.
    """

    def __init__(
        self,
        sentences: Mapping[str, Sequence[str]],
        source: str = "",
        source_lines: Sequence[int] | None = None,
    ):
        if len(sentences) < 2:
            raise ValueError(f"a parallel corpus needs at least 2 languages, got {list(sentences)}")
        counts = {code: len(lines) for code, lines in sentences.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"languages have different numbers of sentences: {counts}")
        if not any(counts.values()):
            raise ValueError(f"the corpus has no sentences: {counts}")
        for code, lines in sentences.items():
            for i, line in enumerate(lines):
                if not line.strip():
                    raise ValueError(
                        f"language {code!r}: sentence {i} (line {i + 1}) is empty or whitespace only"
                    )
        self.languages: tuple[str, ...] = tuple(sentences)
        self._sentences = {code: tuple(lines) for code, lines in sentences.items()}
        self.n: int = next(iter(counts.values()))
        self.source = source
        lines = np.arange(self.n) if source_lines is None else np.asarray(source_lines, dtype=np.int64)
        if lines.shape != (self.n,):
            raise ValueError(f"source_lines has shape {lines.shape}, expected ({self.n},)")
        self.source_lines: np.ndarray = lines

    def __repr__(self) -> str:
        return f"ParallelCorpus({self.n} sentences x {list(self.languages)}, source={self.source!r})"

    def __getitem__(self, language: str) -> tuple[str, ...]:
        """The n sentences of one language, in aligned order."""
        self._check_known([language])
        return self._sentences[language]

    @property
    def texts(self) -> list[str]:
        """All L * n sentences in (language, sentence) order."""
        return [text for code in self.languages for text in self._sentences[code]]

    @property
    def lang(self) -> np.ndarray:
        """int32 [L * n]: language index (into `languages`) of each sample."""
        return np.repeat(np.arange(len(self.languages), dtype=np.int32), self.n)

    @property
    def sem(self) -> np.ndarray:
        """int32 [L * n]: aligned sentence index of each sample."""
        return np.tile(np.arange(self.n, dtype=np.int32), len(self.languages))

    def select(self, n: int, seed: int) -> ParallelCorpus:
        """n sentences chosen at random without replacement (numpy PCG64 with `seed`), the same
        sentences in every language, kept in corpus order (the paper draws 100 random verses)."""
        if not 0 < n <= self.n:
            raise ValueError(f"cannot select {n} sentences from a corpus of {self.n}")
        chosen = np.sort(np.random.default_rng(seed).choice(self.n, size=n, replace=False))
        picked = {code: [lines[i] for i in chosen] for code, lines in self._sentences.items()}
        return ParallelCorpus(picked, source=f"{self.source} select(n={n}, seed={seed})",
                              source_lines=self.source_lines[chosen])

    def subset(self, languages: Sequence[str]) -> ParallelCorpus:
        """The same sentences in `languages` only, in the order given."""
        self._check_known(languages)
        return ParallelCorpus({code: self._sentences[code] for code in languages}, source=self.source,
                              source_lines=self.source_lines)

    def _check_known(self, languages: Sequence[str]) -> None:
        missing = [code for code in languages if code not in self._sentences]
        if missing:
            raise KeyError(f"languages {missing} are not in this corpus; it has {list(self.languages)}")


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file without their terminators (LF or CRLF; a BOM is dropped).

    Only newlines split: Unicode line separators inside a sentence stay part of it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    text = path.read_bytes().decode("utf-8-sig")  # no universal newlines: a lone \r stays text
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def load_line_aligned(
    directory: str | Path, files: Mapping[str, str], source: str | None = None
) -> ParallelCorpus:
    """One file per language in `directory`, one sentence per line, line i aligned across files.

    `files` maps a language code to its file name, e.g. {"en": "eng_Latn.devtest", ...}; `source`
    names the corpus in reports (default: the directory).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no such directory: {directory}")
    missing = [name for name in files.values() if not (directory / name).is_file()]
    if missing:
        present = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(f"{directory} has no file(s) {missing}; it has {present}")
    sentences = {code: read_lines(directory / name) for code, name in files.items()}
    return ParallelCorpus(sentences, source=str(directory) if source is None else source)


def load_flores(
    directory: str | Path, languages: Sequence[str] = PAPER_LANGUAGES, split: str = "devtest"
) -> ParallelCorpus:
    """FLORES-200 layout: files `<flores code>.<split>` (e.g. eng_Latn.devtest).

    `languages` are paper codes (mapped with FLORES_CODES) or FLORES codes, which are kept as given.
    """
    files = {code: f"{FLORES_CODES.get(code, code)}.{split}" for code in languages}
    return load_line_aligned(directory, files)


def load_ntrex(directory: str | Path, languages: Sequence[str] = PAPER_LANGUAGES) -> ParallelCorpus:
    """NTREX-128 layout: newstest2019-src.eng.txt and newstest2019-ref.<code>.txt (NTREX_FILES)."""
    unknown = [code for code in languages if code not in NTREX_FILES]
    if unknown:
        raise KeyError(f"no NTREX file known for {unknown}; known: {sorted(NTREX_FILES)} "
                       "(use load_line_aligned with an explicit mapping)")
    return load_line_aligned(directory, {code: NTREX_FILES[code] for code in languages})


def bundled_sample(languages: Sequence[str] = PAPER_LANGUAGES) -> ParallelCorpus:
    """The small original parallel sample shipped in lingua_jax/data/parallel_sample (CC0)."""
    files = {code: f"{code}.txt" for code in languages}
    return load_line_aligned(BUNDLED_DIR, files, source="lingua_jax bundled parallel sample")


def load_table(path: str | Path, languages: Sequence[str] | None = None) -> ParallelCorpus:
    """A TSV (header row of language codes, no quoting) or JSONL (one object per line, one key per
    language) file; row i holds sentence i in every language. `languages` picks columns/keys
    (default: all of the TSV header, or all keys of the first JSONL record)."""
    path = Path(path)
    if path.suffix == ".tsv":
        header, rows = read_tsv(path)
    elif path.suffix == ".jsonl":
        rows = [json.loads(line) for line in read_lines(path) if line.strip()]
        header = list(rows[0]) if rows else []
    else:
        raise ValueError(f"{path}: expected a .tsv or .jsonl file")
    languages = list(header if languages is None else languages)
    absent = [code for code in languages if code not in header]
    if absent:
        raise KeyError(f"{path} has no column(s) {absent}; it has {header}")
    for i, row in enumerate(rows):
        lacking = [code for code in languages if not isinstance(row.get(code), str)]
        if lacking:
            raise ValueError(f"{path}: record {i} has no text for {lacking}")
    return ParallelCorpus({code: [row[code] for row in rows] for code in languages}, source=str(path))


def read_tsv(path: str | Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header and rows of a tab-separated file read verbatim (quotes are text, not quoting)."""
    lines = read_lines(path)
    if not lines:
        raise ValueError(f"{path} is empty")
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = rows[0]
    for i, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise ValueError(f"{path}: line {i} has {len(row)} fields, the header has {len(header)}")
    return header, [dict(zip(header, row)) for row in rows[1:]]


def hub_dataset(repo: str, *args: Any, **kwargs: Any) -> Any:
    """`datasets.load_dataset(repo, *args, **kwargs)` with clear errors when `datasets` is missing or
    the Hub can't be reached (these loaders need a network; offline, use the local-file loaders)."""
    try:
        import datasets  # noqa: PLC0415 (optional dependency)
    except ImportError as err:
        raise ImportError(
            f"loading {repo!r} from the Hugging Face Hub needs the `datasets` package "
            "(pip install datasets) and network access; offline, use the local-file loaders"
        ) from err
    try:
        return datasets.load_dataset(repo, *args, **kwargs)
    except Exception as err:  # network, gating, removed scripts: all surface the same way
        raise RuntimeError(
            f"could not load {repo!r} {args} {kwargs} from the Hugging Face Hub (is the network "
            f"reachable, and access to the repo granted?): {type(err).__name__}: {err}"
        ) from err


def load_hub_flores(
    languages: Sequence[str] = PAPER_LANGUAGES,
    split: str = "devtest",
    repo: str = "facebook/flores",
    field: str = "sentence",
) -> ParallelCorpus:
    """FLORES-200 from the Hub, one config per FLORES code (network, `datasets`; the repo is gated)."""
    sentences = {
        code: list(hub_dataset(repo, FLORES_CODES.get(code, code), split=split)[field]) for code in languages
    }
    return ParallelCorpus(sentences, source=f"hf:{repo}/{split}")


def load_hub_bible(
    languages: Sequence[str] = PAPER_LANGUAGES,
    pivot: str = "en",
    repo: str = "Helsinki-NLP/bible_para",
    trust_remote_code: bool = False,
) -> ParallelCorpus:
    """bible_para (Christodouloupoulos & Steedman 2015) as the paper uses it: pairs with `pivot`.

    The Hub holds one bitext per pair (config `<a>-<b>`, codes in alphabetical order), each dropping
    verses missing on either side, so row i of two pairs need not be the same verse. Verses are
    therefore aligned through the pivot text: a pivot verse is kept when it occurs exactly once in
    every pair with a non-blank translation, in the order of the first pair. bible_para is a
    script-based dataset: it needs `datasets` < 4 and `trust_remote_code=True`, which runs the
    repo's loading script; that is the caller's decision, so it is off by default.
    """
    if pivot not in languages:
        raise ValueError(f"the pivot language {pivot!r} must be one of the languages {list(languages)}")
    others = [code for code in languages if code != pivot]
    if not others:
        raise ValueError("bible_para needs at least one language besides the pivot")
    tables = [_pivot_table(repo, pivot, code, trust_remote_code) for code in others]
    order = [text for text in tables[0] if all(text in table for table in tables[1:])]
    sentences = {pivot: order} | {code: [t[text] for text in order] for code, t in zip(others, tables)}
    return ParallelCorpus({code: sentences[code] for code in languages}, source=f"hf:{repo} via {pivot}")


def _pivot_table(repo: str, pivot: str, other: str, trust_remote_code: bool) -> dict[str, str]:
    """{pivot verse: other verse} for one bible_para pair, dropping blank and repeated pivot verses."""
    lang1, lang2 = sorted((pivot, other))
    rows = hub_dataset(repo, lang1=lang1, lang2=lang2, split="train", trust_remote_code=trust_remote_code)
    pairs = [(row["translation"][pivot], row["translation"][other]) for row in rows]
    seen: dict[str, int] = {}
    for text, _ in pairs:
        seen[text] = seen.get(text, 0) + 1
    return {a: b for a, b in pairs if seen[a] == 1 and a.strip() and b.strip()}
