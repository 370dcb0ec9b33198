"""Training from scratch: the loss (against a plain full-logits cross entropy), a tiny run whose loss
falls and whose export PyTorch `transformers` reads with the same logits, and determinism per seed."""

import csv
import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import optax
import pytest

import lingua_jax as lj
import torch_reference as ref
from lingua_jax import sharding, train
from lingua_jax.data import load_flores, load_tokenizer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (SHARED_DATA / "flores200_devtest").is_dir(),
                                reason=f"the real training text is not at {SHARED_DATA}")


def tiny_config(family: str = "bloom"):
    spec = importlib.util.spec_from_file_location("tiny_train", CONFIGS / "tiny_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(family)


def held_out_ids(tokenizer, rows: int, length: int) -> np.ndarray:
    """int32 [rows, length]: FLORES devtest lines 0-199 (never trained on), English then Chinese."""
    flores = load_flores(SHARED_DATA / "flores200_devtest", ["en", "zh"])
    stream, _ = train.token_stream(tokenizer, {code: flores[code][:200] for code in ("en", "zh")})
    return stream[: rows * length].reshape(rows, length)


def test_chunked_loss_equals_full_logits_cross_entropy(checkpoint):
    """Mean NLL over real (input, target) pairs, right padding masked, any chunk size."""
    lm = lj.load_pretrained(checkpoint("bloom"))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, ref.VOCAB, size=(3, 9)).astype(np.int32)
    mask = np.ones_like(tokens)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    logits = np.asarray(lm(tokens[:, :-1], mask[:, :-1]).logits, np.float64)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    keep = mask[:, :-1] * mask[:, 1:]
    expected = float((nll * keep).sum() / keep.sum())
    loss = jax.jit(train.next_token_loss, static_argnames=("module", "chunk"))
    for chunk in (2, 8):
        got = loss(lm.module, lm.params, tokens, mask, chunk=chunk)
        np.testing.assert_allclose(float(got), expected, rtol=1e-5)


@needs_data
@pytest.mark.parametrize("family", ["bloom", "llama"])
def test_tiny_run_learns_and_exports_what_transformers_reads(family, tmp_path):
    """BLOOM on all 8 devices on "data"; LLaMA tensor-parallel on a (4, 2) mesh."""
    config = tiny_config(family)
    config.mesh = (8, 1) if family == "bloom" else (4, 2)
    result = train.train_and_export(config, SHARED_DATA, tmp_path)
    steps = config.train.steps
    assert result.loss.shape == (steps,) and np.isfinite(result.loss).all()
    assert result.loss[-5:].mean() < result.loss[:5].mean() - 1.0
    with open(tmp_path / "loss_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, steps + 1))
    np.testing.assert_allclose([float(r["loss"]) for r in rows], result.loss, rtol=1e-5)
    assert json.loads((tmp_path / "training.json").read_text())["final_loss"] == pytest.approx(result.loss[-1])

    tokenizer = load_tokenizer(tmp_path)
    assert len(tokenizer) == config.tokenizer.vocab_size
    ids = held_out_ids(tokenizer, rows=8, length=32)
    torch_logits, _ = ref.forward(ref.load_model(tmp_path), ids, np.ones_like(ids))
    np.testing.assert_allclose(np.asarray(result.lm(ids).logits), torch_logits, atol=1e-4)
    np.testing.assert_allclose(np.asarray(lj.load_pretrained(tmp_path)(ids).logits), torch_logits, atol=1e-4)
    # PyTorch's own cross entropy on held-out text: far below the uniform guess ln(V).
    held_out = optax.softmax_cross_entropy_with_integer_labels(torch_logits[:, :-1], ids[:, 1:]).mean()
    assert held_out < np.log(config.tokenizer.vocab_size) - 1.0


@needs_data
def test_same_seed_same_run():
    """Bit for bit on one mesh. (Across meshes the reduction order differs, and AdamW turns the float
    noise of gradients that are zero in exact arithmetic, such as BLOOM's key biases, into lr-sized
    steps; the loss curves still agree.)"""
    config = tiny_config()
    config.train.update(steps=3, warmup_steps=1)
    texts = train.training_texts(SHARED_DATA, config.data)
    tokenizer = lj.data.train_bpe_tokenizer([t for lines in texts.values() for t in lines], 300, add_bos=False)
    stream, _ = train.token_stream(tokenizer, texts)
    hf = train.hf_config(config.model, tokenizer)
    first, again = (train.train(hf, stream, config, sharding.make_mesh((8, 1))) for _ in range(2))
    np.testing.assert_array_equal(again.loss, first.loss)
    for a, b in zip(jax.tree_util.tree_leaves(again.lm.params), jax.tree_util.tree_leaves(first.lm.params)):
        np.testing.assert_array_equal(a, b)


def test_optimizer_state_is_sharded_like_the_params(checkpoint):
    config = tiny_config("llama")
    config.model.update(num_heads=4, num_kv_heads=2)
    module, _ = lj.lm.build_module(train.hf_config(config.model, _Vocab(300)))
    tx = train.optimizer(config.train)
    state, _ = train.init_state(module, tx, seed=0, mesh=sharding.make_mesh((4, 2)))
    adam = state.opt_state[1][0]
    for moments in (adam.mu, adam.nu):
        for p, m in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(moments)):
            assert m.sharding.spec == p.sharding.spec
    kernel = state.params["model"]["layers"]["mlp"]["up_proj"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, None, "model")


def test_bad_batch_or_chunk_is_a_clear_error():
    config = tiny_config()
    mesh = sharding.make_mesh((8, 1))
    config.train.batch_size = 4
    with pytest.raises(ValueError, match="does not divide over the mesh's data axis"):
        train.check_train_config(config.train, mesh)
    config.train.update(batch_size=8, loss_chunk=5)
    with pytest.raises(ValueError, match="does not divide seq_len"):
        train.check_train_config(config.train, mesh)


class _Vocab:
    """What `hf_config` reads from a tokenizer: its length and special token ids."""

    def __init__(self, size: int):
        self.size, self.bos_token_id, self.eos_token_id, self.pad_token_id = size, 1, 2, 0

    def __len__(self) -> int:
        return self.size
