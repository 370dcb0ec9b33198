"""Flax BLOOM and LLaMA, and the registry that maps an HF `model_type` to them."""

from __future__ import annotations

import dataclasses
from typing import Any

from lingua_jax.models.bloom import BloomForCausalLM, BloomSpec
from lingua_jax.models.llama import LlamaForCausalLM, LlamaSpec


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture: its spec, its Flax module, and how its HF checkpoint names tensors.

    `base_prefix` is the HF name of the backbone ("transformer." keys may also be stored without it);
    `stack` is the scanned layer collection, stored in HF as `<stack>.<i>.`.
    """

    name: str
    spec_cls: type
    module_cls: type
    base_prefix: str
    stack: str


FAMILIES = {
    "bloom": Family("bloom", BloomSpec, BloomForCausalLM, base_prefix="transformer", stack="h"),
    "llama": Family("llama", LlamaSpec, LlamaForCausalLM, base_prefix="model", stack="layers"),
}


def family_of(config: Any) -> Family:
    """The Family for an HF config; a clear error for any other model_type."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported model_type {model_type!r}: lingua_jax supports {sorted(FAMILIES)}")
    return FAMILIES[model_type]


__all__ = ["FAMILIES", "Family", "family_of", "BloomForCausalLM", "BloomSpec", "LlamaForCausalLM", "LlamaSpec"]
