"""Evaluation data that lives on the Hugging Face Hub (and the Bible corpus, on GitHub): where each set
is, reading it from a snapshot in the HF cache, and writing it into the local layouts the file loaders
read, so pods whose workers have no network can read it from a data directory.

The Hub layouts (checked 2026-12-01; `datasets` 4 no longer runs loading scripts, so nothing here does):
- FLORES+ (openlanguagedata/flores_plus, gated: accept its terms and set HF_TOKEN): one file per
  language and split, `<split>/<code>.jsonl` (earlier revisions: `.parquet`), records with `id` and
  `text`; Mandarin is `cmn_Hans` there (`zho_Hans` in FLORES-200).
- XL-Sum (csebuetnlp/xlsum): a loading-script repo; the Hub's parquet export, revision
  `refs/convert/parquet`, holds `<name>/<split>/0000.parquet` (id, url, title, summary, text).
- XStoryCloze (juletxara/xstory_cloze): the TSV release files at the repo's root,
  `spring2016.val.<lang>.tsv.split_20_80_<train|eval>.tsv`, the same files `load_xstorycloze` reads.
- The Bible corpus (Christodouloupoulos & Steedman 2015): the Hub's bible_para is a loading script that
  downloads OPUS bitexts, and its parquet export covers only de-en, en-fr, en-es, en-fi, en-no and
  en-hi. Its source, github.com/christos-c/bible-corpus (CC0), has one verse-numbered XML file per
  language; `fetch_bible` downloads those (pinned to a commit) for `corpus.load_bible`.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lingua_jax import hub
from lingua_jax.data.corpus import BIBLE_FILES, FLORES_CODES, PAPER_LANGUAGES, ParallelCorpus
from lingua_jax.data.xlsum import SPLITS, xlsum_name
from lingua_jax.data.xstorycloze import TSV_PATTERN, Story, load_xstorycloze
from lingua_jax.io import write_atomic

FLORES_PLUS = "openlanguagedata/flores_plus"
FLORES_PLUS_CODES = {**FLORES_CODES, "zh": "cmn_Hans"}
XLSUM = "csebuetnlp/xlsum"
XLSUM_PARQUET = "refs/convert/parquet"
XSTORYCLOZE = "juletxara/xstory_cloze"
BIBLE_URL = ("https://raw.githubusercontent.com/christos-c/bible-corpus/"
             "44e5fca1bfb369a5da2ee23ebc6f421c88489c5c/bibles/{name}")


def read_records(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The records of a .jsonl or .parquet file (parquet: only `columns`, when given)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq
        return pq.read_table(path, columns=list(columns) if columns else None).to_pylist()
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    raise ValueError(f"{path}: expected a .jsonl or .parquet file")


# --- FLORES+ -------------------------------------------------------------------------------------------

def load_hub_flores(languages: Sequence[str] = PAPER_LANGUAGES, split: str = "devtest",
                    revision: str = "") -> ParallelCorpus:
    """FLORES+ `split` ("dev" or "devtest") from the Hub: the sentences every language has, aligned by
    their `id`, in id order. `languages` are paper codes (mapped with FLORES_PLUS_CODES) or FLORES+
    codes."""
    codes = {lang: FLORES_PLUS_CODES.get(lang, lang) for lang in languages}
    found = hub.snapshot(FLORES_PLUS, revision, [f"{split}/{code}.*" for code in codes.values()], "dataset")
    by_id = {}
    for lang, code in codes.items():
        files = sorted(f for f in (found.path / split).glob(f"{code}.*") if f.suffix in (".jsonl", ".parquet"))
        if not files:
            raise FileNotFoundError(f"FLORES+ at commit {found.commit} has no {split}/{code}.jsonl or .parquet "
                                    f"(language {lang!r}); its folder is {found.path / split}")
        records = read_records(files[0], ["id", "text"])
        if records and not {"id", "text"} <= set(records[0]):
            raise KeyError(f"{files[0]}: records have fields {sorted(records[0])}, expected 'id' and 'text'")
        by_id[lang] = {record["id"]: record["text"] for record in records}
    ids = sorted(set.intersection(*(set(texts) for texts in by_id.values())))
    return ParallelCorpus({lang: [by_id[lang][i] for i in ids] for lang in languages},
                          source=f"hf:{FLORES_PLUS}@{found.commit}/{split}")


def write_line_aligned(corpus: ParallelCorpus, directory: Path, files: Mapping[str, str]) -> list[Path]:
    """Each language's sentences as one line each into `directory`/files[language] (the layout of
    `load_line_aligned`), atomically."""
    written = []
    for lang in corpus.languages:
        lines = corpus[lang]
        broken = [i for i, line in enumerate(lines) if "\n" in line or "\r" in line]
        if broken:
            raise ValueError(f"{corpus.source}: sentence {broken[0]} of {lang!r} spans several lines")
        written.append(write_atomic(directory / files[lang], "".join(f"{line}\n" for line in lines)))
    return written


# --- XL-Sum --------------------------------------------------------------------------------------------

def xlsum_records(languages: Sequence[str] = PAPER_LANGUAGES, split: str = "validation",
                  revision: str = XLSUM_PARQUET) -> dict[str, list[dict[str, Any]]]:
    """{language: every record of its XL-Sum `split`} from the Hub's parquet export, in file order."""
    hub_split = SPLITS[split][1] if split in SPLITS else split
    names = {lang: xlsum_name(lang) for lang in languages}
    found = hub.snapshot(XLSUM, revision, [f"{name}/{hub_split}/*.parquet" for name in names.values()], "dataset")
    records = {}
    for lang, name in names.items():
        files = sorted((found.path / name / hub_split).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"XL-Sum at commit {found.commit} has no {name}/{hub_split}/*.parquet "
                                    f"(language {lang!r}); its folder is {found.path}")
        records[lang] = [record for file in files for record in read_records(file)]
    return records


