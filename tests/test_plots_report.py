"""Figures (valid, readable PNGs) and the report (tables, summary page, provenance)."""

import csv
import json
import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib import pyplot

from lingua_jax import evaluate, plots, report, tables

LANGUAGES = ["en", "zh", "fr", "es", "pt", "ar", "vi", "hi", "id"]
N_PER_LANG, LAYERS, NEURONS = 5, 4, 64
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _similarity(rng):
    """S [45, 45] of unit vectors with a language and a semantic component, samples interleaved
    (not grouped by language), and lang [45] as names."""
    lang = np.tile(np.arange(len(LANGUAGES)), N_PER_LANG)
    sem = np.repeat(np.arange(N_PER_LANG), len(LANGUAGES))
    vectors = (2.0 * rng.normal(size=(len(LANGUAGES), 32))[lang] + rng.normal(size=(N_PER_LANG, 32))[sem]
               + 0.5 * rng.normal(size=(len(lang), 32)))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors @ vectors.T, np.array(LANGUAGES)[lang]


def _ablation_table():
    """A real evaluate.AblationTable: full, one region per language (own language up to 16x), random."""
    rows = ("full", *LANGUAGES, "random")
    ppl = np.full((len(rows), len(LANGUAGES)), 20.0)
    ppl[1:-1] *= 1.0 + 0.02 * np.arange(len(LANGUAGES))
    ppl[1:-1][np.diag_indices(len(LANGUAGES))] *= np.linspace(1.2, 16.0, len(LANGUAGES))
    ppl[-1] *= 1.11
    return evaluate.AblationTable(
        languages=tuple(LANGUAGES), rows=rows, perplexity=ppl, neurons=np.arange(len(rows)) * 7,
        total_neurons=LAYERS * NEURONS, seqlen=16, windows=(3,) * len(LANGUAGES), random_fraction=0.1, seed=0,
        model={"path": "/models/x", "dtype": "float32"})


