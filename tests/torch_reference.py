"""The independent reference: tiny random HF checkpoints and PyTorch `transformers` forwards with
forward hooks that read (and zero) the MLP neurons as METHOD.md defines them."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
import transformers

VOCAB = 101

# name -> (config class, config kwargs, options: save_pretrained kwargs, bin_shards, random_biases).
# Heads: BLOOM 6 (not a power of two); LLaMA grouped-query (4 query heads, 2 kv heads); tied and untied
# heads; single-file, sharded, .bin.
CHECKPOINTS = {
    "bloom": (transformers.BloomConfig, dict(hidden_size=48, n_head=6, n_layer=3), {}),
    "bloom_postln_sharded": (
        transformers.BloomConfig,
        dict(hidden_size=32, n_head=4, n_layer=2, apply_residual_connection_post_layernorm=True),
        dict(max_shard_size="20KB")),
    "bloom_bin": (transformers.BloomConfig, dict(hidden_size=32, n_head=2, n_layer=2),
                  dict(bin_shards=2)),
    "llama_gqa_sharded": (
        transformers.LlamaConfig,
        dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, rope_theta=500.0, rms_norm_eps=1e-5),
        dict(max_shard_size="40KB")),
    # Head counts and widths that divide a model axis of 8 (LLaMA's 4 kv heads do not: replicated).
    "bloom_mesh": (transformers.BloomConfig, dict(hidden_size=64, n_head=8, n_layer=2), {}),
    "llama_mesh": (
        transformers.LlamaConfig,
        dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=8,
             num_key_value_heads=4), dict(max_shard_size="40KB")),
    "llama_tied": (
        transformers.LlamaConfig,
        dict(hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=2,
             tie_word_embeddings=True), {}),
    # Families and rope scaling (tests/test_families.py), hidden size 32 so that neurons stay small enough
    # (|h| < 30) for 1e-4 to hold over 40 tokens. Qwen2: q/k/v biases, untied head. Qwen3: head_dim
    # 16 != 48 / 4, per-head q/k norms, attention_bias, tied head. LLaMA 3 scaling with a 16-token original
    # context and wavelengths (2 pi / inv_freq) in all three of its bands: 6.3 kept, 14.7 blended, 34.4 and
    # 80.6 divided by the factor.
    "qwen2": (
        transformers.Qwen2Config,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rope_parameters=dict(rope_type="default", rope_theta=500.0)),
        dict(random_biases=True)),
    "qwen3": (
        transformers.Qwen3Config,
        dict(hidden_size=48, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, attention_bias=True, tie_word_embeddings=True),
        dict(random_biases=True)),
    "llama_rope_llama3": (
        transformers.LlamaConfig,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rope_parameters=dict(
                 rope_type="llama3", rope_theta=30.0, factor=4.0, low_freq_factor=1.0, high_freq_factor=2.0,
                 original_max_position_embeddings=16)), {}),
    "llama_rope_linear": (
        transformers.LlamaConfig,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=2.5)), {}),
    # YaRN (Qwen2.5 / Qwen3 past their 32k context) with a 16-token original context: frequencies in all
    # three bands (kept, ramped, divided by 4), and cos/sin times 0.1 ln 4 + 1.
    "qwen2_yarn": (
        transformers.Qwen2Config,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, rope_parameters=dict(
                 rope_type="yarn", rope_theta=500.0, factor=4.0, original_max_position_embeddings=16)),
        dict(random_biases=True)),
    # Dynamic NTK past a 16-token context (theta grows with each sequence's length).
    "llama_rope_dynamic": (
        transformers.LlamaConfig,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=16,
             rope_parameters=dict(rope_type="dynamic", rope_theta=500.0, factor=2.0)), {}),
    # Sliding windows far shorter than the test sequences (up to 40 tokens). Mistral: every layer slides
    # (window 4), head_dim 8 != 32 / 8, 8 query heads and 2 kv heads so that a model axis of 2 or 4
    # splits them. Qwen2: window 5 in layers >= max_window_layers = 1 only (full, sliding, sliding).
    "mistral": (
        transformers.MistralConfig,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=8,
             num_key_value_heads=2, head_dim=8, sliding_window=4,
             rope_parameters=dict(rope_type="default", rope_theta=500.0)), {}),
    "qwen2_sliding": (
        transformers.Qwen2Config,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, use_sliding_window=True, sliding_window=5, max_window_layers=1,
             rope_parameters=dict(rope_type="default", rope_theta=500.0)),
        dict(random_biases=True)),
    # Gemma 2: head_dim 16 != 32 / 4, query_pre_attn_scalar 12 != 16, soft caps that bite (attention 5,
    # logits 3), window 4 in layers 0 and 2 of 3 (sliding, full, sliding), tied head, gelu tanh GeGLU.
    "gemma2": (
        transformers.Gemma2Config,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=12, attn_logit_softcapping=5.0,
             final_logit_softcapping=3.0, sliding_window=4,
             rope_parameters=dict(rope_type="default", rope_theta=500.0)), {}),
    # Gemma 3: per-head q/k norms, window 4 in layers 0 and 2 of 3 with their own rotary embedding (theta
    # 50) and a linearly scaled one (theta 1000, factor 4) in the full layer, head_dim 16 != 32 / 4,
    # query_pre_attn_scalar 12, an untied head.
    "gemma3": (
        transformers.Gemma3TextConfig,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=12, sliding_window=4,
             layer_types=["sliding_attention", "full_attention", "sliding_attention"], tie_word_embeddings=False,
             rope_parameters={"full_attention": dict(rope_type="linear", rope_theta=1000.0, factor=4.0),
                              "sliding_attention": dict(rope_type="default", rope_theta=50.0)}), {}),
    # Cohere (Aya Expanse, Command R): attention and MLP in parallel on one LayerNorm, interleaved rotary
    # pairs, a q/k LayerNorm weight per head (use_qk_norm, Command R+), logits times 0.5, tied head.
    "cohere": (
        transformers.CohereConfig,
        dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, use_qk_norm=True, logit_scale=0.5, eos_token_id=2,
             rope_parameters=dict(rope_type="default", rope_theta=500.0)), {}),
}


def make_model(name: str, seed: int = 0, vocab_size: int = VOCAB) -> transformers.PreTrainedModel:
    """A tiny random HF model whose every weight (norms included) is far from its default init, so a
    wrong transpose or swapped parameter changes the logits. HF initialises linear biases to 0; with
    the option `random_biases` they are random too, so a missed bias changes the logits."""
    config_cls, kwargs, options = CHECKPOINTS[name]
    config = config_cls(vocab_size=vocab_size, initializer_range=0.3, attn_implementation="eager", **kwargs)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or (options.get("random_biases") and pname.endswith(".bias")):
                p.add_(0.2 * torch.randn_like(p))
    return model


def save_checkpoint(name: str, path: Path, seed: int = 0, vocab_size: int = VOCAB) -> Path:
    """save_pretrained, or with `bin_shards=k` the pickle layout of BLOOM's intermediate checkpoints:
    pytorch_model-0000i-of-0000k.bin files and pytorch_model.bin.index.json (pytorch_model.bin if k=1)."""
    model = make_model(name, seed, vocab_size)
    save = dict(CHECKPOINTS[name][2])
    save.pop("random_biases", None)
    shards = save.pop("bin_shards", 0)
    if not shards:
        model.save_pretrained(path, **save)
        return path
    model.config.save_pretrained(path)
    state = model.state_dict()
    if shards == 1:
        torch.save(state, path / "pytorch_model.bin")
        return path
    names = list(state)
    weight_map = {}
    for i, part in enumerate(np.array_split(np.arange(len(names)), shards)):
        file = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        torch.save({names[j]: state[names[j]] for j in part}, path / file)
        weight_map.update({names[j]: file for j in part})
    (path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


def load_model(path: Path) -> transformers.PreTrainedModel:
    return transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


def _mlps(model):
    layers = model.transformer.h if model.config.model_type == "bloom" else model.model.layers
    return [layer.mlp for layer in layers]


def _layer(x, m):
    """Layer m of x [M, F] or [B, M, F] as a tensor [1 or B, 1, F] (broadcast over tokens)."""
    layer = np.asarray(x)[..., m, :]
    return torch.tensor(layer[None, None] if layer.ndim == 1 else layer[:, None])


@contextlib.contextmanager
def neuron_hooks(model, neuron_mask=None, edit=None):
    """Record each layer's neurons [B, T, F] (after any edit) while active. `neuron_mask` [M, F] or
    [B, M, F] zeroes neurons with the reference's h * (1 - mask); `edit` = (mask, mode, values), each
    [M, F] or [B, M, F], sets ("set"), adds to ("add") or multiplies ("scale") the masked neurons by
    values, written the obvious way with torch.where."""
    recorded = []
    handles = []
    for m, mlp in enumerate(_mlps(model)):
        keep = None if neuron_mask is None else 1.0 - _layer(np.asarray(neuron_mask, np.float32), m)
        chosen = values = None
        if edit is not None:
            chosen, values = _layer(edit[0], m).bool(), _layer(np.asarray(edit[2], np.float32), m)

        def neurons(h, keep=keep, chosen=chosen, values=values):
            if keep is not None:
                h = h * keep
            if chosen is not None:
                new = {"set": lambda: values.to(h.dtype).expand_as(h), "add": lambda: h + values.to(h.dtype),
                       "scale": lambda: h * values.to(h.dtype)}[edit[1]]()
                h = torch.where(chosen, new, h)
            recorded.append(h.detach().float().numpy().copy())
            return h

        if model.config.model_type == "bloom":
            handles.append(mlp.gelu_impl.register_forward_hook(lambda mod, inp, out, f=neurons: f(out)))
        else:
            handles.append(mlp.down_proj.register_forward_pre_hook(lambda mod, inp, f=neurons: (f(inp[0]),)))
    try:
        yield recorded
    finally:
        for h in handles:
            h.remove()


def forward(model, input_ids, attention_mask, neuron_mask=None, edit=None):
    """logits [B, T, V] and neurons [B, M, T, F] as numpy float32. Rotary models (all but BLOOM) get
    position ids from the attention mask (as HF generate does), so left padding is exact."""
    ids = torch.tensor(np.asarray(input_ids), dtype=torch.long)
    mask = torch.tensor(np.asarray(attention_mask), dtype=torch.long)
    kwargs = {}
    if model.config.model_type != "bloom":
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), neuron_hooks(model, neuron_mask, edit) as recorded:
        logits = model(input_ids=ids, attention_mask=mask, **kwargs).logits.float().numpy()
    return logits, np.stack(recorded, axis=1)


def fresh_rope(model):
    """`model` with its rotary embedding as loaded: transformers' dynamic RoPE keeps the frequencies of the
    longest sequence it has seen."""
    model.model.rotary_emb = type(model.model.rotary_emb)(model.config)
    return model


def pooled_alone(model, tokens) -> np.ndarray:
    """float32 [M, F]: each layer's neurons of the one sequence `tokens` [T], unpadded and alone in its
    batch, averaged over its tokens, as in a freshly loaded model (`fresh_rope`)."""
    if (getattr(model.config, "rope_parameters", None) or {}).get("rope_type") == "dynamic":
        fresh_rope(model)
    ids = np.asarray(tokens)[None]
    _, neurons = forward(model, ids, np.ones_like(ids))
    return neurons[0].mean(axis=1)
