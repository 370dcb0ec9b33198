"""lingua_jax: key linguistic regions and cross-lingual alignment of multilingual LLMs in JAX/Flax."""

from lingua_jax import models
from lingua_jax.lm import LM, LMOutput, load_pretrained

__all__ = ["LM", "LMOutput", "load_pretrained", "models"]
