"""The public reference code's method (X-LANCE/LinguaFranca), written fresh as the speed baseline.

What it does, as the reference does it (PyTorch `transformers`, eager, float32 here):
- Activations: a forward hook on every layer's `mlp.gelu_impl` (BLOOM's neurons); each sentence is
  tokenized alone (no special tokens) and run through `model.generate(max_new_tokens=1)`, one sentence
  per call; the hook averages the GELU output over the tokens and concatenates the M layers, [M·F].
- Contribution scores: each sample's whole vector L2-normalised, plus 1e-5, then a Python loop over
  every pair i < j of a language with a running mean `s += (a_i * a_j - s) / (count + 1)`, O(n²·K);
  z-scores over the languages with numpy (ddof 0).
- Perplexity: `model(windows).logits` for a batch of seqlen windows, shift, `CrossEntropyLoss`; neurons
  zeroed by forward hooks that return `output * (1 - mask)`.

Only the method is kept (no datasets or plotting; inputs go to the model's device, CPU or CUDA); the
numbers are those of METHOD.md's definitions (the pairwise scores are divided by the number of pairs,
which leaves z unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class MeanActivationHook:
    """Forward hook on every layer's GELU: after the last layer fires, `vector` holds the token mean
    of each layer's neurons, concatenated, float32 [M·F] (the reference's SaveActivationHookBloom)."""

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.results: list[torch.Tensor] = []
        self.vector: torch.Tensor | None = None

    def __call__(self, module, inputs, output):
        self.results.append(output.sum(dim=0).div(output.shape[0]).sum(dim=0).div(output.shape[1]).detach().cpu())
        if len(self.results) >= self.num_layers:
            self.vector = torch.cat(self.results)
            self.results = []


def extract(model: Any, tokenizer: Any, sentences: Sequence[str]) -> np.ndarray:
    """float32 [N, M·F]: each sentence's token-mean neurons, one `generate(max_new_tokens=1)` each."""
    layers = model.transformer.h
    hook = MeanActivationHook(len(layers))
    handles = [layer.mlp.gelu_impl.register_forward_hook(hook) for layer in layers]
    outputs = []
    try:
        with torch.no_grad():
            for sentence in sentences:
                ids = tokenizer(sentence, return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
                model.generate(inputs=ids, attention_mask=torch.ones_like(ids), max_new_tokens=1,
                               do_sample=False, pad_token_id=tokenizer.pad_token_id)
                outputs.append(hook.vector.float().numpy())
                hook.vector = None
    finally:
        for handle in handles:
            handle.remove()
    return np.stack(outputs)


def pairwise_scores(hs: np.ndarray, offset: float = 10e-6) -> np.ndarray:
    """float [K]: mean over pairs i < j of a(s_i)·a(s_j) elementwise, the reference's running-mean loop
    over one language's vectors hs [n, K] (normalised here, plus `offset`: the reference's 1e-5)."""
    hs = hs / np.linalg.norm(hs, axis=1, keepdims=True) + offset
    sums = np.zeros(hs.shape[1])
    count = 0
    for i in range(hs.shape[0]):
        for j in range(i + 1, hs.shape[0]):
            sums += (hs[i] * hs[j] - sums) / (count + 1)
            count += 1
    return sums


def zscores(scores: np.ndarray) -> np.ndarray:
    """[L, K] scores -> [L, K] z over the languages (population std), as the reference's zscore_outliers."""
    return (scores - scores.mean(axis=0)) / scores.std(axis=0)


def contribution_zscores(acts: np.ndarray, num_languages: int) -> np.ndarray:
    """acts [L·n, K] in language order -> z-scores [L, K] (pairwise loop per language, then z)."""
    n = acts.shape[0] // num_languages
    return zscores(np.stack([pairwise_scores(acts[l * n:(l + 1) * n]) for l in range(num_languages)]))


class ZeroNeuronsHook:
    """Forward hooks that zero masked neurons: the GELU output times (1 − mask[layer])."""

    def __init__(self, model: Any, neuron_mask: np.ndarray):
        self.handles = []
        for layer, module in enumerate(model.transformer.h):
            weight = module.mlp.dense_4h_to_h.weight
            keep = 1.0 - torch.as_tensor(np.asarray(neuron_mask[layer]), dtype=weight.dtype, device=weight.device)
            self.handles.append(module.mlp.gelu_impl.register_forward_hook(lambda m, i, out, keep=keep: out * keep))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def window_nll(model: Any, windows: np.ndarray, batch_size: int = 1,
               neuron_mask: np.ndarray | None = None) -> float:
    """Summed NLL (float) of windows int [N, T] over their tokens 2..T, as the reference's
    eval_ppl_wikitext: full logits, shift, CrossEntropyLoss (mean) times the predicted count."""
    hooks = None if neuron_mask is None else ZeroNeuronsHook(model, neuron_mask)
    total = 0.0
    try:
        with torch.no_grad():
            for start in range(0, len(windows), batch_size):
                inputs = torch.as_tensor(windows[start:start + batch_size], dtype=torch.long, device=model.device)
                logits = model(inputs).logits
                shift_logits = logits[:, :-1, :].contiguous()
                loss = torch.nn.CrossEntropyLoss()(shift_logits.reshape(-1, shift_logits.size(-1)),
                                                   inputs[:, 1:].reshape(-1))
                total += float(loss) * shift_logits.shape[0] * shift_logits.shape[1]
    finally:
        if hooks is not None:
            hooks.remove()
    return total
