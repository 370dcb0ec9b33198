"""The shipped demo model has language structure: the paper's deactivation experiment, run on the
bundled parallel sample, hurts most languages most through their own key region, and a random set
of neurons of matched size hurts no language as much as its own region does."""

from pathlib import Path

import numpy as np
import pytest

import lingua_jax as lj
from lingua_jax import evaluate, extract, metrics
from lingua_jax.data import bundled_sample, load_tokenizer

DEMO = Path(lj.__file__).parent / "assets" / "demo"
THRESHOLD = 2.0  # the paper's tau
SEQLEN = 64


@pytest.fixture(scope="module")
def table() -> evaluate.AblationTable:
    """Key regions from the bundled sample (9 languages x 60 sentences); perplexity of each language's
    60 sentences joined with newlines (the demo never trained on them) under each region's mask."""
    lm = lj.load_pretrained(DEMO)
    tokenizer = load_tokenizer(DEMO)
    corpus = bundled_sample()
    acts = extract.extract(lm, tokenizer, corpus, batch_size=60)
    regions = np.asarray(metrics.key_regions(acts.acts, acts.lang, threshold=THRESHOLD))
    streams = {code: tokenizer("\n".join(corpus[code]), add_special_tokens=False)["input_ids"]
               for code in corpus.languages}
    return evaluate.ablation_table(lm, streams, regions, corpus.languages, SEQLEN, seed=0, batch_size=64)


def test_the_demo_ships_as_a_hugging_face_checkpoint_with_its_card():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "MODEL_CARD.md", "loss_curve.csv"):
        assert (DEMO / name).is_file(), name


def test_most_languages_are_hurt_most_by_their_own_region(table):
    regions = table.increase[1:-1]  # [L, L]: row r = language r's region zeroed, column c = language c
    assert table.rows[1:-1] == table.languages
    own = np.diag(regions)
    hurt_most_by_own = np.argmax(regions, axis=0) == np.arange(len(table.languages))
    assert hurt_most_by_own.sum() >= 7, dict(zip(table.languages, own.round(1)))
    assert (table.neuron_percent[1:-1] > 0).all()


def test_a_random_set_of_matched_size_hurts_less_than_each_own_region(table):
    random, own = table.increase[-1], np.diag(table.increase[1:-1])
    assert table.rows[-1] == evaluate.RANDOM
    assert (random < own).all(), dict(zip(table.languages, zip(random.round(1), own.round(1))))
