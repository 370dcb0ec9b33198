"""The strongest plain PyTorch a competent user would write for the same work: the speed peer.

Unlike the reference method (benchmarks/reference_method.py: one sentence per `generate`, full logits),
this is what one writes knowing PyTorch and `transformers` well, on the same `transformers` model (BLOOM
or LLaMA):
- Attention through `torch.nn.functional.scaled_dot_product_attention` (fused flash attention on CPU;
  on CUDA flash or the memory-efficient kernel, the fused one that takes an additive bias). LLaMA runs
  transformers' own "sdpa" attention. `transformers` refuses `attn_implementation="sdpa"` for BLOOM
  (its ALiBi bias), so `sdpa_attention` installs it on each layer while a call runs: the ALiBi bias
  plus the causal and padding mask, built once per forward and shared by all layers.
- Extraction: sentences tokenized alone, sorted by length, right-padded batches of 16 through
  `model.base_model` (the backbone: no LM head) under `torch.inference_mode()`; a forward pre-hook on
  each layer's down projection (BLOOM's `dense_4h_to_h`, LLaMA's `down_proj`, whose input is the
  neurons) pools them inside the hook (masked mean over the real tokens, float32) into one preallocated
  [N, M, F] array, so per-token activations never leave the layer.
- Masked perplexity: batches of windows through the backbone, the neuron mask applied in place by a
  pre-hook on the down projection, the loss from the final hidden states one chunk of positions at a
  time (`lm_head`, then float32 cross-entropy summed), so float32 logits never exceed [B, chunk, V].
- Contribution scores and z: the closed form over per-language sums of the normalised vectors,
  vectorised torch.

Shapes: N sentences, B batch, T tokens, M layers, F neurons per layer, K = M·F, L languages, V vocabulary.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

LOGITS_BUDGET_BYTES = 1 << 28  # float32 logits of one loss chunk, [B, chunk, V], stay under this (as lingua_jax)


def _sdpa_forward(self, hidden_states, residual, alibi, attention_mask, layer_past=None, use_cache=False,
                  output_attentions=False, bias_of=None, **kwargs):
    """BloomAttention.forward with fused SDPA in place of baddbmm + softmax + bmm (no cache)."""
    b, t, _ = hidden_states.shape
    query, key, value = self._reshape(self.query_key_value(hidden_states))  # each [B, H, T, hd]
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=bias_of(alibi, attention_mask, b))
    return self.dense(context.transpose(1, 2).reshape(b, t, self.hidden_size)) + residual, None


def layers(model: Any) -> Any:
    """The decoder layers of a transformers BLOOM or LLaMA model."""
    backbone = model.base_model
    return backbone.h if hasattr(backbone, "h") else backbone.layers


def down_projection(layer: Any) -> Any:
    """The layer's MLP output projection, whose input is the layer's neurons [B, T, F]."""
    mlp = layer.mlp
    return mlp.dense_4h_to_h if hasattr(mlp, "dense_4h_to_h") else mlp.down_proj


@contextlib.contextmanager
def sdpa_attention(model: Any) -> Iterator[None]:
    """While active, every layer of a BLOOM `model` attends through SDPA with one additive bias
    [B, H, T, T] (ALiBi + the causal/padding mask transformers builds), computed once per forward.
    Other models keep their own attention (transformers' "sdpa" for LLaMA)."""
    if model.config.model_type != "bloom":
        yield
        return
    cache: dict[str, Any] = {}

    def bias_of(alibi: torch.Tensor, mask: torch.Tensor | None, batch: int) -> torch.Tensor:
        key = cache.get("key")
        if key is None or key[0] is not alibi or key[1] is not mask:  # the same for all layers of a forward
            t = alibi.shape[-1]
            additive = mask if mask is not None else torch.full(
                (t, t), torch.finfo(alibi.dtype).min, device=alibi.device).triu(1)
            cache.update(key=(alibi, mask), bias=(alibi.view(batch, -1, 1, t) + additive).to(alibi.dtype))
        return cache["bias"]

    attentions = [block.self_attention for block in layers(model)]
    for attention in attentions:
        attention.forward = types.MethodType(
            lambda self, *a, **k: _sdpa_forward(self, *a, bias_of=bias_of, **k), attention)
    try:
        yield
    finally:
        cache.clear()
        for attention in attentions:
            del attention.forward  # back to the class's method


def length_sorted_batches(token_ids: Sequence[Sequence[int]], batch_size: int) -> list[np.ndarray]:
    """Indices of the sentences, longest first, in groups of `batch_size`."""
    order = np.argsort([-len(t) for t in token_ids], kind="stable")
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def extract(model: Any, tokenizer: Any, sentences: Sequence[str], batch_size: int = 16) -> np.ndarray:
    """float32 [N, M, F]: each sentence's neurons averaged over its tokens (tokenized alone, no special
    tokens), from length-sorted right-padded batches through the backbone."""
    device = model.device
    token_ids = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    blocks = layers(model)
    pooled = torch.empty(len(token_ids), len(blocks), down_projection(blocks[0]).in_features,
                         dtype=torch.float32, device=device)
    batch: dict[str, torch.Tensor] = {}

    def pool(layer: int):
        def hook(module, inputs):  # inputs[0] [B, T, F]; batch["weights"] [B, 1, T]: mask / length
            pooled[batch["rows"], layer] = torch.bmm(batch["weights"], inputs[0].float())[:, 0]
        return hook

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    handles = [down_projection(block).register_forward_pre_hook(pool(i)) for i, block in enumerate(blocks)]
    try:
        with torch.inference_mode(), sdpa_attention(model):
            for rows in length_sorted_batches(token_ids, batch_size):
                longest = len(token_ids[rows[0]])
                ids = torch.full((len(rows), longest), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), longest), dtype=torch.long)
                for r, i in enumerate(rows):
                    ids[r, :len(token_ids[i])] = torch.as_tensor(token_ids[i])
                    mask[r, :len(token_ids[i])] = 1
                ids, mask = ids.to(device), mask.to(device)
                batch.update(rows=torch.as_tensor(rows, device=device),
                             weights=(mask / mask.sum(1, keepdim=True)).float()[:, None, :])
                model.base_model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return pooled.cpu().numpy()


