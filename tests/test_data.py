"""Data layer: corpus loaders on the real files in ../shared/data, the bundled sample, XL-Sum,
XStoryCloze, tokenizer training, bucketing and perplexity windows.

Expected values come from reading the files directly (plain split on newlines and tabs), never from
the loaders under test.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from lingua_jax.data import batching, corpus, tokenization, xlsum, xstorycloze
from lingua_jax.data.corpus import PAPER_LANGUAGES, ParallelCorpus

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real evaluation data not found at {SHARED} (../shared/data beside the repo)"
)
FLORES_FILES = ("eng_Latn", "zho_Hans", "fra_Latn", "spa_Latn", "por_Latn", "arb_Arab", "vie_Latn",
                "hin_Deva", "ind_Latn")


def raw_lines(path: Path) -> list[str]:
    """The file's lines, read independently of the loaders."""
    return path.read_bytes().decode("utf-8").replace("\r\n", "\n").rstrip("\n").split("\n")


def raw_tsv(path: Path) -> dict[str, list[str]]:
    """{story id: fields} of an XStoryCloze TSV, header skipped."""
    rows = [line.split("\t") for line in raw_lines(path)[1:]]
    return {row[0]: row for row in rows}


@pytest.fixture(scope="module")
def tokenizer():
    return tokenization.train_bpe_tokenizer(corpus.bundled_sample().texts, vocab_size=700)


# ----- ParallelCorpus -----

