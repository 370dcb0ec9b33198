"""Everything a config reads from the network, fetched ahead of time: its data into the local layouts
under the data directory (where the file loaders read them), hub data and the model into the Hugging
Face cache. Run it where there is a network; the analysis can then run where there is none (pod
workers, with the data directory and HF_HOME on storage they see)."""

from __future__ import annotations

from pathlib import Path

import ml_collections
from absl import logging

from lingua_jax import checkpoints, config as config_lib
from lingua_jax.data import FLORES_CODES, remote


def fetch(config: ml_collections.ConfigDict, model: bool = True) -> list[str]:
    """Fetch what `config` reads (the model too when `model`); returns one line per item done."""
    c = config_lib.resolve_paths(config)
    languages = config_lib.languages(c)
    done = []

    def did(what: str, where: Path | str) -> None:
        logging.info("%s: %s", what, where)
        done.append(f"{what}: {where}")

    corpus = c.corpus
    if corpus.kind == "flores":
        found = remote.load_hub_flores(languages)
        files = {lang: f"{FLORES_CODES.get(lang, lang)}.devtest" for lang in languages}
        remote.write_line_aligned(found, Path(corpus.path), files)
        did(f"FLORES+ devtest ({found.n} sentences x {len(languages)} languages, {found.source})", corpus.path)
    elif corpus.kind == "bible":
        remote.fetch_bible(languages, Path(corpus.path))
        did(f"Bible corpus ({len(languages)} languages)", corpus.path)
    elif corpus.kind == "hub_flores":
        did("FLORES+ devtest in the Hugging Face cache", remote.load_hub_flores(languages).source)
    text = c.ablation.text
    if text.kind == "xlsum":
        records = remote.xlsum_records(languages, text.split)
        remote.write_xlsum_jsonl(records, Path(text.path), text.split)
        did(f"XL-Sum {text.split} ({sum(map(len, records.values()))} articles)", text.path)
    elif text.kind == "hub_xlsum":
        remote.xlsum_records(languages, text.split)
        did(f"XL-Sum {text.split} in the Hugging Face cache", remote.XLSUM)
    stories = c.xstorycloze
    story_languages = [lang for lang in languages if lang in stories.languages]
    if stories.kind == "tsv" and story_languages:
        remote.copy_xstorycloze(story_languages, Path(stories.path))
        did(f"XStoryCloze ({', '.join(dict.fromkeys([*story_languages, 'en']))})", stories.path)
    elif stories.kind == "hub" and story_languages:
        did("XStoryCloze in the Hugging Face cache", remote.xstorycloze_files(story_languages))
    if model and not c.model.get("random"):
        source = checkpoints.resolve_model(c.model.path, c.model.get("revision", ""))
        did(f"model {source.hub_id or 'directory'} {source.commit or ''}".rstrip(), source.path)
    if c.get("tokenizer"):
        did("tokenizer", checkpoints.resolve_model(c.tokenizer, weights=False).path)
    return done
