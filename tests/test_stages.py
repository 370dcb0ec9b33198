"""Stages you can trust: keys derived from what each stage read, content fingerprints of its inputs,
atomic stage folders, one run at a time, non-finite numbers as errors, and what was capped, cut or
left empty said in the report. Each case ends in results equal to a fresh run's, or a clear error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lingua_jax import extract, pipeline, stages
from lingua_jax.config import base_config, tiny_random
from lingua_jax.data import FLORES_CODES, bundled_sample, train_bpe_tokenizer, xstorycloze
from lingua_jax.io import results_lock

REPO = Path(__file__).resolve().parents[1]
VOCAB = 320
LANGUAGES = ("en", "zh", "fr", "es", "ar", "hi")


@pytest.fixture(scope="module")
def models(checkpoint, tmp_path_factory):
    """Two tiny BLOOMs of one architecture (seeds 0 and 1), each with a trained tokenizer."""
    from torch_reference import save_checkpoint

    tokenizer = train_bpe_tokenizer(bundled_sample().texts, VOCAB)
    made = []
    for seed in (0, 1):
        folder = tmp_path_factory.mktemp(f"model{seed}")
        save_checkpoint("bloom", folder, seed=seed, vocab_size=VOCAB)
        tokenizer.save_pretrained(folder)
        made.append(folder)
    return made


def make_data(root: Path) -> Path:
    """A data directory: FLORES-layout files (12 bundled sentences per language) and XStoryCloze TSVs
    (4 stories per language)."""
    sample = bundled_sample()
    (root / "flores200_devtest").mkdir(parents=True)
    for lang in LANGUAGES:
        (root / "flores200_devtest" / f"{FLORES_CODES[lang]}.devtest").write_text("\n".join(sample[lang][:12]) + "\n")
    (root / "xstorycloze").mkdir()
    header = "\t".join(xstorycloze.TSV_HEADER)
    for lang in ("en", "zh", "es", "ar", "hi"):
        rows = [f"s{k}\t{lang} {k} a.\tb.\tc.\td.\tgood end.\tbad end.\t{1 + k % 2}" for k in range(4)]
        (root / "xstorycloze" / xstorycloze.TSV_PATTERN.format(language=lang)).write_text(
            "\n".join([header, *rows]) + "\n")
    return root


def make_config(model: Path, data: Path, results: Path):
    c = base_config()
    c.model.path, c.data_dir, c.results_dir = str(model), str(data), str(results)
    c.corpus.update(kind="flores", path="@data/flores200_devtest", languages=",".join(LANGUAGES), n=8)
    c.extract.max_length = 64
    c.ablation.update(seqlen=32, max_windows=2)
    c.ablation.text.kind = "bundled"
    c.generation.update(prompts_per_language=1, max_new_tokens=4)
    return c


ALL = ["extract", "metrics", "regions", "ablation", "xstorycloze", "generation", "report"]


def test_weights_or_corpus_replaced_in_place(models, tmp_path):
    """Case 1: new weights in the same directory, or a corpus file edited in place, re-run what
    depends on them, and the numbers equal a fresh run's."""
    model, data = tmp_path / "model", make_data(tmp_path / "data")
    shutil.copytree(models[0], model)
    config = make_config(model, data, tmp_path / "results")
    before = pipeline.Analysis(config).run(["extract", "metrics"])["metrics"]["lrds"]
    shutil.copyfile(models[1] / "model.safetensors", model / "model.safetensors")
    analysis = pipeline.Analysis(config)
    assert analysis.plan(["extract", "metrics"]) == ["extract", "metrics"]
    after = analysis.run(["extract", "metrics"])["metrics"]["lrds"]
    fresh = pipeline.Analysis(make_config(model, data, tmp_path / "fresh1")).run(["extract", "metrics"])
    assert after == fresh["metrics"]["lrds"] != before
    english = data / "flores200_devtest" / "eng_Latn.devtest"
    english.write_text("".join(f"{line} Indeed!\n" for line in english.read_text().splitlines()))
    analysis = pipeline.Analysis(config)
    assert analysis.plan(["extract", "metrics"]) == ["extract", "metrics"]
    edited = analysis.run(["extract", "metrics"])["metrics"]["lrds"]
    fresh = pipeline.Analysis(make_config(model, data, tmp_path / "fresh2")).run(["extract", "metrics"])
    assert edited == fresh["metrics"]["lrds"] != after


