import os

# Tests run on the CPU; 8 fake devices let sharding tests build meshes (set before jax is imported).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(name, vocab_size=101) -> the directory of a tiny random HF checkpoint (see
    torch_reference.CHECKPOINTS), written once per session. A trained BPE tokenizer needs a vocab
    above 260 (256 bytes + specials)."""
    from torch_reference import VOCAB, save_checkpoint

    made = {}

    def get(name, vocab_size=VOCAB):
        if (name, vocab_size) not in made:
            made[name, vocab_size] = save_checkpoint(name, tmp_path_factory.mktemp(name), vocab_size=vocab_size)
        return made[name, vocab_size]

    return get


@pytest.fixture(scope="module")
def models(checkpoint):
    """models(name) -> (our LM, the PyTorch transformers model) of the tiny checkpoint `name`, loaded once
    per test module."""
    import lingua_jax as lj
    from torch_reference import load_model

    cache = {}

    def get(name):
        if name not in cache:
            path = checkpoint(name)
            cache[name] = (lj.load_pretrained(path), load_model(path))
        return cache[name]

    return get
