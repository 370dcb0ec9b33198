"""Hub ids and hub data sets through huggingface_hub's real offline resolution: a Hugging Face cache
filled in its documented layout (`<type>s--org--name/refs/<revision>`, `snapshots/<commit>/...`, files
linked to `blobs/`), HF_HOME pointing at it and HF_HUB_OFFLINE=1, then the entry points as a user runs
them."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lingua_jax import checkpoints, config as config_lib, data, extract
from lingua_jax.data import corpus as corpus_lib, remote, xstorycloze

REPO = Path(__file__).resolve().parents[1]
VOCAB = 320
MAIN, OLD, FLORES_COMMIT, XLSUM_COMMIT, STORIES_COMMIT = (c * 40 for c in "abcde")
LANGUAGES = ("en", "zh", "fr", "es", "ar", "hi")  # six: z can exceed tau = 2 (max z is sqrt(L - 1))


def fill_cache(hf_home: Path, repo_id: str, commit: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",),
               repo_type: str = "model") -> Path:
    """Put `files` {path in repo: content} into the HF cache under HF_HOME as huggingface_hub lays it
    out: content in blobs/<sha256>, snapshots/<commit>/<path> a relative symlink to it, and each ref
    (branch, tag, or refs/convert/parquet) a file refs/<ref> holding the commit."""
    repo = hf_home / "hub" / f"{repo_type}s--{repo_id.replace('/', '--')}"
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (repo / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo / "snapshots" / commit


def folder_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, checkpoint):
    """An HF cache holding a tiny BLOOM (with a tokenizer) as bigscience/bloom-560m: main -> MAIN, the
    tag global_step1000 -> OLD (other weights)."""
    home = tmp_path_factory.mktemp("hf_home")
    tokenizer = data.train_bpe_tokenizer(data.bundled_sample().texts, VOCAB)
    for commit, seed, refs in ((MAIN, "bloom", ("main",)), (OLD, "bloom_mesh", ("global_step1000",))):
        folder = tmp_path_factory.mktemp(f"ckpt_{seed}")
        shutil.copytree(checkpoint(seed, VOCAB), folder, dirs_exist_ok=True)
        tokenizer.save_pretrained(folder)
        fill_cache(home, "bigscience/bloom-560m", commit, folder_files(folder), refs)
    return home


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A data directory holding FLORES-layout files for six languages only (12 bundled sentences each)."""
    root = tmp_path_factory.mktemp("data")
    sample = data.bundled_sample()
    (root / "flores200_devtest").mkdir()
    for code in LANGUAGES:
        lines = sample[code][:12]
        (root / "flores200_devtest" / f"{corpus_lib.FLORES_CODES[code]}.devtest").write_text("\n".join(lines) + "\n")
    return root


def offline(hf_home: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", **extra}


def run(script: str, *flags: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "launch" / script), *flags], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=600)


def analyze_paper_config(results: Path, data_dir: Path, hf_home: Path, *flags: str) -> subprocess.CompletedProcess:
    return run("analyze.py", "--config", str(REPO / "configs" / "bloom_560m.py"), f"--data_dir={data_dir}",
               f"--config.results_dir={results}", f"--config.corpus.languages={','.join(LANGUAGES)}",
               "--config.corpus.n=8", *flags, env=offline(hf_home))


def test_paper_config_runs_from_the_offline_cache(hf_home, data_dir, tmp_path):
    """configs/bloom_560m.py as written (hub id, bfloat16, mesh (-1, 1) over 8 devices, FLORES from the
    data directory), offline: extract, metrics and regions run, and the report names the commit."""
    done = analyze_paper_config(tmp_path / "main", data_dir, hf_home, "--stages=extract,metrics,regions,report")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (tmp_path / "main" / "report" / "summary.md").read_text()
    assert "| model | bigscience/bloom-560m |" in summary and "| revision | main |" in summary
    assert f"| commit | {MAIN} |" in summary and "LRDS" in summary and "SKLR" in summary
    stored = extract.load(tmp_path / "main" / "extract")
    assert stored.metadata["model"]["commit"] == MAIN and stored.acts.shape[0] == 6 * 8
    assert stored.languages == LANGUAGES

    pinned = analyze_paper_config(tmp_path / "old", data_dir, hf_home, "--stages=extract",
                                  "--config.model.path=bigscience/bloom-560m@global_step1000")
    assert pinned.returncode == 0, pinned.stderr[-3000:]
    old = extract.load(tmp_path / "old" / "extract")
    assert old.metadata["model"]["commit"] == OLD and old.metadata["model"]["revision"] == "global_step1000"
    assert old.acts.shape[1:] != stored.acts.shape[1:]  # the tag's snapshot holds the other model

    by_field = analyze_paper_config(tmp_path / "field", data_dir, hf_home, "--stages=extract",
                                    "--config.model.revision=global_step1000")
    assert by_field.returncode == 0, by_field.stderr[-3000:]
    np.testing.assert_array_equal(extract.load(tmp_path / "field" / "extract").acts, old.acts)


