"""Train a small BLOOM or LLaMA from scratch on parallel text, with the project's own Flax modules.

Recipe: a byte-level BPE trained on the training text; each language's lines joined with "\\n" and
tokenized once into one stream; random windows of seq_len + 1 tokens drawn with a seeded numpy
Generator; next-token cross entropy (float32 log-softmax one chunk of positions at a time, padding
masked); optax AdamW with linear warmup and cosine decay, gradients clipped by global norm; one
jit-compiled step with the state donated, parameters and optimizer state split over the mesh by the
partition rules of `lingua_jax.sharding` and the batch over "data". Same seed, same data, same
devices: the same run.

Shapes: B batch, T seq_len, D hidden, V vocabulary, C positions per loss chunk.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import transformers
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lingua_jax import sharding
from lingua_jax.data import load_flores, load_ntrex, train_bpe_tokenizer
from lingua_jax.io import write_atomic
from lingua_jax.lm import LM, Inputs, apply_model, build_module, param_shapes, save_pretrained
from lingua_jax.models import common
from lingua_jax.progress import progress

DECAYED = ("kernel", "embedding")  # weight decay on matrices only, never on biases or norm scales


@flax.struct.dataclass
class TrainState:
    """params: the model's pytree; opt_state: optax's (it holds the step count)."""

    params: Any
    opt_state: Any


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """The trained `lm` and its loss curve: loss, learning_rate, grad_norm float64 [steps], the values
    of each step (loss and gradient norm before that step's update); `seconds` of training."""

    lm: LM
    loss: np.ndarray
    learning_rate: np.ndarray
    grad_norm: np.ndarray
    seconds: float

    def curve_csv(self) -> str:
        """CSV with a header: step (1-based), loss, learning_rate, grad_norm."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["step", "loss", "learning_rate", "grad_norm"])
        for i, row in enumerate(zip(self.loss, self.learning_rate, self.grad_norm), 1):
            writer.writerow([i, *(f"{v:.6g}" for v in row)])
        return out.getvalue()


# --- data ----------------------------------------------------------------------------------------

def training_texts(data_dir: str | os.PathLike, data: ml_collections.ConfigDict) -> dict[str, list[str]]:
    """{language: lines}: FLORES-200 devtest lines [flores_lines[0], flores_lines[1]) and, with
    `data.ntrex`, every NTREX-128 line, from `data_dir`/flores200_devtest and `data_dir`/ntrex128."""
    data_dir = Path(data_dir)
    start, stop = data.flores_lines
    flores = load_flores(data_dir / "flores200_devtest", data.languages)
    texts = {code: list(flores[code][start:stop]) for code in data.languages}
    if data.ntrex:
        ntrex = load_ntrex(data_dir / "ntrex128", data.languages)
        texts = {code: lines + list(ntrex[code]) for code, lines in texts.items()}
    return texts


def token_stream(tokenizer: Any, texts: Mapping[str, Sequence[str]]) -> tuple[np.ndarray, dict[str, int]]:
    """int32 [N]: each language's lines joined with "\\n" and tokenized once (no special tokens), the
    languages one after another; and {language: its number of tokens}."""
    streams = {code: tokenizer("\n".join(lines), add_special_tokens=False)["input_ids"]
               for code, lines in texts.items()}
    counts = {code: len(ids) for code, ids in streams.items()}
    return np.concatenate([np.asarray(ids, np.int32) for ids in streams.values()]), counts


def sample_windows(stream: np.ndarray, rng: np.random.Generator, batch_size: int, length: int) -> np.ndarray:
    """int32 [batch_size, length]: windows of `stream` at uniformly random starts."""
    if stream.size < length:
        raise ValueError(f"the training stream has {stream.size} tokens, fewer than one window of {length}")
    starts = rng.integers(0, stream.size - length + 1, size=batch_size)
    return stream[starts[:, None] + np.arange(length)]


# --- model and optimizer -------------------------------------------------------------------------

def hf_config(model: ml_collections.ConfigDict, tokenizer: Any) -> transformers.PretrainedConfig:
    """The transformers BloomConfig or LlamaConfig of `model` (family, num_layers, hidden_size,
    num_heads; LLaMA also intermediate_size, num_kv_heads, max_positions), vocabulary and special
    token ids from `tokenizer`."""
    tokens = dict(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if model.family == "bloom":
        return transformers.BloomConfig(hidden_size=model.hidden_size, n_layer=model.num_layers,
                                        n_head=model.num_heads, **tokens)
    if model.family == "llama":
        return transformers.LlamaConfig(
            hidden_size=model.hidden_size, intermediate_size=model.intermediate_size,
            num_hidden_layers=model.num_layers, num_attention_heads=model.num_heads,
            num_key_value_heads=model.num_kv_heads, max_position_embeddings=model.max_positions,
            tie_word_embeddings=False, **tokens)
    raise ValueError(f"model.family must be 'bloom' or 'llama', got {model.family!r}")


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0 to learning_rate over warmup_steps, cosine decay to
    learning_rate * end_lr_fraction at `steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=train.learning_rate, warmup_steps=train.warmup_steps,
        decay_steps=train.steps, end_value=train.learning_rate * train.end_lr_fraction)


def optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW (decoupled weight decay on kernels and embeddings only)."""
    decayed = lambda params: jax.tree_util.tree_map_with_path(lambda kp, _: kp[-1].key in DECAYED, params)
    return optax.chain(
        optax.clip_by_global_norm(train.clip_norm),
        optax.adamw(learning_rate_schedule(train), b1=train.b1, b2=train.b2, eps=train.eps,
                    weight_decay=train.weight_decay, mask=decayed))


def init_state(module: Any, tx: optax.GradientTransformation, seed: int, mesh: Mesh
               ) -> tuple[TrainState, TrainState]:
    """(state, its shardings): params from `module.init` with jax.random.key(seed), created directly
    on their mesh shards; the optimizer's moments sharded as the params they follow."""
    shapes = param_shapes(module)
    shardings = sharding.param_shardings(module, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    opt_shardings = optax.tree_map_params(tx, lambda _, s: s, jax.eval_shape(tx.init, shapes), shardings,
                                          transform_non_params=lambda _: replicated)
    state_shardings = TrainState(shardings, opt_shardings)

    def init(key: jax.Array) -> TrainState:
        params = common.init_params(module, key)
        return TrainState(params, tx.init(params))

    state = jax.jit(init, out_shardings=state_shardings)(jax.random.key(seed))
    return state, state_shardings


# --- loss and step -------------------------------------------------------------------------------

def next_token_loss(module: Any, params: Any, tokens: jax.Array, attention_mask: jax.Array, chunk: int
                    ) -> jax.Array:
    """Mean next-token NLL (float32 scalar) of tokens int [B, T + 1]: the model reads tokens[:, :T] and
    predicts tokens[:, 1:]; a prediction counts when both its input and target tokens are real
    (attention_mask 1). The forward service's "logprobs" (`lm.apply_model`, `lm.target_logprobs`, as
    scoring): logits and log-softmax in float32, `chunk` positions at a time, each chunk recomputed in
    the backward pass, so float32 logits never exceed [B, C, V]."""
    scored = (attention_mask[:, :-1] * attention_mask[:, 1:]) > 0
    inputs = Inputs(tokens[:, :-1], attention_mask[:, :-1], targets=tokens[:, 1:], scored=scored)
    sums, _ = apply_model(module, params, inputs, None, output="logprobs", chunk=chunk)
    return -jnp.sum(sums) / jnp.maximum(jnp.sum(scored), 1).astype(jnp.float32)


def make_train_step(module: Any, tx: optax.GradientTransformation, state_shardings: TrainState, mesh: Mesh,
                    chunk: int):
    """jit(state, tokens int [B, T + 1]) -> (new state, {"loss", "grad_norm"}): one AdamW step on the
    batch (split over "data"); the old state's buffers are donated to the new one."""

    def step(state: TrainState, tokens: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        loss_fn = lambda p: next_token_loss(module, p, tokens, jnp.ones_like(tokens), chunk)
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = TrainState(optax.apply_updates(state.params, updates), opt_state)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(step, in_shardings=(state_shardings, sharding.batch_sharding(mesh)),
                   out_shardings=(state_shardings, replicated), donate_argnums=0)


# --- the loop ------------------------------------------------------------------------------------

def check_train_config(train: ml_collections.ConfigDict, mesh: Mesh) -> None:
    """Clear errors for a batch that does not split over the mesh or a chunk that does not divide T."""
    if train.batch_size % mesh.shape["data"]:
        raise ValueError(f"batch_size {train.batch_size} does not divide over the mesh's data axis "
                         f"({mesh.shape['data']})")
    if train.seq_len % train.loss_chunk:
        raise ValueError(f"loss_chunk {train.loss_chunk} does not divide seq_len {train.seq_len}")


def train(hf: transformers.PretrainedConfig, stream: np.ndarray, config: ml_collections.ConfigDict,
          mesh: Mesh | None = None) -> TrainResult:
    """Train the model of `hf` from scratch on random windows of `stream` int32 [N] for
    config.train.steps steps (config: seed, model.dtype, train.*; see configs/demo_train.py).
    `mesh` defaults to all devices on "data"."""
    mesh = sharding.make_mesh(tuple(config.mesh)) if mesh is None else mesh
    t = config.train
    check_train_config(t, mesh)
    module, family = build_module(hf, config.model.dtype)
    tx = optimizer(t)
    state, state_shardings = init_state(module, tx, config.seed, mesh)
    step = make_train_step(module, tx, state_shardings, mesh, t.loss_chunk)
    rng = np.random.default_rng(config.seed)
    schedule = learning_rate_schedule(t)
    metrics: list[dict[str, float]] = []

    def record(done: int, out: dict[str, jax.Array]) -> None:
        metrics.append(jax.device_get(out))
        if done % t.log_every == 0 or done == t.steps:
            logging.info("step %d/%d: loss %.4f, grad norm %.3f, lr %.2e", done, t.steps, metrics[-1]["loss"],
                         metrics[-1]["grad_norm"], float(schedule(done - 1)))

    start, out = time.monotonic(), None
    for i in progress(range(t.steps), t.steps, "training"):
        state, dispatched = step(state, sample_windows(stream, rng, t.batch_size, t.seq_len + 1))
        if out is not None:  # read step i's metrics after dispatching step i + 1: one step in flight
            record(i, out)
        out = dispatched
    record(t.steps, out)
    seconds = time.monotonic() - start
    lm = LM(module, state.params, hf, family, {"trained": f"lingua_jax.train seed={config.seed}"}, mesh)
    return TrainResult(lm, np.array([m["loss"] for m in metrics], np.float64),
                       np.array([schedule(i) for i in range(t.steps)], np.float64),
                       np.array([m["grad_norm"] for m in metrics], np.float64), seconds)


def train_and_export(config: ml_collections.ConfigDict, data_dir: str | os.PathLike, workdir: str | os.PathLike,
                     mesh: Mesh | None = None) -> TrainResult:
    """The whole recipe: read the training text, train the tokenizer, train, and write `workdir` as a
    Hugging Face checkpoint (config.json, model.safetensors, tokenizer files; `lingua_jax.load_pretrained`
    and transformers both read it) plus loss_curve.csv and training.json (config, data, final loss,
    time, versions)."""
    texts = training_texts(data_dir, config.data)
    tokenizer = train_bpe_tokenizer([line for lines in texts.values() for line in lines],
                                    config.tokenizer.vocab_size, config.tokenizer.min_frequency,
                                    add_bos=config.model.family == "llama")
    stream, tokens_per_language = token_stream(tokenizer, texts)
    logging.info("training text: %d tokens %s", stream.size, tokens_per_language)
    result = train(hf_config(config.model, tokenizer), stream, config, mesh)
    workdir = Path(workdir)
    save_pretrained(result.lm, workdir, tokenizer)
    write_atomic(workdir / "loss_curve.csv", result.curve_csv())
    record = summary(config, result, tokens_per_language)
    write_atomic(workdir / "training.json", json.dumps(record, indent=1) + "\n")
    return result


def summary(config: ml_collections.ConfigDict, result: TrainResult, tokens_per_language: dict[str, int]
            ) -> dict[str, Any]:
    """What training.json records: the config, the data, the final loss, the time and versions."""
    last = result.loss[-min(len(result.loss), 50):]
    return {
        "config": config.to_dict(), "tokens_per_language": tokens_per_language,
        "training_tokens": int(sum(tokens_per_language.values())),
        "parameters": int(sum(np.size(p) for p in jax.tree_util.tree_leaves(result.lm.params))),
        "final_loss": float(result.loss[-1]), "final_loss_mean_last_50": float(np.mean(last)),
        "seconds": round(result.seconds, 1), "devices": [str(d) for d in result.lm.mesh.devices.flat],
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
                     "transformers": transformers.__version__},
    }
