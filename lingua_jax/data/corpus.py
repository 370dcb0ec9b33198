"""Parallel corpora: n aligned sentences in each of L languages, and their loaders.

Sample order is language-major: sample k = l * n + i is sentence i in language l, so `lang[k] = l` and
`sem[k] = i` (METHOD.md: sample i of every language is a translation of the same text).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

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
# The Bible corpus of Christodouloupoulos & Steedman (2015): one CES XML file per language.
BIBLE_FILES = {
    "en": "English.xml", "zh": "Chinese.xml", "fr": "French.xml", "es": "Spanish.xml", "pt": "Portuguese.xml",
    "ar": "Arabic.xml", "vi": "Vietnamese.xml", "hi": "Hindi.xml", "id": "Indonesian.xml",
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


def load_bible(directory: str | Path, languages: Sequence[str] = PAPER_LANGUAGES) -> ParallelCorpus:
    """The Bible corpus of Christodouloupoulos & Steedman (2015), the paper's activation corpus, from its
    CES XML files in `directory` (BIBLE_FILES; github.com/christos-c/bible-corpus, `bibles/`): the
    verses (`<seg id="b.GEN.1.1" type="verse">`) that every language has and none leaves blank,
    aligned by verse id, in the order of the first language's file; whitespace inside a verse is
    collapsed to single spaces."""
    from xml.etree import ElementTree

    directory = Path(directory)
    unknown = [code for code in languages if code not in BIBLE_FILES]
    if unknown:
        raise KeyError(f"no Bible file known for {unknown}; known: {sorted(BIBLE_FILES)}")
    verses: dict[str, dict[str, str]] = {}
    for code in languages:
        path = directory / BIBLE_FILES[code]
        if not path.is_file():
            raise FileNotFoundError(f"no Bible file {path} for {code!r}")
        try:
            segments = [element for _, element in ElementTree.iterparse(path) if element.tag == "seg"]
        except ElementTree.ParseError as e:
            raise ValueError(f"{path} is not valid XML ({e}): damaged or truncated?") from e
        verses[code] = {seg.get("id"): " ".join("".join(seg.itertext()).split()) for seg in segments}
        if not verses[code]:
            raise ValueError(f"{path} has no <seg> verses: not a bible-corpus XML file")
    first = verses[languages[0]]
    ids = [v for v in first if all(verses[code].get(v) for code in languages)]
    return ParallelCorpus({code: [verses[code][v] for v in ids] for code in languages},
                          source=f"Bible corpus {directory}")