def test_a_new_random_mask_reaches_every_stage_that_uses_it(models, tmp_path):
    """Case 2: ablation.seed (the random mask) re-runs the ablation, XStoryCloze and generation, and
    the report shows the new mask's numbers in each."""
    data = make_data(tmp_path / "data")
    config = make_config(models[0], data, tmp_path / "results")
    pipeline.Analysis(config).run(ALL)
    config.ablation.seed = 1
    analysis = pipeline.Analysis(config)
    assert analysis.plan(ALL) == ["ablation", "xstorycloze", "generation", "report"]
    outputs = analysis.run(ALL)
    assert analysis.ran == ["ablation", "xstorycloze", "generation", "report"]
    fresh_config = make_config(models[0], data, tmp_path / "fresh")
    fresh_config.ablation.seed = 1
    fresh = pipeline.Analysis(fresh_config).run(ALL)
    for stage in ("ablation", "xstorycloze"):
        assert outputs[stage] == fresh[stage], stage
    results = (Path(config.results_dir), Path(fresh_config.results_dir))
    generations = [json.loads((r / "generation" / "generations.json").read_text()) for r in results]
    assert generations[0] == generations[1]


def test_a_killed_re_extract_leaves_the_finished_one_in_place(tmp_path):
    """Case 4: a run under another corpus.n killed mid-extract leaves the previous extract stage
    whole: going back to the old config reuses it, and the leftovers go."""
    config = tiny_random("bloom")
    config.results_dir, config.corpus.n = str(tmp_path), 8
    pipeline.Analysis(config).run(["extract", "metrics"])
    key = json.loads((tmp_path / "extract" / "done.json").read_text())["key"]
    proc = subprocess.Popen([sys.executable, str(REPO / "launch" / "analyze.py"), "--config",
                             str(REPO / "configs" / "tiny_bloom.py"), f"--config.results_dir={tmp_path}",
                             "--config.corpus.n=12", "--stages=extract,metrics"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (tmp_path / ".extract.partial").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert (tmp_path / ".extract.partial").exists(), "the re-extract finished before it could be killed"
    assert json.loads((tmp_path / "extract" / "done.json").read_text())["key"] == key
    assert extract.load(tmp_path / "extract").acts.shape[0] == 9 * 8
    analysis = pipeline.Analysis(config)
    assert analysis.plan(["extract", "metrics"]) == []
    analysis.run(["extract", "metrics"])
    assert not list(tmp_path.glob(".*.partial"))


def nan_model(source: Path, target: Path, suffix: str) -> Path:
    """A copy of `source` whose first tensor named ...`suffix` has a NaN."""
    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    (name,) = [n for n in tensors if n.endswith(suffix)]
    tensors[name] = tensors[name].copy()
    tensors[name].flat[0] = np.nan
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_non_finite_numbers_stop_the_stage_that_meets_them(models, tmp_path):
    """Case 5: a NaN in the final norm leaves the neurons alone, but stops the ablation (naming the
    window), XStoryCloze (the story) and generation (the prompt); one in an MLP stops extraction
    (the sample). Nothing is recorded as done."""
    data = make_data(tmp_path / "data")
    final_norm = nan_model(models[0], tmp_path / "ln_f", "ln_f.weight")
    config = make_config(final_norm, data, tmp_path / "results")
    analysis = pipeline.Analysis(config)
    analysis.run(["extract", "regions"])
    for stage, message in (
            ("ablation", r"stage ablation: perplexity: window 0 of language 'en' under 'full' has a non-finite"),
            ("xstorycloze", r"stage xstorycloze: loglikelihood: story s0 \(en\), ending 1 has a non-finite"),
            ("generation", r"stage generation: generation from prompt 0 \(.*\) met non-finite logits")):
        with pytest.raises(FloatingPointError, match=message):
            pipeline.Analysis(config).run([stage])
        assert not (tmp_path / "results" / stage).exists()
    mlp = nan_model(models[0], tmp_path / "mlp", "h.0.mlp.dense_h_to_4h.weight")
    with pytest.raises(FloatingPointError, match=r"stage extract: sample 0 \(en sentence 0: .*\) has non-finite"):
        pipeline.Analysis(make_config(mlp, data, tmp_path / "results_mlp")).run(["extract"])


def test_one_run_at_a_time(tmp_path):
    """A run on a results directory another run holds stops with a clear message; two started
    together end in one finished run (or two, one after the other) and results equal a fresh run's."""
    config = tiny_random("bloom")
    config.results_dir, config.corpus.n = str(tmp_path / "held"), 4
    with results_lock(tmp_path / "held"):
        with pytest.raises(RuntimeError, match=r"is in use by another run \(pid \d+ on .*, since .*\): wait"):
            pipeline.Analysis(config).run(["extract"])
    both = tmp_path / "both"
    command = [sys.executable, str(REPO / "launch" / "analyze.py"), "--config", str(REPO / "configs" / "tiny_bloom.py"),
               f"--config.results_dir={both}", "--config.corpus.n=8", "--stages=extract,metrics,regions"]
    procs = [subprocess.Popen(command, cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    ends = [p.communicate(timeout=600) for p in procs]
    codes = [p.returncode for p in procs]
    assert 0 in codes, ends[0][1][-2000:]
    for code, (_, err) in zip(codes, ends):
        assert code == 0 or "is in use by another run" in err, err[-2000:]
    config.results_dir, config.corpus.n = str(tmp_path / "fresh"), 8
    fresh = pipeline.Analysis(config).run(["extract", "metrics", "regions"])
    recorded = json.loads((both / "metrics" / "done.json").read_text())["outputs"]
    assert recorded["lrds"] == fresh["metrics"]["lrds"] and recorded["sads"] == fresh["metrics"]["sads"]


def test_lost_store_chunks_are_named_and_the_stage_runs_again(tmp_path, caplog):
    config = tiny_random("bloom")
    config.results_dir, config.corpus.n = str(tmp_path), 6
    pipeline.Analysis(config).run(["extract", "metrics"])
    for chunk in ("3.0.0", "7.0.0"):
        (tmp_path / "extract" / extract.STORE / chunk).unlink()
    with pytest.raises(FileNotFoundError, match=r"acts.zarr' holds 52 of its 54 chunks: it is incomplete or damaged"):
        extract.load(tmp_path / "extract")
    analysis = pipeline.Analysis(config)
    assert analysis.plan(["metrics"]) == ["extract", "metrics"]
    with caplog.at_level("INFO"):
        analysis.run(["metrics"])
    assert "stage extract: runs again: activation store" in caplog.text
    assert extract.load(tmp_path / "extract").acts.shape == (54, 2, 256)


def test_capped_cut_and_empty_are_reported(tmp_path):
    config = tiny_random("bloom")
    config.results_dir, config.corpus.n, config.extract.max_length = str(tmp_path), 100, 8
    config.corpus.languages = ",".join(LANGUAGES)
    config.regions.threshold = 2.2  # just under the largest z there can be with six languages (sqrt 5)
    outputs = pipeline.Analysis(config).run(["extract", "regions", "report"])
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "corpus.n is 100 but the corpus has 60 sentences per language: all 60 were used." in summary
    truncated = outputs["extract"]["truncated"]
    assert set(truncated) == set(LANGUAGES) and sum(truncated.values()) > 0
    assert f"extract.max_length=8 cut sentences to their first 8 tokens: {truncated['en']} of 60 in en" in summary
    empty = [lang for lang, percent in outputs["regions"]["percent"].items() if percent == 0]
    assert empty and outputs["regions"]["empty"] == empty
    assert f"No neuron of {', '.join(empty)} has a z-score above regions.threshold=2.2" in summary


# --- every config field a stage reads is in its key ------------------------------------------------

# What each setting's code path reads it for, from the method (not from the code under test): the
# stages that read it directly. The model and tokenizer are read by every stage that runs the model.
MODEL_USERS = {"extract", "ablation", "xstorycloze", "generation", "steer", "compare"}
CORPUS_USERS = {"extract", "generation", "steer", "compare"}  # the samples: activations, prompts, LAPE counts
MASK_USERS = {"ablation", "xstorycloze", "generation", "compare"}  # the random mask and the regions
READERS = {
    "model.path": {"report"},  # a random model's path is only shown (there is none)
    "model.revision": set(),
    "model.dtype": MODEL_USERS | {"report"},
    "model.attention": MODEL_USERS,  # another kernel rounds otherwise in bfloat16
    "model.mesh": set(), "model.fsdp": set(),  # placement: how work is split, not what is computed
    "tokenizer": MODEL_USERS,
    "data_dir": {"xstorycloze"},  # where @data/xstorycloze is
    "corpus.kind": CORPUS_USERS | {"report"}, "corpus.path": {"report"},
    "corpus.languages": {"extract", "ablation", "xstorycloze", "generation", "steer", "compare", "report"},
    "corpus.n": CORPUS_USERS | {"report"}, "corpus.seed": CORPUS_USERS | {"report"},
    "extract.batch_size": set(), "extract.pack": {"extract"},
    "extract.add_special_tokens": {"extract", "compare"}, "extract.max_length": {"extract", "compare"},
    "regions.threshold": {"regions", "stability", "compare", "report"},
    "regions.offset": {"regions", "stability", "compare"},
    "bootstrap.samples": {"metrics", "stability"}, "bootstrap.seed": {"metrics", "stability"},
    "ablation.text.kind": {"ablation", "steer", "compare"}, "ablation.text.path": set(),
    "ablation.text.split": set(), "ablation.text.limit": set(),
    "ablation.seqlen": {"ablation", "steer", "compare"}, "ablation.max_windows": {"ablation", "steer", "compare"},
    "ablation.batch_size": set(), "ablation.seed": MASK_USERS,
    "ablation.random_fraction": MASK_USERS - {"compare"},  # compare's random set has the budget's size
    "xstorycloze.kind": {"xstorycloze"}, "xstorycloze.path": {"xstorycloze"},
    "xstorycloze.languages": {"xstorycloze"}, "xstorycloze.limit": {"xstorycloze"},
    "xstorycloze.batch_size": set(),
    "generation.prompts_per_language": {"generation"}, "generation.max_new_tokens": {"generation"},
    "steer.prompts_per_language": {"steer", "compare"}, "steer.strengths": {"steer"}, "steer.statistics": {"steer"},
    "steer.max_new_tokens": {"steer", "compare"}, "steer.max_windows": {"steer"}, "steer.batch_size": set(),
    "steer.seed": {"steer"},
    "methods": {"compare"}, "compare.budget": {"compare"}, "compare.steer_strength": {"compare"},
    "compare.max_windows": {"compare"},
    "lape.top_rate": {"compare"},
    "lape.filter_rate": {"compare"}, "lape.bar_ratio": {"compare"}, "ap.top": {"compare"}, "ap.bottom": {"compare"},
    "aprob.quantile": {"compare"}, "aprob.top_rate": {"compare"}, "aprob.filter_rate": {"compare"},
    "aprob.bar_ratio": {"compare"},
}


def rerun(direct: set[str]) -> list[str]:
    """The stages that must run again when `direct` read a changed setting: they, every stage that
    reads one of them, and the report whenever anything runs."""
    stale = set(direct)
    for stage in stages.STAGES:
        if set(stage.reads) & stale or (stage.reads == ("*",) and stale):
            stale.add(stage.name)
    return [name for name in pipeline.STAGES if name in stale]


def test_every_setting_a_stage_reads_is_in_its_key(tmp_path):
    """Mutate each setting of the config in turn: exactly the stages that read it (and those that
    read them) would run again."""
    data = make_data(tmp_path / "data")
    config = tiny_random("bloom")
    config.results_dir, config.data_dir = str(tmp_path / "results"), str(data)
    config.corpus.update(n=6, languages=",".join(LANGUAGES))
    config.lape.top_rate = 0.05
    config.ablation.max_windows = 1
    config.generation.max_new_tokens = 2
    config.steer.update(max_new_tokens=2, strengths=(2.0,), max_windows=1)
    config.bootstrap.samples = 20
    pipeline.Analysis(config).run(pipeline.STAGES)
    tokenizer_dir = tmp_path / "results" / "random_model"
    mutations = {
        "model.path": str(tmp_path / "elsewhere"), "model.revision": "main", "model.dtype": "bfloat16",
        "model.attention": "xla", "model.mesh": (1, 1), "model.fsdp": True, "tokenizer": str(tokenizer_dir),
        "data_dir": str(shutil.copytree(data, tmp_path / "data2")),
        "corpus.kind": "flores", "corpus.path": "@data/flores200_devtest", "corpus.languages": "en,zh,fr,es,ar,vi",
        "corpus.n": 5, "corpus.seed": 1,
        "extract.batch_size": 3, "extract.pack": False, "extract.add_special_tokens": True,
        "extract.max_length": 32, "regions.threshold": 0.1, "regions.offset": 1e-5, "bootstrap.samples": 50,
        "bootstrap.seed": 3,
        "ablation.text.kind": "xlsum", "ablation.text.path": "/nowhere", "ablation.text.split": "test",
        "ablation.text.limit": 3, "ablation.seqlen": 16, "ablation.max_windows": 2, "ablation.batch_size": 3,
        "ablation.random_fraction": 0.5, "ablation.seed": 7,
        "xstorycloze.kind": "none", "xstorycloze.path": str(tmp_path / "data2" / "xstorycloze"),
        "xstorycloze.languages": ("en", "zh"), "xstorycloze.limit": 2, "xstorycloze.batch_size": 3,
        "generation.prompts_per_language": 1, "generation.max_new_tokens": 3,
        "steer.prompts_per_language": 1, "steer.strengths": (1.0, 3.0), "steer.statistics": "median",
        "steer.max_new_tokens": 3, "steer.max_windows": 2, "steer.batch_size": 5, "steer.seed": 2,
        "methods": "lape,zscore", "compare.budget": 0.05, "compare.steer_strength": 3.0, "compare.max_windows": 1,
        "lape.top_rate": 0.04, "lape.filter_rate": 0.9,
        "lape.bar_ratio": 0.9, "ap.top": 4, "ap.bottom": 3, "aprob.quantile": 0.8, "aprob.top_rate": 0.04,
        "aprob.filter_rate": 0.9, "aprob.bar_ratio": 0.9,
    }
    sample = bundled_sample()
    for lang in LANGUAGES:  # corpus.kind flores reads the same sentences as the bundled sample
        (data / "flores200_devtest" / f"{FLORES_CODES[lang]}.devtest").write_text("\n".join(sample[lang]) + "\n")
    write_xlsum(data / "xlsum", LANGUAGES)
    for name, value in mutations.items():
        mutated = config.copy_and_resolve_references()
        *sections, field = name.split(".")
        target = mutated
        for part in sections:
            target = target[part]
        with mutated.unlocked():
            target[field] = value
            if name == "ablation.text.kind":  # a kind with the path it reads
                mutated.ablation.text.path = "@data/xlsum"
            if name == "corpus.kind":
                mutated.corpus.path = "@data/flores200_devtest"
        assert pipeline.Analysis(mutated).plan(pipeline.STAGES) == rerun(READERS[name]), name
    settings = {name for name in leaves(config.to_dict()) if not name.startswith("model.random.")}
    assert settings - {"results_dir", "stages"} == set(READERS) == set(mutations)
    mutated = config.copy_and_resolve_references()
    mutated.model.random.seed = 1  # another random model: refused, not mixed with this one's results
    with pytest.raises(ValueError, match=r"holds results of model random:.*\"seed\": 0"):
        pipeline.Analysis(mutated)


def leaves(tree: dict, prefix: str = "") -> list[str]:
    return [name for key, value in tree.items()
            for name in (leaves(value, f"{prefix}{key}.") if isinstance(value, dict) and value else [prefix + key])]


def write_xlsum(directory: Path, languages) -> None:
    from lingua_jax.data import XLSUM_NAMES

    directory.mkdir(exist_ok=True)
    sample = bundled_sample()
    for lang in languages:
        (directory / f"{XLSUM_NAMES[lang]}_val.jsonl").write_text(
            "".join(json.dumps({"text": text}) + "\n" for text in sample[lang]))