def test_corpus_labels_are_language_major():
    c = ParallelCorpus({"a": ["a0", "a1", "a2"], "b": ["b0", "b1", "b2"]})
    assert c.texts == ["a0", "a1", "a2", "b0", "b1", "b2"]
    np.testing.assert_array_equal(c.lang, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(c.sem, [0, 1, 2, 0, 1, 2])
    assert c.languages == ("a", "b") and c.n == 3


def test_corpus_validation_errors():
    with pytest.raises(ValueError, match=r"different numbers.*'en': 2.*'fr': 1"):
        ParallelCorpus({"en": ["x", "y"], "fr": ["x"]})
    with pytest.raises(ValueError, match="at least 2 languages"):
        ParallelCorpus({"en": ["x"]})
    with pytest.raises(ValueError, match=r"language 'fr': sentence 1 \(line 2\) is empty"):
        ParallelCorpus({"en": ["x", "y"], "fr": ["x", "  \t"]})
    with pytest.raises(ValueError, match="no sentences"):
        ParallelCorpus({"en": [], "fr": []})


def test_select_is_deterministic_aligned_and_distinct():
    full = corpus.bundled_sample()
    a, b, other = full.select(10, seed=3), full.select(10, seed=3), full.select(10, seed=4)
    assert a.texts == b.texts and a.texts != other.texts
    assert len(set(a.source_lines)) == 10
    for code in full.languages:  # the same source line in every language
        assert list(a[code]) == [full[code][i] for i in a.source_lines]
    nested = a.select(4, seed=0)  # source lines still point into the original corpus
    assert set(nested.source_lines) <= set(a.source_lines)
    assert list(nested["vi"]) == [full["vi"][i] for i in nested.source_lines]
    with pytest.raises(ValueError, match="cannot select 61"):
        full.select(61, seed=0)


def test_subset_keeps_order_and_names_missing_languages():
    full = corpus.bundled_sample()
    sub = full.subset(["hi", "en"])
    assert sub.languages == ("hi", "en") and sub["en"] == full["en"]
    with pytest.raises(KeyError, match=r"\['de', 'ja'\] are not in this corpus"):
        full.subset(["en", "de", "ja"])


# ----- bundled sample -----

def test_bundled_sample_is_aligned_in_nine_languages():
    c = corpus.bundled_sample()
    assert c.languages == PAPER_LANGUAGES and c.n >= 48
    folder = Path(corpus.__file__).with_name("parallel_sample")
    for code in PAPER_LANGUAGES:
        assert list(c[code]) == raw_lines(folder / f"{code}.txt")
        assert len(set(c[code])) == c.n, f"{code} repeats a sentence"
    # Independent alignment checks: questions and numbers sit on the same lines in every language.
    for i in range(c.n):
        is_question = {code: c[code][i][-1] in "?？؟" for code in PAPER_LANGUAGES}
        assert len(set(is_question.values())) == 1, (i, is_question)
        digits = {code: re.findall(r"[0-9]+", c[code][i]) for code in PAPER_LANGUAGES}
        assert all(d == digits["en"] for d in digits.values()), (i, digits)


# ----- file loaders -----

@needs_shared
def test_flores_directory():
    c = corpus.load_flores(SHARED / "flores200_devtest")
    assert c.languages == PAPER_LANGUAGES and c.n == 1012 and len(c.texts) == 9 * 1012
    for k, name in enumerate(FLORES_FILES):
        lines = raw_lines(SHARED / "flores200_devtest" / f"{name}.devtest")
        assert c.texts[k * 1012] == lines[0] and c.texts[k * 1012 + 1011] == lines[1011]
    assert c.texts[0].startswith('"We now have 4-month-old mice')


@needs_shared
def test_ntrex_directory_strips_crlf():
    c = corpus.load_ntrex(SHARED / "ntrex128")
    assert c.languages == PAPER_LANGUAGES and c.n == 1997
    assert not any(t.endswith("\r") for t in c.texts)
    assert list(c["zh"]) == raw_lines(SHARED / "ntrex128" / "newstest2019-ref.zho-CN.txt")


@needs_shared
def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        corpus.load_flores(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"no file\(s\) \['eng_Latn.dev'\]"):
        corpus.load_flores(SHARED / "flores200_devtest", languages=["en"], split="dev")
    with pytest.raises(KeyError, match="no NTREX file known for \\['de'\\]"):
        corpus.load_ntrex(SHARED / "ntrex128", languages=["en", "de"])


def test_tsv_and_jsonl_tables(tmp_path):
    (tmp_path / "t.tsv").write_text('en\tfr\tid\n"Hi" there\tSalut\tHalo\nBye\tAu revoir\tDah\n', "utf-8")
    c = corpus.load_table(tmp_path / "t.tsv", languages=["fr", "en"])
    assert c.languages == ("fr", "en") and c["en"] == ('"Hi" there', "Bye")
    records = [{"en": "Hi", "zh": "你好"}, {"en": "Bye", "zh": "再见"}]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), "utf-8")
    assert corpus.load_table(tmp_path / "t.jsonl")["zh"] == ("你好", "再见")
    (tmp_path / "bad.jsonl").write_text('{"en": "a", "zh": "b"}\n{"en": "c"}\n', "utf-8")
    with pytest.raises(ValueError, match=r"record 1 has no text for \['zh'\]"):
        corpus.load_table(tmp_path / "bad.jsonl")
    with pytest.raises(KeyError, match=r"no column\(s\) \['de'\]"):
        corpus.load_table(tmp_path / "t.tsv", languages=["en", "de"])


def test_flores_reads_only_the_languages_asked_for(tmp_path):
    """A data directory holding six of the nine FLORES files serves any subset of those six."""
    sample = corpus.bundled_sample()
    for code in ("en", "zh", "fr", "es", "ar", "hi"):
        (tmp_path / f"{corpus.FLORES_CODES[code]}.devtest").write_text("\n".join(sample[code]) + "\n", "utf-8")
    six = corpus.load_flores(tmp_path, ["en", "zh", "fr", "es", "ar", "hi"])
    assert six.languages == ("en", "zh", "fr", "es", "ar", "hi") and six["hi"] == sample["hi"]
    with pytest.raises(FileNotFoundError, match=r"has no file\(s\) \['por_Latn.devtest'\]"):
        corpus.load_flores(tmp_path, ["en", "pt"])


