"""The families lingua_jax runs (BLOOM; LLaMA, Qwen2, Qwen3, Mistral, Gemma 2, Gemma 3 and Cohere, all one
rotary decoder module) and the registry that maps an HF `model_type` to them: the only place that lists
model types. Adding a family is its module (or fields of an existing spec) and one entry here."""

from __future__ import annotations

import dataclasses
from typing import Any

import transformers

from lingua_jax.models.bloom import BloomForCausalLM, BloomSpec
from lingua_jax.models.decoder import DecoderForCausalLM, DecoderSpec


@dataclasses.dataclass(frozen=True)
class Family:
    """One HF `model_type`: its HF config class, spec, Flax module, and how its checkpoint names tensors.

    `base_prefix` is the HF name of the backbone ("transformer." keys may also be stored without it);
    `stack` is the scanned layer collection, stored in HF as `<stack>.<i>.`. `variant`: spec fields
    that the family fixes and its HF config does not state (Qwen2's q/k/v biases; Mistral's sliding window
    in every layer, whatever `layer_types` its config may carry; Gemma's norms and layer), set over
    `spec_cls.from_hf(config)`.
    """

    name: str
    config_cls: type[transformers.PretrainedConfig]
    spec_cls: type
    module_cls: type
    base_prefix: str
    stack: str
    variant: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    def spec(self, config: transformers.PretrainedConfig) -> Any:
        """The spec of an HF config of this family."""
        return dataclasses.replace(self.spec_cls.from_hf(config), **self.variant)


GEMMA = dict(norm="gemma_rms", block="sandwich", embed_scale=True)


def decoder(name: str, config_cls: type[transformers.PretrainedConfig], **variant: Any) -> Family:
    """A family of the rotary decoder module, its checkpoint named as LLaMA's (model.layers.<i>...)."""
    return Family(name, config_cls, DecoderSpec, DecoderForCausalLM, base_prefix="model", stack="layers",
                  variant=variant)


FAMILIES = {family.name: family for family in (
    Family("bloom", transformers.BloomConfig, BloomSpec, BloomForCausalLM, base_prefix="transformer", stack="h"),
    decoder("llama", transformers.LlamaConfig),
    decoder("qwen2", transformers.Qwen2Config, qkv_bias=True, o_proj_bias=False),
    decoder("qwen3", transformers.Qwen3Config, qk_norm="shared"),
    decoder("mistral", transformers.MistralConfig, sliding_layers=None),
    decoder("gemma2", transformers.Gemma2Config, **GEMMA),
    decoder("gemma3_text", transformers.Gemma3TextConfig, qk_norm="shared", **GEMMA),
    decoder("cohere", transformers.CohereConfig, norm="layer", block="parallel", rope_interleaved=True),
)}


def family_named(model_type: str | None, where: str = "") -> Family:
    """The Family of an HF `model_type`; for any other a clear error, naming `where` it was read."""
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported model_type {model_type!r}{f' in {where}' if where else ''}: "
                         f"lingua_jax supports {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def family_of(config: Any) -> Family:
    """The Family for an HF config; a clear error for any other model_type."""
    return family_named(getattr(config, "model_type", None))


__all__ = ["FAMILIES", "Family", "family_named", "family_of", "BloomForCausalLM", "BloomSpec", "DecoderForCausalLM",
           "DecoderSpec"]
