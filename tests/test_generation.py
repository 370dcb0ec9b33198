"""Greedy decoding with the KV cache against transformers' generate (do_sample=False)."""

import numpy as np
import pytest
import torch

import lingua_jax as lj
import torch_reference as ref
from lingua_jax import generation

NEW = 8


def left_padded_prompts(seed=0, lengths=(6, 4, 2)):
    rng = np.random.RandomState(seed)
    p = max(lengths)
    ids = np.zeros((len(lengths), p), np.int32)
    mask = np.zeros_like(ids)
    for b, n in enumerate(lengths):
        ids[b, p - n:] = rng.randint(3, ref.VOCAB, n)
        mask[b, p - n:] = 1
    return ids, mask


def hf_greedy(model, ids, mask, neuron_mask=None, eos=None):
    with torch.no_grad(), ref.neuron_hooks(model, neuron_mask):
        out = model.generate(torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long(),
                             max_new_tokens=NEW, min_new_tokens=NEW if eos is None else 0, do_sample=False,
                             eos_token_id=eos, pad_token_id=0)
    new = out[:, ids.shape[1]:].numpy()
    return np.pad(new, ((0, 0), (0, NEW - new.shape[1])))  # HF stops early once every row is done


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded"])
def test_greedy_equals_transformers_generate(checkpoint, name):
    path = checkpoint(name)
    lm, model = lj.load_pretrained(path), ref.load_model(path)
    ids, mask = left_padded_prompts()
    ours = generation.greedy(lm, ids, mask, NEW)
    np.testing.assert_array_equal(ours, hf_greedy(model, ids, mask))

    neuron_mask = np.random.RandomState(0).rand(lm.num_layers, lm.num_neurons) < 0.5
    masked = generation.greedy(lm, ids, mask, NEW, neuron_mask=neuron_mask)
    np.testing.assert_array_equal(masked, hf_greedy(model, ids, mask, neuron_mask))
    assert not np.array_equal(masked, ours), "the mask should change some generated token"

    eos = int(ours[0, NEW // 2])  # a token the first prompt emits midway: it stops there
    stopped = generation.greedy(lm, ids, mask, NEW, eos_token_id=eos, pad_token_id=0)
    np.testing.assert_array_equal(stopped, hf_greedy(model, ids, mask, eos=eos))
    assert (stopped[0, NEW // 2 + 1:] == 0).all()


def test_first_argmax_is_numpys_argmax():
    """Ties (the first wins), all equal, -inf and +inf entries: the token jnp/np.argmax picks."""
    logits = np.random.RandomState(0).randn(6, 50).astype(np.float32)
    logits[1] = 0.5
    logits[2, [3, 40]] = 9.0
    logits[3, :45] = -np.inf
    logits[4, [7, 9]] = np.inf
    logits[5, -1] = 9.0
    np.testing.assert_array_equal(generation.first_argmax(logits), np.argmax(logits, axis=-1))


def test_greedy_rejects_right_padding(checkpoint):
    lm = lj.load_pretrained(checkpoint("bloom"))
    ids, mask = left_padded_prompts()
    with pytest.raises(ValueError, match="left-padded"):
        generation.greedy(lm, ids, mask[:, ::-1], NEW)


def test_generate_text_equals_transformers(checkpoint):
    from lingua_jax import data

    tokenizer = data.train_bpe_tokenizer(data.bundled_sample().texts, 300)
    path = checkpoint("llama_gqa_sharded", 300)
    lm, model = lj.load_pretrained(path), ref.load_model(path)
    prompts = list(data.bundled_sample(("en", "fr", "zh"))["en"][:2]) + ["Bonjour", "今天"]
    texts = generation.generate(lm, tokenizer, prompts, NEW)
    for prompt, text in zip(prompts, texts):
        ids = tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=NEW, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        assert text == tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("name", ["bloom", "llama_gqa_sharded"])
def test_greedy_under_set_equals_transformers_with_hooks(checkpoint, name):
    """Steering's edit: chosen neurons set to fixed values in the prompt and every step, one edit for
    all rows and one per row (through `generate`'s batching), token for token."""
    path = checkpoint(name)
    lm, model = lj.load_pretrained(path), ref.load_model(path)
    ids, mask = left_padded_prompts(seed=3)
    rng = np.random.RandomState(5)
    layers = (lm.num_layers, lm.num_neurons)
    for shape in [layers, (len(ids), *layers)]:
        edit = (rng.rand(*shape) < 0.3, "set", rng.normal(0.0, 3.0, shape).astype(np.float32))
        ours = generation.greedy(lm, ids, mask, NEW, intervention=lj.Intervention(*edit))
        with torch.no_grad(), ref.neuron_hooks(model, edit=edit):
            out = model.generate(torch.tensor(ids).long(), attention_mask=torch.tensor(mask).long(),
                                 max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, pad_token_id=0)
        np.testing.assert_array_equal(ours, out[:, ids.shape[1]:].numpy())
        assert not np.array_equal(ours, generation.greedy(lm, ids, mask, NEW)), "the edit should change tokens"


def test_per_prompt_interventions_follow_their_prompts_across_batches(checkpoint):
    """`generate` sorts prompts by length into batches; each prompt's own edit goes with it, so batches
    of 2 give each prompt the continuation it gets alone."""
    from lingua_jax import data

    tokenizer = data.train_bpe_tokenizer(data.bundled_sample().texts, 300)
    lm = lj.load_pretrained(checkpoint("llama_gqa_sharded", 300))
    prompts = ["Bonjour à tous", "今天", "The weather was cold this morning, so we", "Hola"]
    rng = np.random.RandomState(7)
    shape = (len(prompts), lm.num_layers, lm.num_neurons)
    edit = lj.Intervention(rng.rand(*shape) < 0.4, "add", rng.normal(0, 2.0, shape).astype(np.float32))
    batched = generation.generate(lm, tokenizer, prompts, NEW, intervention=edit, batch_size=2)
    alone = [generation.generate(lm, tokenizer, [p], NEW, intervention=lj.Intervention(edit.mask[i], "add",
                                                                                        edit.values[i]))[0]
             for i, p in enumerate(prompts)]
    assert batched == alone
    assert batched != generation.generate(lm, tokenizer, prompts, NEW), "the edits should change some text"