def bible_xml(verses: dict[str, str]) -> str:
    """A bible-corpus CES file (as github.com/christos-c/bible-corpus writes them) holding `verses`."""
    segs = "".join(f'\n\t\t\t\t\t<seg id="{v}" type="verse">\n\t\t\t\t\t\t{text}\n\t\t\t\t\t</seg>'
                   for v, text in verses.items())
    return ('<?xml version="1.0" ?>\n<cesDoc version="4">\n\t<cesHeader version="2"><encodingDesc><editorialDesc>'
            "<segmentation>Marked up to the level of chapter and verse.</segmentation></editorialDesc>"
            '</encodingDesc></cesHeader>\n\t<text>\n\t\t<body id="Bible" lang="xx">\n\t\t\t<div id="b.GEN" '
            f'type="book">\n\t\t\t\t<div id="b.GEN.1" type="chapter">{segs}\n\t\t\t\t</div>\n\t\t\t</div>'
            "\n\t\t</body>\n\t</text>\n</cesDoc>\n")


def test_bible_verses_align_by_id(tmp_path):
    """Verses align by their id, not their position; a verse missing or blank in one language is
    dropped in all; whitespace inside a verse collapses."""
    files = {
        "en": {"b.GEN.1.1": "In the beginning", "b.GEN.1.2": "And the earth", "b.GEN.1.3": "Let there be\n light",
               "b.GEN.1.4": "It was good"},
        "fr": {"b.GEN.1.2": "La terre", "b.GEN.1.1": "Au commencement", "b.GEN.1.3": "Que la lumière soit",
               "b.GEN.1.4": "  "},
        "zh": {"b.GEN.1.1": "起初", "b.GEN.1.3": "要有光", "b.GEN.1.4": "是好的"},
    }
    for code, verses in files.items():
        (tmp_path / corpus.BIBLE_FILES[code]).write_text(bible_xml(verses), "utf-8")
    c = corpus.load_bible(tmp_path, ["en", "fr", "zh"])
    assert c["en"] == ("In the beginning", "Let there be light")
    assert c["fr"] == ("Au commencement", "Que la lumière soit") and c["zh"] == ("起初", "要有光")
    (tmp_path / "Hindi.xml").write_text(bible_xml({"b.GEN.1.1": "x"})[:-40], "utf-8")
    with pytest.raises(ValueError, match=r"Hindi.xml is not valid XML"):
        corpus.load_bible(tmp_path, ["en", "hi"])
    with pytest.raises(FileNotFoundError, match=r"no Bible file .*Arabic.xml for 'ar'"):
        corpus.load_bible(tmp_path, ["en", "ar"])


# ----- XL-Sum -----

@needs_shared
def test_xlsum_jsonl_validation_text():
    docs = xlsum.load_xlsum_jsonl(SHARED / "xlsum_sample")
    assert list(docs) == list(PAPER_LANGUAGES)
    for code, name in xlsum.XLSUM_NAMES.items():
        records = [json.loads(line) for line in raw_lines(SHARED / "xlsum_sample" / f"{name}_val.jsonl")]
        assert docs[code] == [r["text"] for r in records][:500]
    joined = xlsum.join_documents(docs)
    assert joined["fr"] == "\n\n".join(docs["fr"]) and joined["fr"].count("\n\n") >= len(docs["fr"]) - 1
    test_lines = raw_lines(SHARED / "xlsum_sample" / "chinese_simplified_test.jsonl")
    two = xlsum.load_xlsum_jsonl(SHARED / "xlsum_sample", ["zh"], split="test", limit=2)
    assert two == {"zh": [json.loads(line)["text"] for line in test_lines[:2]]}