@contextlib.contextmanager
def zeroed_neurons(model: Any, neuron_mask: np.ndarray | None) -> Iterator[None]:
    """While active, the masked neurons (bool [M, F], True = zeroed) of every layer are zeroed in place
    by forward pre-hooks on the down projections."""
    handles = []
    for layer, block in enumerate(layers(model) if neuron_mask is not None else []):
        down = down_projection(block)
        keep = torch.as_tensor(~np.asarray(neuron_mask[layer], bool), dtype=down.weight.dtype,
                               device=down.weight.device)
        handles.append(down.register_forward_pre_hook(lambda m, inputs, keep=keep: inputs[0].mul_(keep)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def window_nll(model: Any, windows: np.ndarray, batch_size: int = 1, neuron_mask: np.ndarray | None = None
               ) -> float:
    """Summed NLL (float) of windows int [N, T] over their tokens 2..T: backbone hidden states, then the
    LM head and float32 cross-entropy one chunk of positions at a time."""
    total = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode(), sdpa_attention(model), zeroed_neurons(model, neuron_mask):
        for start in range(0, len(windows), batch_size):
            ids = torch.as_tensor(windows[start:start + batch_size], dtype=torch.long, device=model.device)
            hidden = model.base_model(input_ids=ids, use_cache=False).last_hidden_state[:, :-1]
            targets = ids[:, 1:]
            chunk = max(1, LOGITS_BUDGET_BYTES // (4 * ids.shape[0] * model.config.vocab_size))
            for c in range(0, hidden.shape[1], chunk):
                logits = model.lm_head(hidden[:, c:c + chunk]).float()
                total += F.cross_entropy(logits.flatten(0, 1), targets[:, c:c + chunk].flatten(),
                                         reduction="sum").double().cpu()
    return float(total)


def contribution_zscores(acts: np.ndarray, lang: np.ndarray, num_languages: int) -> np.ndarray:
    """acts [N, K], lang int [N] -> z [L, K] of the contribution scores Σ_{i<j} a_k(s_i) a_k(s_j) per
    language (a: each sample's normalised vector), by ((Σa)² − Σa²) / 2 with the per-language sums as
    one-hot matmuls; population std over languages."""
    a = torch.from_numpy(acts)
    a = a / torch.linalg.vector_norm(a, dim=1, keepdim=True)
    members = F.one_hot(torch.as_tensor(np.asarray(lang), dtype=torch.long), num_languages).T.to(a.dtype)  # [L, N]
    sums = members @ a
    scores = (sums * sums - members @ (a * a)) / 2
    return ((scores - scores.mean(0)) / scores.std(0, correction=0)).numpy()