def load_hub_xlsum(languages: Sequence[str] = PAPER_LANGUAGES, split: str = "validation",
                   limit: int | None = 500, field: str = "text", revision: str = XLSUM_PARQUET
                   ) -> dict[str, list[str]]:
    """As `xlsum.load_xlsum_jsonl`, from the Hub's parquet export: the first `limit` records' `field`."""
    return {lang: [record[field] for record in records[:limit]]
            for lang, records in xlsum_records(languages, split, revision).items()}


def write_xlsum_jsonl(records: Mapping[str, Sequence[Mapping[str, Any]]], directory: Path, split: str
                      ) -> list[Path]:
    """`records` into the XL-Sum release layout `<name>_<train|val|test>.jsonl` that
    `xlsum.load_xlsum_jsonl` reads, atomically."""
    suffix = SPLITS[split][0]
    return [write_atomic(directory / f"{xlsum_name(lang)}_{suffix}.jsonl",
                         "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            for lang, rows in records.items()]


# --- XStoryCloze ---------------------------------------------------------------------------------------

def xstorycloze_files(languages: Sequence[str], revision: str = "") -> Path:
    """The folder (in the HF cache) holding the XStoryCloze eval TSVs of `languages` and English."""
    names = [TSV_PATTERN.format(language=lang) for lang in dict.fromkeys([*languages, "en"])]
    return hub.snapshot(XSTORYCLOZE, revision, names, "dataset").path


def load_hub_xstorycloze(language: str, revision: str = "") -> list[Story]:
    """As `xstorycloze.load_xstorycloze`, from the TSV release files on the Hub."""
    return load_xstorycloze(xstorycloze_files([language], revision), language)


def copy_xstorycloze(languages: Sequence[str], directory: Path, revision: str = "") -> list[Path]:
    """The XStoryCloze eval TSVs of `languages` and English, copied from the Hub into `directory`."""
    source = xstorycloze_files(languages, revision)
    written = []
    for lang in dict.fromkeys([*languages, "en"]):
        name = TSV_PATTERN.format(language=lang)
        if not (source / name).is_file():
            raise FileNotFoundError(f"XStoryCloze on the Hub has no {name} (language {lang!r})")
        written.append(write_atomic(directory / name, (source / name).read_bytes()))
    return written


# --- the Bible corpus ----------------------------------------------------------------------------------

def fetch_bible(languages: Sequence[str], directory: Path, url: str = BIBLE_URL) -> list[Path]:
    """Download the Bible XML files of `languages` (BIBLE_FILES) from github.com/christos-c/bible-corpus
    into `directory`; files already there are kept."""
    written = []
    for lang in languages:
        if lang not in BIBLE_FILES:
            raise KeyError(f"no Bible file known for {lang!r}; known: {sorted(BIBLE_FILES)}")
        target = directory / BIBLE_FILES[lang]
        if not target.is_file():
            address = url.format(name=BIBLE_FILES[lang])
            try:
                with urllib.request.urlopen(address, timeout=60) as response:
                    write_atomic(target, lambda f, r=response: shutil.copyfileobj(r, f))
            except OSError as e:
                raise ConnectionError(f"could not download {address} ({e}): download it by hand into "
                                      f"{directory}") from e
        written.append(target)
    return written