@needs_shared
def test_xlsum_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no XL-Sum file .*german_val.jsonl.*\['arabic', "):
        xlsum.load_xlsum_jsonl(SHARED / "xlsum_sample", ["german"])
    with pytest.raises(ValueError, match="unknown XL-Sum split 'dev'"):
        xlsum.load_xlsum_jsonl(SHARED / "xlsum_sample", split="dev")
    (tmp_path / "english_val.jsonl").write_text('{"id": "1", "body": "x"}\n', "utf-8")
    with pytest.raises(KeyError, match="line 0 has no field 'text'"):
        xlsum.load_xlsum_jsonl(tmp_path, ["en"])


def test_plain_text_documents(tmp_path):
    (tmp_path / "en.txt").write_text("first doc\n\nsecond doc\n", "utf-8")
    assert xlsum.load_text_documents(tmp_path, {"en": "en.txt"}) == {"en": ["first doc", "second doc"]}


# ----- XStoryCloze -----

@needs_shared
@pytest.mark.parametrize("language", ["en", "zh", "hi"])
def test_xstorycloze_cross_lingual_stories(language):
    folder = SHARED / "xstorycloze"
    stories = xstorycloze.load_xstorycloze(folder, language)
    native = raw_tsv(folder / f"spring2016.val.{language}.tsv.split_20_80_eval.tsv")
    english = raw_tsv(folder / "spring2016.val.en.tsv.split_20_80_eval.tsv")
    assert len(stories) == 1511 and [s.story_id for s in stories] == list(native)
    for s in stories:
        assert s.language == language and s.ending_language == "en"
        assert s.sentences == tuple(native[s.story_id][1:5])
        assert s.endings == tuple(english[s.story_id][5:7])
        assert s.label == int(english[s.story_id][7]) - 1


def test_cross_lingual_prompt():
    story = xstorycloze.Story("id", "es", ("Uno.", "Dos.", "Tres.", "Cuatro."), ("End A.", "End B."), "en", 1)
    assert xstorycloze.cross_lingual_prompt(story) == (
        "Uno. Dos. Tres. Cuatro. The ending in English:", (" End A.", " End B."))


@needs_shared
def test_xstorycloze_errors(tmp_path):
    available = r"\['ar', 'en', 'es', 'hi', 'id', 'zh'\]"
    with pytest.raises(ValueError, match=r"no XStoryCloze file for 'fr'.*" + available):
        xstorycloze.load_xstorycloze(SHARED / "xstorycloze", "fr")
    with pytest.raises(FileNotFoundError, match="no such directory: .*absent"):
        xstorycloze.load_xstorycloze(tmp_path / "absent", "en")
    lines = raw_lines(SHARED / "xstorycloze" / "spring2016.val.en.tsv.split_20_80_eval.tsv")
    pattern = xstorycloze.TSV_PATTERN
    (tmp_path / pattern.format(language="en")).write_text("\n".join(lines[:4]) + "\n", "utf-8")
    (tmp_path / pattern.format(language="xx")).write_text("\n".join(lines[:3] + lines[4:5]) + "\n", "utf-8")
    with pytest.raises(ValueError, match="story ids differ from English: 1 only in xx .* 1 only in en"):
        xstorycloze.load_xstorycloze(tmp_path, "xx")


# ----- tokenizer -----

def test_trained_tokenizer_round_trips_and_is_deterministic(tmp_path, tokenizer):
    texts = corpus.bundled_sample().texts
    again = tokenization.train_bpe_tokenizer(texts, vocab_size=700)
    assert tokenizer.backend_tokenizer.to_str() == again.backend_tokenizer.to_str()
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == (
        "<pad>", "<s>", "</s>", "<unk>")
    assert tokenizer.pad_token_id == 0 and len(tokenizer) == 700
    tokenizer.save_pretrained(tmp_path)
    for loaded in (AutoTokenizer.from_pretrained(tmp_path), tokenization.load_tokenizer(tmp_path)):
        for text in texts[::37]:
            assert loaded(text).input_ids == tokenizer(text).input_ids
            assert loaded.decode(loaded(text, add_special_tokens=False).input_ids) == text
        assert loaded("hola").input_ids[0] == loaded.bos_token_id == 1
    bloom_like = tokenization.train_bpe_tokenizer(texts, vocab_size=300, add_bos=False)
    assert bloom_like("hola").input_ids == bloom_like("hola", add_special_tokens=False).input_ids


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found"):
        tokenization.load_tokenizer(tmp_path / "absent")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer files.*\['config.json'\]"):
        tokenization.load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocab_size 200"):
        tokenization.train_bpe_tokenizer(["abc"], vocab_size=200)


# ----- bucketing -----

@pytest.mark.parametrize("side", ["left", "right"])
def test_batches_round_trip(tokenizer, side):
    texts = corpus.bundled_sample().texts
    batches = batching.batch_texts(tokenizer, texts, batch_size=32, padding_side=side)
    seen = []
    for batch in batches:
        assert batch.input_ids.shape == batch.attention_mask.shape == (32, batch.input_ids.shape[1])
        assert batch.input_ids.dtype == batch.attention_mask.dtype == np.int32
        for row, i in enumerate(batch.index):
            mask = batch.attention_mask[row]
            if i < 0:
                assert not mask.any() and (batch.input_ids[row] == tokenizer.pad_token_id).all()
                continue
            seen.append(int(i))
            expected = tokenizer(texts[i], add_special_tokens=False).input_ids
            n = len(expected)
            assert mask.sum() == n
            real = slice(len(mask) - n, None) if side == "left" else slice(0, n)
            assert mask[real].all(), "padding on the wrong side"
            assert batch.input_ids[row][real].tolist() == expected
            assert (batch.input_ids[row][mask == 0] == tokenizer.pad_token_id).all()
    assert sorted(seen) == list(range(len(texts)))
    assert len(batches) == -(-len(texts) // 32)
    lengths = {len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts}
    sizes = batching.bucket_sizes(max(lengths))
    assert len(batches.shapes) <= len(sizes) and {t for _, t in batches.shapes} <= set(sizes)
    assert all(t in (8, 16, 32, 64, 128) for _, t in batches.shapes)
    # scatter puts per-row results back in sample order
    restored = batches.scatter([b.attention_mask.sum(axis=1) for b in batches])
    assert restored.tolist() == [len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts]


def test_special_tokens_option(tokenizer):
    batches = batching.batch_texts(tokenizer, ["hola", "Hello world"], 4, add_special_tokens=True)
    first = batches[0]
    for row, i in enumerate(first.index[:2]):
        assert first.input_ids[row, 0] == tokenizer.bos_token_id
        assert first.input_ids[row, : first.attention_mask[row].sum()].tolist() == tokenizer(
            ["hola", "Hello world"][i]).input_ids


def test_bucket_sizes_and_caps():
    assert batching.bucket_sizes(20) == [8, 16, 32]
    assert batching.bucket_sizes(20, max_length=100) == [8, 16, 32, 64, 100]
    assert batching.bucket_sizes(5, buckets=[48, 12]) == [12, 48]
    assert batching.bucket_sizes(5, buckets=[12, 48], max_length=30) == [12, 30]
    ids = [[5] * 3, [6] * 20, [7] * 9]
    with pytest.raises(ValueError, match="sample 1 has 20 tokens, more than the maximum 16"):
        batching.make_batches(ids, 2, pad_id=0, max_length=16)
    cut = batching.make_batches(ids, 2, pad_id=0, max_length=16, truncate=True)
    assert cut.shapes == ((2, 8), (2, 16))
    assert cut.scatter([b.attention_mask.sum(1) for b in cut]).tolist() == [3, 16, 9]
    fixed = batching.make_batches(ids, 1, pad_id=0, buckets=[4, 24])
    assert fixed.shapes == ((1, 4), (1, 24))


def test_empty_tokenization_is_an_error(tokenizer):
    with pytest.raises(ValueError, match=r"sample 1 gives no tokens: ''"):
        batching.tokenize_each(tokenizer, ["ok", ""])
    with pytest.raises(ValueError, match="sample 0 has no tokens"):
        batching.make_batches([[], [1]], 2, pad_id=0)


# ----- perplexity windows -----

def test_windows():
    ids = np.arange(23)
    w = batching.windows(ids, 5)
    assert w.dtype == np.int32 and w.shape == (4, 5)
    assert w[1].tolist() == [5, 6, 7, 8, 9] and w[-1, -1] == 19
    assert batching.windows(list(range(10)), 10).shape == (1, 10)
    with pytest.raises(ValueError, match="only 4 tokens, fewer than one window of seqlen=5"):
        batching.windows([1, 2, 3, 4], 5)