def _ablation_records():
    return _ablation_table().records()


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    """{name: path} of every figure, written once from realistic small inputs."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("figures")
    sim, lang = _similarity(rng)
    counts = rng.integers(0, 12, size=(len(LANGUAGES), LAYERS))
    steps = np.array([10_000, 50_000, 100_000, 200_000, 300_000])
    paths = {
        "similarity": plots.similarity_heatmap(sim, lang, LANGUAGES, out / "similarity.png"),
        "blocks": plots.block_heatmap(rng.uniform(0.2, 0.9, (9, 9)), LANGUAGES, out / "blocks.png"),
        "layerwise": plots.layerwise_scores(rng.uniform(0, 0.3, LAYERS), rng.uniform(0, 0.2, LAYERS),
                                            out / "layerwise.png"),
        "key_neurons": plots.key_neurons_per_layer(counts, LANGUAGES, out / "key_neurons.png",
                                                   total_per_layer=NEURONS),
        "evolution": plots.evolution(steps, {"LRDS": rng.uniform(size=5), "SADS": rng.uniform(size=5),
                                             "SKLR": rng.integers(100, 900, 5),
                                             "XStoryCloze accuracy": [0.5, 0.52, np.nan, 0.58, 0.6]},
                                     out / "evolution.png", xlabel="training step"),
        "scales": plots.evolution([0.56e9, 1.1e9, 1.7e9, 3e9, 7.1e9], {"LRDS": rng.uniform(size=5)},
                                  out / "scales.png", xlabel="parameters", log_x=True,
                                  tick_labels=["560m", "1b1", "1b7", "3b", "7b1"]),
        "layers_over_checkpoints": plots.layer_distribution_over_checkpoints(
            [f"global_step{s}" for s in steps], rng.integers(0, 50, size=(5, LAYERS)),
            out / "layers_over_checkpoints.png"),
        "ablation": plots.ablation_heatmap(_ablation_records(), LANGUAGES, out / "ablation.png"),
    }
    return paths


@pytest.mark.parametrize("name", ["similarity", "blocks", "layerwise", "key_neurons", "evolution", "scales",
                                  "layers_over_checkpoints", "ablation"])
def test_figure_is_a_readable_png(figures, name):
    path = figures[name]
    assert path.name == f"{name}.png"
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    height, width = pixels.shape[:2]
    assert 300 <= width <= 4000 and 200 <= height <= 4000
    assert pixels[..., :3].std() > 0.05  # something was drawn


def test_figures_leave_nothing_open_or_behind(figures):
    assert pyplot.get_fignums() == []
    folder = next(iter(figures.values())).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.png" for name in figures)


def test_similarity_heatmap_accepts_index_labels(tmp_path):
    sim, names = _similarity(np.random.default_rng(1))
    codes = np.array([LANGUAGES.index(n) for n in names])
    by_index = plots.similarity_heatmap(sim, codes, LANGUAGES, tmp_path / "a.png")
    by_name = plots.similarity_heatmap(sim, names, LANGUAGES, tmp_path / "b.png")
    np.testing.assert_array_equal(matplotlib.image.imread(by_index), matplotlib.image.imread(by_name))


def test_write_table_formats_parse_with_stable_columns(tmp_path):
    rows = [{"language": "en", "key_neurons": np.int64(12), "percent": np.float32(1.5)},
            {"language": "zh", "percent": 9.375, "key_neurons": 40, "note": "largest"},
            {"language": "fr", "key_neurons": 3, "percent": float("nan")}]
    paths = tables.write_table(rows, tmp_path, "regions")
    assert {k: p.name for k, p in paths.items()} == {k: f"regions.{k}" for k in ("csv", "json", "md")}
    columns = ["language", "key_neurons", "percent", "note"]

    with open(paths["csv"], newline="") as f:
        reader = csv.DictReader(f)
        parsed = list(reader)
    assert reader.fieldnames == columns
    assert [r["key_neurons"] for r in parsed] == ["12", "40", "3"]
    assert parsed[0]["note"] == "" and parsed[1]["note"] == "largest"

    data = json.loads(paths["json"].read_text())
    assert data["columns"] == columns
    assert data["rows"][0] == {"language": "en", "key_neurons": 12, "percent": 1.5, "note": None}
    assert data["rows"][2]["percent"] is None  # NaN is not JSON

    lines = paths["md"].read_text().splitlines()
    assert lines[0] == "| language | key_neurons | percent | note |"
    assert lines[2] == "| en | 12 | 1.5 | n/a |"
    assert len(lines) == 2 + len(rows)


def test_write_table_refuses_no_rows(tmp_path):
    with pytest.raises(ValueError, match="no rows"):
        tables.write_table([], tmp_path, "empty")


def test_only_process_zero_writes_results(tmp_path, monkeypatch):
    import jax
    rows = [{"language": "en", "percent": 1.5}]
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    paths = tables.write_table(rows, tmp_path, "regions")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(jax, "process_index", lambda: 0)
    assert tables.write_table(rows, tmp_path, "regions") == paths and all(p.is_file() for p in paths.values())


def test_ablation_headline_own_versus_others():
    records = _ablation_records()
    headline = report.ablation_headline(records, LANGUAGES)
    assert list(headline) == [*LANGUAGES, "random"]
    hi = next(r for r in records if r["ablated"] == "hi")
    others = [hi[f"increase_{x}"] for x in LANGUAGES if x != "hi"]
    assert headline["hi"]["own"] == pytest.approx(hi["increase_hi"])
    assert headline["hi"]["others (mean)"] == pytest.approx(sum(others) / len(others))
    assert headline["random"]["all (mean)"] == pytest.approx(11.0)


def _provenance(random_weights):
    return report.Provenance(
        model="bigscience/bloom-560m-intermediate", revision="global_step1000", commit="0123abcd",
        dtype="float32", family="bloom",
        num_layers=LAYERS, num_neurons=NEURONS, corpus="flores200 devtest",
        samples_per_language={name: N_PER_LANG for name in LANGUAGES}, seed=1234, threshold=2.0,
        random_weights=random_weights)


def _summary(directory, figures, random_weights):
    written = {"ablation": evaluate.write_table(_ablation_table(), directory),
               "regions": tables.write_table([{"language": "en", "percent": 1.5}], directory, "regions")["csv"]}
    headline = {"LRDS": 0.1234567, "SADS": np.float32(0.05), "SKLR": 321,
                "key neurons (%)": {name: 1.5 + i for i, name in enumerate(LANGUAGES)},
                "ablation: % perplexity increase": report.ablation_headline(_ablation_records(), LANGUAGES),
                "XStoryCloze accuracy": None}
    return report.write_summary(directory, _provenance(random_weights), headline, written, figures,
                                notes="Threshold 2 keeps neurons with z > 2.")


@pytest.mark.parametrize("random_weights", [True, False])
def test_summary_warns_exactly_when_weights_are_random(tmp_path, figures, random_weights):
    text = _summary(tmp_path, figures, random_weights).read_text()
    assert (report.RANDOM_WEIGHTS_WARNING in text) == random_weights
    assert ("random weights" in text.lower()) == random_weights
    if random_weights:
        assert text.index(report.RANDOM_WEIGHTS_WARNING) < text.index("## Provenance")


def test_summary_links_resolve_and_lists_provenance(tmp_path, figures):
    path = _summary(tmp_path / "run", figures, random_weights=True)
    assert path == tmp_path / "run" / "summary.md"
    text = path.read_text()
    targets = re.findall(r"\]\(([^)]+)\)", text)
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(Path(t).name for t in images) == sorted(p.name for p in figures.values())
    assert {"ablation.csv", "ablation.json", "ablation.md", "regions.csv"} <= {Path(t).name for t in targets}
    for target in targets:
        assert not Path(target).is_absolute()
        assert (path.parent / target).is_file(), target
    for value in ["bigscience/bloom-560m-intermediate", "global_step1000", "0123abcd", "float32", "bloom",
                  "flores200 devtest", "1234", "hi: 5", "jax ", "flax ", "transformers ", "numpy ", "lingua_jax "]:
        assert value in text, value
    assert "| num_layers | 4 |" in text and "| num_neurons | 64 |" in text and "| threshold | 2 |" in text
    assert "**LRDS**: 0.1235" in text and "**XStoryCloze accuracy**: n/a" in text
    assert "|  | own | others (mean) |" in text and "| random | n/a | n/a | 11 |" in text
    assert "## Notes" in text


def test_summary_refuses_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        report.write_summary(tmp_path, _provenance(False), {}, {}, {"similarity": tmp_path / "missing.png"})
    assert not (tmp_path / "summary.md").exists()


def test_provenance_from_lm_and_versions():
    class Stub:
        source = {"path": "/ckpt/llama", "dtype": "bfloat16"}
        family, num_layers, num_neurons, dtype = "llama", 2, 11, "bfloat16"

    prov = report.Provenance.from_lm(Stub(), corpus="bible", samples_per_language={"en": 100}, seed=0,
                                     threshold=2.0, random_weights=False)
    fields = prov.to_dict()
    assert (fields["model"], fields["dtype"], fields["family"], fields["revision"]) == \
        ("/ckpt/llama", "bfloat16", "llama", None)
    assert (fields["num_layers"], fields["num_neurons"]) == (2, 11)
    assert set(fields["versions"]) >= {"lingua_jax", "jax", "flax", "transformers", "numpy"}
    assert fields["versions"]["numpy"] == np.__version__
    assert report.package_versions(["no-such-package-xyz"]) == {"no-such-package-xyz": "not installed"}
    json.dumps(fields)
