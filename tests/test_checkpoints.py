"""Checkpoint loading: storage layouts, and a clear error for each kind of bad input."""

import json
import shutil
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import lingua_jax as lj


def copy_config(src, dst, **changes):
    dst.mkdir()
    config = json.loads((src / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def logits(lm):
    ids = np.arange(12, dtype=np.int32).reshape(2, 6)
    return np.asarray(lm(ids).logits)


def test_bloom_keys_without_transformer_prefix_load_the_same(checkpoint, tmp_path):
    """bigscience's own BLOOM checkpoints store `h.0....`, not `transformer.h.0....`."""
    src = checkpoint("bloom")
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(src / "model.safetensors").items()}
    dst = copy_config(src, tmp_path / "bare")
    save_file(tensors, dst / "model.safetensors")
    np.testing.assert_array_equal(logits(lj.load_pretrained(dst)), logits(lj.load_pretrained(src)))


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lj.load_pretrained(tmp_path / "nowhere")


def test_no_config_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        lj.load_pretrained(tmp_path)


def test_unsupported_model_type(checkpoint, tmp_path):
    dst = copy_config(checkpoint("bloom"), tmp_path / "gpt2", model_type="gpt2")
    with pytest.raises(ValueError, match="unsupported model_type 'gpt2'"):
        lj.load_pretrained(dst)


def test_no_weights(checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="has no weights"):
        lj.load_pretrained(copy_config(checkpoint("bloom"), tmp_path / "empty"))


def test_missing_shard(checkpoint, tmp_path):
    dst = tmp_path / "partial"
    shutil.copytree(checkpoint("llama_gqa_sharded"), dst)
    shard = sorted(dst.glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=shard.name):
        lj.load_pretrained(dst)


def test_missing_tensor(checkpoint, tmp_path):
    src = checkpoint("bloom")
    tensors = load_file(src / "model.safetensors")
    del tensors["transformer.h.1.mlp.dense_4h_to_h.bias"]
    save_file(tensors, copy_config(src, tmp_path / "missing") / "model.safetensors")
    with pytest.raises(KeyError, match="no tensor 'transformer.h.1.mlp.dense_4h_to_h.bias'"):
        lj.load_pretrained(tmp_path / "missing")


def test_tensor_shape_disagrees_with_config(checkpoint, tmp_path):
    src = checkpoint("llama_gqa_sharded")
    dst = copy_config(src, tmp_path / "wider", intermediate_size=128)
    for f in src.glob("*.safetensors*"):
        shutil.copy(f, dst)
    with pytest.raises(ValueError, match=r"tensor 'model.layers.0.mlp.(gate|up|down)_proj.weight' has shape"):
        lj.load_pretrained(dst)


def test_pytorch_bin_loads_and_needs_torch(checkpoint, monkeypatch):
    path = checkpoint("bloom_bin")
    assert (path / "pytorch_model.bin.index.json").is_file()
    assert np.isfinite(logits(lj.load_pretrained(path))).all()
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match="pytorch_model-00001-of-00002.bin.*needs torch"):
        lj.load_pretrained(path)


def test_unsupported_dtype(checkpoint):
    with pytest.raises(ValueError, match="unsupported dtype 'float16'"):
        lj.load_pretrained(checkpoint("bloom"), dtype="float16")


def test_bad_call_arguments(checkpoint):
    lm = lj.load_pretrained(checkpoint("bloom"))
    ids = np.zeros((2, 5), np.int32)
    with pytest.raises(ValueError, match="neuron_mask has shape"):
        lm(ids, neuron_mask=np.zeros((lm.num_layers, lm.num_neurons + 1)))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        lm(ids, np.ones((2, 4)))
    with pytest.raises(ValueError, match="capture must be one of"):
        lm(ids, capture="mean")


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded", "llama_tied"])
def test_save_pretrained_round_trips_through_transformers(checkpoint, tmp_path, name):
    import torch_reference as ref

    lm = lj.load_pretrained(checkpoint(name))
    out = lj.save_pretrained(lm, tmp_path / "export")
    ids = np.arange(12, dtype=np.int32).reshape(2, 6)
    torch_logits, _ = ref.forward(ref.load_model(out), ids, np.ones_like(ids))
    np.testing.assert_allclose(logits(lm), torch_logits, atol=1e-4)
    np.testing.assert_array_equal(logits(lj.load_pretrained(out)), logits(lm))
