"""lingua_jax: key linguistic regions and cross-lingual alignment of multilingual LLMs in JAX/Flax."""

from lingua_jax import data, evaluate, extract, generation, metrics, models, sharding
from lingua_jax.lm import LM, LMOutput, load_pretrained, save_pretrained

__all__ = ["LM", "LMOutput", "data", "evaluate", "extract", "generation", "load_pretrained", "metrics", "models", "save_pretrained", "sharding"]