def test_a_model_not_in_the_cache_says_what_to_download(hf_home, data_dir, tmp_path):
    failed = run("analyze.py", "--config", str(REPO / "configs" / "bloom_1b1.py"), f"--data_dir={data_dir}",
                 f"--config.results_dir={tmp_path}", env=offline(hf_home))
    assert failed.returncode != 0
    assert "model 'bigscience/bloom-1b1' is not (completely) in the Hugging Face cache" in failed.stderr
    assert f"{hf_home / 'hub'}" in failed.stderr and "HF_HUB_OFFLINE is set" in failed.stderr
    assert "hf download bigscience/bloom-1b1" in failed.stderr
    unknown_tag = run("analyze.py", "--config", str(REPO / "configs" / "bloom_560m.py"), f"--data_dir={data_dir}",
                      f"--config.results_dir={tmp_path}", "--config.model.path=bigscience/bloom-560m@step9",
                      env=offline(hf_home))
    assert "at revision 'step9' is not (completely) in the Hugging Face cache" in unknown_tag.stderr


def test_conflicting_revisions_and_local_revisions_are_errors(tmp_path):
    with pytest.raises(ValueError, match="names revision 'a' but model.revision is 'b'"):
        checkpoints.resolve_model("org/name@a", revision="b")
    (tmp_path / "local").mkdir()
    with pytest.raises(ValueError, match="revisions apply to hub ids only"):
        checkpoints.resolve_model(str(tmp_path / "local"), revision="main")
    with pytest.raises(FileNotFoundError, match=r"'\./not/here/either' does not exist"):
        checkpoints.resolve_model("./not/here/either")


# --- data sets ---------------------------------------------------------------------------------------

def parquet_bytes(records: list[dict]) -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buffer)
    return buffer.getvalue()


def jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


STORY_HEADER = "\t".join(xstorycloze.TSV_HEADER)


def story_tsv(lang: str, ids: list[str]) -> bytes:
    rows = [f"{i}\t{lang} one {i}.\t{lang} two.\t{lang} three.\t{lang} four.\t{lang} end A.\t{lang} end B.\t"
            f"{1 + k % 2}" for k, i in enumerate(ids)]
    return ("\n".join([STORY_HEADER, *rows]) + "\n").encode()


@pytest.fixture(scope="module")
def dataset_cache(tmp_path_factory):
    """FLORES+, XL-Sum and XStoryCloze in the HF cache, in the layouts remote.py describes: FLORES+
    jsonl (English, Mandarin as cmn_Hans) and parquet (Arabic, an older revision's format), records in
    shuffled id order and one id only English has; XL-Sum's parquet export under
    refs/convert/parquet; XStoryCloze's TSVs at the repo root."""
    home = tmp_path_factory.mktemp("hf_data")
    texts = {"en": ["Zero.", "One.", "Two.", "Three."], "zh": ["零。", "一。", "二。"], "ar": ["صفر.", "واحد.", "اثنان."]}
    order = [2, 0, 1]
    flores = {
        "devtest/eng_Latn.jsonl": jsonl_bytes([{"id": i, "text": texts["en"][i], "iso_639_3": "eng"}
                                               for i in [3, *order]]),
        "devtest/cmn_Hans.jsonl": jsonl_bytes([{"id": i, "text": texts["zh"][i], "iso_639_3": "cmn"}
                                               for i in order]),
        "devtest/arb_Arab.parquet": parquet_bytes([{"id": i, "text": texts["ar"][i]} for i in order]),
    }
    fill_cache(home, remote.FLORES_PLUS, FLORES_COMMIT, flores, repo_type="dataset")
    articles = {lang: [{"id": f"{lang}-{k}", "url": "u", "title": "t", "summary": "s",
                        "text": f"{lang} article {k}"} for k in range(3)] for lang in ("en", "zh", "ar")}
    xlsum = {f"{name}/validation/0000.parquet": parquet_bytes(articles[lang])
             for lang, name in (("en", "english"), ("zh", "chinese_simplified"), ("ar", "arabic"))}
    fill_cache(home, remote.XLSUM, XLSUM_COMMIT, xlsum, refs=(remote.XLSUM_PARQUET,), repo_type="dataset")
    ids = ["s1", "s2", "s3"]
    stories = {xstorycloze.TSV_PATTERN.format(language=lang): story_tsv(lang, ids) for lang in ("en", "zh", "ar")}
    fill_cache(home, remote.XSTORYCLOZE, STORIES_COMMIT, stories, repo_type="dataset")
    return home, texts, articles, stories


