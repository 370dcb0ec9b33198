import os

# Tests run on the CPU; 8 fake devices let sharding tests build meshes (set before jax is imported).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(name) -> the directory of a tiny random HF checkpoint (see torch_reference.CHECKPOINTS),
    written once per session."""
    from torch_reference import save_checkpoint

    made = {}

    def get(name):
        if name not in made:
            made[name] = save_checkpoint(name, tmp_path_factory.mktemp(name))
        return made[name]

    return get
