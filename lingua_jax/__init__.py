"""lingua_jax: key linguistic regions and cross-lingual alignment of multilingual LLMs in JAX/Flax."""

from lingua_jax import data, evaluate, extract, generation, langid, metrics, models, sharding, steering
from lingua_jax.lm import LM, Inputs, LMOutput, load_pretrained, save_pretrained
from lingua_jax.models.common import Intervention

__all__ = ["Inputs", "Intervention", "LM", "LMOutput", "data", "evaluate", "extract", "generation", "langid", "load_pretrained",
           "metrics", "models", "save_pretrained", "sharding", "steering"]