def test_fetch_data_writes_the_layouts_the_analysis_reads(dataset_cache, tmp_path):
    home, texts, articles, stories = dataset_cache
    target = tmp_path / "data"
    done = run("fetch_data.py", "--config", str(REPO / "configs" / "bloom_560m.py"), f"--data_dir={target}",
               "--config.corpus.languages=en,zh,ar", "--nomodel", env=offline(home))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"data directory: {target}" in done.stdout
    flores = corpus_lib.load_flores(target / "flores200_devtest", ["en", "zh", "ar"])
    assert flores["en"] == tuple(texts["en"][:3])  # id order; id 3 (English only) dropped
    assert flores["zh"] == tuple(texts["zh"]) and flores["ar"] == tuple(texts["ar"])
    assert (target / "flores200_devtest" / "zho_Hans.devtest").is_file()  # FLORES-200 names on disk
    documents = data.load_xlsum_jsonl(target / "xlsum", ["en", "zh", "ar"], limit=None)
    assert documents == {lang: [a["text"] for a in articles[lang]] for lang in ("en", "zh", "ar")}
    for name, content in stories.items():
        assert (target / "xstorycloze" / name).read_bytes() == content
    zh = data.load_xstorycloze(target / "xstorycloze", "zh")
    assert [s.endings for s in zh] == [("en end A.", "en end B.")] * 3 and [s.label for s in zh] == [0, 1, 0]
    # the same config now resolves every data path into that directory
    resolved = config_lib.resolve_paths(_paper_config(target))
    assert resolved.corpus.path == str(target / "flores200_devtest")
    assert resolved.ablation.text.path == str(target / "xlsum")


def test_fetch_data_names_what_the_cache_lacks(dataset_cache, tmp_path):
    home, *_ = dataset_cache
    failed = run("fetch_data.py", "--config", str(REPO / "configs" / "bloom_560m.py"), f"--data_dir={tmp_path}",
                 "--config.corpus.languages=en,fr", "--nomodel", env=offline(home))
    assert failed.returncode != 0
    assert (f"FLORES+ at commit {FLORES_COMMIT} has no devtest/fra_Latn.jsonl or .parquet (language 'fr')"
            in failed.stderr)
    empty = tmp_path / "empty_home"
    empty.mkdir()
    failed = run("fetch_data.py", "--config", str(REPO / "configs" / "bloom_560m.py"), f"--data_dir={tmp_path}",
                 "--nomodel", env=offline(empty))
    assert "dataset 'openlanguagedata/flores_plus' is not (completely) in the Hugging Face cache" in failed.stderr
    assert ("hf download --repo-type dataset openlanguagedata/flores_plus --include 'devtest/eng_Latn.*'"
            in failed.stderr)


def _paper_config(data_dir: Path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("bloom_560m", REPO / "configs" / "bloom_560m.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data_dir = str(data_dir)
    return config


@pytest.mark.parametrize("config_name,hub_id,tiny", [("qwen3_8b", "Qwen/Qwen3-8B", "qwen3"),
                                                     ("llama3_1_8b", "meta-llama/Llama-3.1-8B", "llama_rope_llama3"),
                                                     ("mistral_7b", "mistralai/Mistral-7B-v0.1", "mistral"),
                                                     ("gemma2_9b", "google/gemma-2-9b", "gemma2"),
                                                     ("gemma3_1b", "google/gemma-3-1b-pt", "gemma3"),
                                                     ("aya_expanse_8b", "CohereLabs/aya-expanse-8b", "cohere")])
def test_later_family_configs_run_as_written_from_the_offline_cache(config_name, hub_id, tiny, checkpoint, data_dir,
                                                                   tmp_path):
    """configs/qwen3_8b.py, llama3_1_8b.py, mistral_7b.py, gemma2_9b.py, gemma3_1b.py and aya_expanse_8b.py as
    written (hub id, bfloat16, the default mesh over 8 devices), with a tiny random checkpoint of that family in the cache under the config's hub id."""
    home = tmp_path / "hf_home"
    folder = tmp_path / "ckpt"
    shutil.copytree(checkpoint(tiny, VOCAB), folder)
    data.train_bpe_tokenizer(data.bundled_sample().texts, VOCAB).save_pretrained(folder)
    fill_cache(home, hub_id, MAIN, folder_files(folder))
    done = run("analyze.py", "--config", str(REPO / "configs" / f"{config_name}.py"), f"--data_dir={data_dir}",
               f"--config.results_dir={tmp_path / 'results'}", f"--config.corpus.languages={','.join(LANGUAGES)}",
               "--config.corpus.n=8", "--stages=extract,regions,report", env=offline(home))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (tmp_path / "results" / "report" / "summary.md").read_text()
    family = checkpoints.load_config(folder).model_type
    assert f"| model | {hub_id} |" in summary and f"| family | {family} |" in summary and "SKLR" in summary
