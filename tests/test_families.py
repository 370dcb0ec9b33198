"""Qwen2, Qwen3, Mistral, Gemma 2, Gemma 3, Cohere and LLaMA with scaled RoPE ("llama3", "linear") against
PyTorch transformers on tiny random checkpoints (float32, 1e-4), and the registry of families.
Sliding-window attention: Mistral (every layer, window 4), Qwen2 with use_sliding_window (window 5 in
layers 1 and 2 of 3), Gemma 2 and Gemma 3 (window 4 in layers 0 and 2 of 3), on sequences up to 40 tokens.

Each feature's test has two halves: ours equals PyTorch, and PyTorch without the feature (biases zeroed,
q/k norms removed, RoPE unscaled, no window, no soft caps, ...) differs by > 1e-2, so ours would fail
without it. Where PyTorch cannot drop a feature (Cohere's interleaved rotary pairs and its LayerNorm), our
model without it differs from PyTorch by > 1e-2.
"""

import copy
import dataclasses

import jax
import numpy as np
import pytest
import torch
import transformers

import lingua_jax as lj
import torch_reference as ref
from lingua_jax import checkpoints, data, extract, generation, sharding, throughput
from lingua_jax.models import FAMILIES, DecoderSpec, family_named
from test_generation import NEW, hf_greedy, left_padded_prompts
from test_models import padded_batch, valid
from test_sharding import VOCAB as MESH_VOCAB, assert_close, batch

ATOL = 1e-4
NAMES = ["qwen2", "qwen3", "llama_rope_llama3", "llama_rope_linear", "qwen2_yarn", "mistral", "qwen2_sliding", "gemma2",
         "gemma3", "cohere"]
SLIDING = ["mistral", "qwen2_sliding", "gemma2", "gemma3"]
LONG = (40, 23, 1, 30)  # longer than llama3's original 16 positions and than the sliding windows


def assert_matches(out, logits, neurons, mask):
    """Our `out` (capture="full") against PyTorch's logits [B, T, V] and neurons [B, M, T, F] on real tokens;
    returns the max errors (logits, neurons)."""
    ours = valid(np.swapaxes(np.asarray(out.neurons), 1, 2), mask)  # [tokens, M, F]
    theirs = valid(np.swapaxes(neurons, 1, 2), mask)
    np.testing.assert_allclose(valid(out.logits, mask), valid(logits, mask), atol=ATOL, rtol=0)
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=0)
    return np.abs(valid(out.logits, mask) - valid(logits, mask)).max(), np.abs(ours - theirs).max()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", ["right", "left"])
def test_logits_and_neurons_match_pytorch(models, name, side):
    lm, torch_model = models(name)
    ids, mask = padded_batch(0, LONG, side)
    out = lm(ids, mask, capture="full")
    logits, neurons = ref.forward(torch_model, ids, mask)
    assert np.abs(logits).max() > 1.0, "the reference logits are too small for the test to mean anything"
    assert out.neurons.shape == (4, lm.num_layers, ids.shape[1], lm.num_neurons)
    errors = assert_matches(out, logits, neurons, mask)
    print(f"{name} {side}: max |error| logits {errors[0]:.2g}, neurons {errors[1]:.2g}")


def zero_biases(model):
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(".bias"):
                p.zero_()


def drop_qk_norms(model):
    for layer in model.model.layers:
        layer.self_attn.q_norm = layer.self_attn.k_norm = torch.nn.Identity()


def unscaled_rope(model):
    config = copy.deepcopy(model.config)
    config.rope_parameters = {"rope_type": "default", "rope_theta": config.rope_parameters["rope_theta"]}
    model.model.rotary_emb = type(model.model.rotary_emb)(config)


def no_window(model):
    """Full causal attention in every layer: Qwen2 and Gemma 2 slide in the layers that config.layer_types
    names "sliding_attention", Mistral wherever config.sliding_window is set (both read at each forward;
    Qwen2 and Gemma 2 still build their sliding masks, so their window stays set). Gemma 3's window grows
    past every sequence instead, since its layer types also choose each layer's rotary embedding."""
    if model.config.model_type == "gemma3_text":  # its layer types also choose the rotary embedding
        model.config.sliding_window = 10**6
        return
    model.config.layer_types = ["full_attention"] * model.config.num_hidden_layers
    if model.config.model_type == "mistral":
        model.config.sliding_window = None


def no_attention_softcap(model):
    """Gemma 2's attention scores uncapped (each attention reads its cap at construction)."""
    for layer in model.model.layers:
        layer.self_attn.attn_logit_softcapping = None


def no_final_softcap(model):
    """Gemma 2's logits uncapped (read from the config at each forward)."""
    model.config.final_logit_softcapping = None


def one_gemma3_rope(model):
    """Gemma 3's sliding layers rotated as its full layers are (linear scaling, theta 1000)."""
    config = copy.deepcopy(model.config)
    config.rope_parameters = {t: dict(config.rope_parameters["full_attention"]) for t in config.rope_parameters}
    model.model.rotary_emb = type(model.model.rotary_emb)(config)


def gemma3_unscaled_rope(model):
    """Gemma 3's full layers' rotary embedding without its linear scaling."""
    config = copy.deepcopy(model.config)
    config.rope_parameters["full_attention"] = dict(rope_type="default", rope_theta=1000.0)
    model.model.rotary_emb = type(model.model.rotary_emb)(config)


def no_logit_scale(model):
    model.logit_scale = 1.0


REMOVALS = {"biases": zero_biases, "q/k norms": drop_qk_norms, "rope scaling": unscaled_rope,
            "sliding window": no_window, "attention soft-cap": no_attention_softcap,
            "final soft-cap": no_final_softcap, "local rope": one_gemma3_rope,
            "full layers' rope scaling": gemma3_unscaled_rope, "logit scale": no_logit_scale}
FEATURES = [("qwen2", "biases"), ("qwen3", "biases"), ("qwen3", "q/k norms"), ("llama_rope_llama3", "rope scaling"),
            ("llama_rope_linear", "rope scaling"), ("qwen2_yarn", "rope scaling"), ("llama_rope_dynamic", "rope scaling"),
            ("mistral", "sliding window"), ("qwen2_sliding", "sliding window"),
            ("qwen2_sliding", "biases"), ("gemma2", "sliding window"), ("gemma2", "attention soft-cap"),
            ("gemma2", "final soft-cap"), ("gemma3", "q/k norms"), ("gemma3", "sliding window"),
            ("gemma3", "local rope"), ("gemma3", "full layers' rope scaling"), ("cohere", "q/k norms"),
            ("cohere", "logit scale")]


@pytest.mark.parametrize("name, feature", FEATURES)
def test_each_feature_changes_pytorch_logits(models, name, feature):
    """The second half of the parity tests above: without the feature PyTorch's logits change by > 1e-2
    on the long batch (so ours, within 1e-4 of them, implement it)."""
    _, torch_model = models(name)
    ids, mask = padded_batch(0, LONG, "left")
    logits, _ = ref.forward(torch_model, ids, mask)
    without = copy.deepcopy(torch_model)
    REMOVALS[feature](without)
    changed, _ = ref.forward(without, ids, mask)
    assert np.abs(valid(changed - logits, mask)).max() > 1e-2


@pytest.mark.parametrize("name, field, value", [("cohere", "rope_interleaved", False), ("cohere", "norm", "rms"),
                                                 ("gemma3", "local_rope", None)])
def test_features_pytorch_cannot_drop_change_our_logits(models, name, field, value):
    """Our model without the feature (same weights) is > 1e-2 from PyTorch's logits, so the parity tests
    cover it: Cohere's interleaved rotary pairs and mean-subtracting LayerNorm; Gemma 3's second rotary
    embedding (the sliding layers rotated with the full layers' one)."""
    lm, torch_model = models(name)
    ids, mask = padded_batch(0, LONG, "left")
    logits, _ = ref.forward(torch_model, ids, mask)
    spec = dataclasses.replace(lm.spec, **{field: value})
    without = lj.lm.LM(lm.module.clone(spec=spec), lm.params, lm.config, FAMILIES[lm.family])
    assert np.abs(valid(np.asarray(without(ids, mask).logits) - logits, mask)).max() > 1e-2


def layer_matmul_flops(torch_model) -> int:
    """2 x the weights of the Linear layers of PyTorch's decoder layers (per token, all layers)."""
    return 2 * sum(m.weight.numel() for m in torch_model.model.layers.modules() if isinstance(m, torch.nn.Linear))


def test_qwen3_shapes_follow_its_config(models):
    lm, torch_model = models("qwen3")
    assert lm.spec.head_dim == 16 != lm.spec.hidden_size // lm.spec.num_heads
    attention = lm.params["model"]["layers"]["self_attn"]
    assert attention["q_proj"]["kernel"].shape == (2, 48, 4 * 16)
    assert attention["q_norm"]["weight"].shape == attention["k_norm"]["weight"].shape == (2, 16)
    assert "bias" in attention["o_proj"] and "bias" not in lm.params["model"]["layers"]["mlp"]["up_proj"]
    assert throughput.weight_flops_per_token(lm.spec) == layer_matmul_flops(torch_model)


@pytest.mark.parametrize("name", NAMES)
def test_neuron_mask_matches_pytorch_hook(models, name):
    lm, torch_model = models(name)
    ids, mask = padded_batch(2, LONG, side="left")
    neuron_mask = np.random.RandomState(0).rand(lm.num_layers, lm.num_neurons) < 0.3
    out = lm(ids, mask, neuron_mask=neuron_mask, capture="full")
    logits, neurons = ref.forward(torch_model, ids, mask, neuron_mask=neuron_mask)
    unmasked, _ = ref.forward(torch_model, ids, mask)
    assert np.abs(valid(logits - unmasked, mask)).max() > 1e-2, "the mask should change the logits"
    assert_matches(out, logits, neurons, mask)
    assert np.all(np.swapaxes(np.asarray(out.neurons), 1, 2)[:, :, neuron_mask] == 0)


@pytest.mark.parametrize("name", NAMES)
def test_greedy_equals_transformers_generate(models, name):
    """Left-padded prompts of up to 20 tokens and 8 new ones (positions past llama3's original 16), with
    and without a neuron mask, token for token."""
    lm, torch_model = models(name)
    ids, mask = left_padded_prompts(0, (20, 12, 3))
    ours = generation.greedy(lm, ids, mask, NEW)
    np.testing.assert_array_equal(ours, hf_greedy(torch_model, ids, mask))
    neuron_mask = np.random.RandomState(0).rand(lm.num_layers, lm.num_neurons) < 0.5
    masked = generation.greedy(lm, ids, mask, NEW, neuron_mask=neuron_mask)
    np.testing.assert_array_equal(masked, hf_greedy(torch_model, ids, mask, neuron_mask))
    assert not np.array_equal(masked, ours), "the mask should change some generated token"


@pytest.fixture(scope="module")
def sentences():
    corpus = data.bundled_sample(("en", "fr", "zh")).select(8, seed=0)
    return corpus, data.train_bpe_tokenizer(data.bundled_sample().texts, 300)


@pytest.mark.parametrize("name", NAMES + ["llama_rope_dynamic"])
def test_packed_rows_equal_one_sentence_at_a_time(checkpoint, sentences, name):
    """Packed extraction's pooled neurons equal transformers' for each sentence alone."""
    corpus, tokenizer = sentences
    path = checkpoint(name, 300)
    lm, torch_model = lj.load_pretrained(path), ref.load_model(path)
    acts = extract.extract(lm, tokenizer, corpus, batch_size=2, pack=True, max_length=64)
    assert acts.metadata["packed"] and max(acts.metadata["segments_per_row"]) > 1
    lengths = []
    for i, text in enumerate(corpus.texts):
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        lengths.append(len(tokens))
        np.testing.assert_allclose(acts.acts[i], ref.pooled_alone(torch_model, tokens), atol=ATOL, rtol=1e-5)
    assert max(lengths) > 16, "some sentence should reach past llama3's original context"


def mesh_equals_one_device(checkpoint, name, shape):
    """The tiny checkpoint `name` on one device and on a mesh of `shape` over the 8 fake devices: pooled
    neurons and logits, with and without per-example masks, equal. Returns (single, lm on the mesh, ids,
    mask, the single-device output)."""
    assert len(jax.devices()) == 8
    path = checkpoint(name, MESH_VOCAB)
    single, lm = lj.load_pretrained(path), lj.load_pretrained(path, mesh=sharding.make_mesh(shape))
    ids, mask = batch()
    neuron_mask = np.random.RandomState(1).rand(8, lm.num_layers, lm.num_neurons) < 0.3
    reference, out = single(ids, mask, capture="pooled"), lm(ids, mask, capture="pooled")
    assert_close(out.logits, reference.logits)
    assert_close(out.neurons, reference.neurons)
    assert_close(lm(ids, mask, neuron_mask=neuron_mask).logits, single(ids, mask, neuron_mask=neuron_mask).logits)
    return single, lm, ids, mask, reference


@pytest.mark.parametrize("shape, kv_shards", [((4, 2), 2), ((2, 4), 1)])
def test_qwen2_on_a_mesh_equals_one_device(checkpoint, shape, kv_shards):
    """q/k/v biases column-split with their kernels (k/v's 2 heads split over a model axis of 2, replicated
    over 4)."""
    _, lm, _, _, _ = mesh_equals_one_device(checkpoint, "qwen2", shape)
    attention = lm.params["model"]["layers"]["self_attn"]
    assert attention["q_proj"]["bias"].sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert attention["q_proj"]["bias"].addressable_shards[0].data.shape == (2, 4 * 8 // shape[1])
    assert attention["k_proj"]["bias"].addressable_shards[0].data.shape == (2, 2 * 8 // kv_shards)


ROPES = [
    dict(rope_type="default", rope_theta=10000.0),
    dict(rope_type="linear", rope_theta=500.0, factor=2.5),
    dict(rope_type="linear", rope_theta=1e6, factor=8.0),
    dict(rope_type="llama3", rope_theta=30.0, factor=4.0, low_freq_factor=1.0, high_freq_factor=2.0,
         original_max_position_embeddings=16),
    # LLaMA 3.1's own settings
    dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
         original_max_position_embeddings=8192),
    dict(rope_type="yarn", rope_theta=500.0, factor=4.0, original_max_position_embeddings=16),
    # Qwen2.5's documented long-context setting, and mscale / untruncated variants
    dict(rope_type="yarn", rope_theta=1e6, factor=4.0, original_max_position_embeddings=32768),
    dict(rope_type="yarn", rope_theta=1e4, factor=8.0, original_max_position_embeddings=4096, mscale=0.7,
         mscale_all_dim=1.0, beta_fast=16.0, truncate=False),
]


@pytest.mark.parametrize("rope", ROPES, ids=lambda r: f"{r['rope_type']}-{r['rope_theta']:g}")
@pytest.mark.parametrize("head_dim", [8, 64, 128])
def test_inverse_frequencies_equal_transformers(rope, head_dim):
    """Against transformers' own rotary embedding (its inv_freq buffer), for heads up to LLaMA's 128."""
    config = transformers.LlamaConfig(hidden_size=4 * head_dim, num_attention_heads=4, rope_parameters=dict(rope),
                                      max_position_embeddings=4 * rope.get("original_max_position_embeddings", 1024))
    embedding = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(config)
    theirs = embedding.inv_freq.numpy()
    ours = DecoderSpec.from_hf(config).rope.inverse_frequencies(head_dim)
    assert DecoderSpec.from_hf(config).rope.attention_scaling() == embedding.attention_scaling
    assert ours.dtype == np.float32 and ours.shape == (head_dim // 2,)
    assert np.all(np.abs(ours - theirs) <= np.spacing(theirs)), "more than an ulp apart"  # XLA's pow vs torch's
    print(f"{rope['rope_type']} theta {rope['rope_theta']:g} hd {head_dim}: "
          f"{int((ours != theirs).sum())} of {ours.size} differ by an ulp")


@pytest.mark.parametrize("side", ["right", "left"])
def test_dynamic_rope_gives_each_sequence_what_it_gets_alone(models, side):
    """Sequences of 40, 23, 1 and 30 tokens past a 16-token context, batched: each row's logits and neurons
    equal transformers' for that sequence alone in a fresh model (1e-4). transformers on the batch scales
    every row by the longest (40), which changes the 23- and 30-token rows: the batch dependence lingua_jax
    does not have."""
    lm, torch_model = models("llama_rope_dynamic")
    ids, mask = padded_batch(0, LONG, side)
    out = lm(ids, mask, capture="full")
    for row in range(len(ids)):
        real = mask[row].astype(bool)
        logits, neurons = ref.forward(ref.fresh_rope(torch_model), ids[row:row + 1, real], mask[row:row + 1, real])
        np.testing.assert_allclose(np.asarray(out.logits)[row, real], logits[0], atol=ATOL, rtol=0)
        np.testing.assert_allclose(np.asarray(out.neurons)[row][:, real], neurons[0], atol=ATOL, rtol=0)
    batched, _ = ref.forward(ref.fresh_rope(torch_model), ids, mask)
    row = LONG.index(23)
    assert np.abs(batched[row] - np.asarray(out.logits)[row])[mask[row].astype(bool)].max() > 1e-2


def test_dynamic_rope_generation_equals_transformers_prompt_by_prompt(models):
    """Prompts of 20, 12 and 3 tokens and 8 new ones (the 12-token prompt crosses the 16-token context while
    generating, and theta grows token by token): ours batched equals HF generate for each prompt alone,
    from a fresh model each time; without the scaling HF generates other tokens."""
    lm, torch_model = models("llama_rope_dynamic")
    ids, mask = left_padded_prompts(0, (20, 12, 3))
    ours = generation.greedy(lm, ids, mask, NEW)
    for row in range(len(ids)):
        real = mask[row].astype(bool)
        alone = hf_greedy(ref.fresh_rope(torch_model), ids[row:row + 1, real], mask[row:row + 1, real])
        np.testing.assert_array_equal(ours[row], alone[0])
    unscaled = copy.deepcopy(torch_model)
    unscaled_rope(unscaled)
    assert not np.array_equal(hf_greedy(unscaled, ids, mask), ours)


@pytest.mark.parametrize("rope_type, fields", [("longrope", dict(
    short_factor=[1.0] * 64, long_factor=[2.0] * 64, original_max_position_embeddings=16))])
def test_unimplemented_rope_types_are_clear_errors(rope_type, fields):
    config = transformers.LlamaConfig(rope_parameters=dict(rope_type=rope_type, rope_theta=10000.0, **fields))
    with pytest.raises(NotImplementedError, match=f"rope_type '{rope_type}'"):
        lj.lm.build_module(config)


def without_window(lm):
    """`lm` with full causal attention in every layer (same weights)."""
    spec = dataclasses.replace(lm.spec, sliding_window=None)
    return lj.lm.LM(lm.module.clone(spec=spec), lm.params, lm.config, FAMILIES[lm.family])


def test_sliding_layers_follow_the_config(models):
    """Qwen2 slides in layers >= max_window_layers, only with use_sliding_window; Mistral in every layer
    (its attention ignores layer_types, as transformers' does); no window: no sliding layer at all."""
    def slides(config):
        return lj.lm.build_module(config)[0].spec.layer_slides()

    qwen2 = dict(num_hidden_layers=4, sliding_window=6, max_window_layers=1)
    np.testing.assert_array_equal(slides(transformers.Qwen2Config(use_sliding_window=True, **qwen2)),
                                  [False, True, True, True])
    assert slides(transformers.Qwen2Config(use_sliding_window=False, **qwen2)) is None
    assert slides(transformers.Qwen2Config(use_sliding_window=True, num_hidden_layers=2, max_window_layers=2)) is None
    mistral = transformers.MistralConfig(num_hidden_layers=3, sliding_window=6,
                                         layer_types=["full_attention", "sliding_attention", "full_attention"])
    np.testing.assert_array_equal(slides(mistral), [True] * 3)
    assert slides(transformers.MistralConfig(num_hidden_layers=3, sliding_window=None)) is None
    assert lj.lm.build_module(mistral)[0].spec.sliding_window == 6
    for name in NAMES:
        assert (models(name)[0].spec.layer_slides() is not None) == (name in SLIDING)


@pytest.mark.parametrize("name", SLIDING)
def test_generation_past_the_window_equals_transformers(models, name):
    """Prompts of 3 to 20 tokens and 8 new ones, all longer than the window: ours equals HF generate
    (its sliding-window cache), and HF without the window generates other tokens."""
    lm, torch_model = models(name)
    ids, mask = left_padded_prompts(1, (20, 12, 3))
    ours = generation.greedy(lm, ids, mask, NEW)
    np.testing.assert_array_equal(ours, hf_greedy(torch_model, ids, mask))
    full = copy.deepcopy(torch_model)
    no_window(full)
    assert not np.array_equal(hf_greedy(full, ids, mask), ours), "the window should change some generated token"


@pytest.mark.parametrize("name", SLIDING)
def test_window_changes_the_packed_sentences(checkpoint, sentences, name):
    """The other half of test_packed_rows_equal_one_sentence_at_a_time for the sliding families: most of
    its sentences are longer than the window, and without the window their neurons differ by > 1e-2."""
    corpus, tokenizer = sentences
    lm = lj.load_pretrained(checkpoint(name, 300))
    token_ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in corpus.texts]
    lengths = np.asarray([len(t) for t in token_ids])
    ids = np.zeros((len(token_ids), lengths.max()), np.int32)
    for row, t in zip(ids, token_ids):
        row[:len(t)] = t
    mask = (np.arange(ids.shape[1]) < lengths[:, None]).astype(np.int32)
    windowed, full = lm.pooled(ids, mask), without_window(lm).pooled(ids, mask)
    long = lengths > lm.spec.sliding_window + 1
    assert long.mean() > 0.5 and lengths.max() > 4 * lm.spec.sliding_window
    assert np.abs(np.asarray(windowed - full)).max(axis=(1, 2))[long].min() > 1e-2


@pytest.mark.parametrize("shape", [(4, 2), (2, 4)])
def test_mistral_on_a_mesh_equals_one_device(checkpoint, shape):
    """Rows of 9 tokens (window 4), left and right padded, pooled neurons and logits, with and without a
    mask; 8 query heads split over the model axis."""
    single, lm, ids, mask, reference = mesh_equals_one_device(checkpoint, "mistral", shape)
    q = lm.params["model"]["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.addressable_shards[0].data.shape == (2, 32, 8 * 8 // shape[1])
    assert np.abs(np.asarray(without_window(single)(ids, mask).logits - reference.logits)).max() > 1e-2


def test_registry_is_keyed_by_model_type(checkpoint):
    for model_type, family in FAMILIES.items():
        assert family.name == model_type == family.config_cls.model_type
    config = checkpoints.load_config(checkpoint("qwen2"))
    assert type(config) is transformers.Qwen2Config
    spec = family_named("qwen2").spec(config)
    assert (spec.qkv_bias, spec.o_proj_bias, spec.qk_norm) == (True, False, None)
    qwen3 = throughput.hf_config("qwen3", vocab_size=50, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1, head_dim=4)
    assert lj.lm.build_module(qwen3)[0].spec.qk_norm == "shared"
    with pytest.raises(ValueError, match=r"unsupported model_type 'gpt2': lingua_jax supports \['bloom', 'cohere', 'gemma2'"):
        family_named("gpt2")


def test_gemma2_follows_its_config(models):
    """head_dim 16 != 32 / 4, four (1 + weight) norms per layer, a tied head, alternating layer types; the
    FLOP count covers its matmuls."""
    lm, torch_model = models("gemma2")
    assert lm.spec.head_dim == 16 != lm.spec.hidden_size // lm.spec.num_heads != lm.spec.query_pre_attn_scalar
    np.testing.assert_array_equal(lm.spec.layer_slides(), [True, False, True])
    layers = lm.params["model"]["layers"]
    assert sorted(k for k in layers if k.endswith("layernorm")) == [
        "input_layernorm", "post_attention_layernorm", "post_feedforward_layernorm", "pre_feedforward_layernorm"]
    assert "lm_head" not in lm.params and lm.spec.tie_word_embeddings
    assert throughput.weight_flops_per_token(lm.spec) == layer_matmul_flops(torch_model)


def test_gemma3_follows_its_config(models):
    """Per-head q/k norms of hd weights, the sliding layers (0 and 2) with their own rotary embedding, the
    full layer's scaled one, an untied head."""
    lm, torch_model = models("gemma3")
    spec = lm.spec
    assert (spec.norm, spec.block, spec.qk_norm, spec.embed_scale) == ("gemma_rms", "sandwich", "shared", True)
    np.testing.assert_array_equal(spec.local_layers(), [True, False, True])
    assert (spec.local_rope.rope_theta, spec.rope.rope_type, spec.rope.factor) == (50.0, "linear", 4.0)
    attention = lm.params["model"]["layers"]["self_attn"]
    assert attention["q_norm"]["weight"].shape == attention["k_norm"]["weight"].shape == (3, 16)
    assert "lm_head" in lm.params and not spec.tie_word_embeddings
    assert throughput.weight_flops_per_token(spec) == layer_matmul_flops(torch_model)


def test_cohere_follows_its_config(models):
    """One LayerNorm per layer (attention and MLP in parallel), q/k norm weights per head [heads, hd], a
    tied head, logits times logit_scale."""
    lm, torch_model = models("cohere")
    spec = lm.spec
    assert (spec.norm, spec.block, spec.qk_norm, spec.rope_interleaved, spec.logit_scale) == (
        "layer", "parallel", "per_head", True, 0.5)
    layers = lm.params["model"]["layers"]
    assert [k for k in layers if k.endswith("layernorm")] == ["input_layernorm"]
    assert layers["self_attn"]["q_norm"]["weight"].shape == (2, 4, 8)
    assert layers["self_attn"]["k_norm"]["weight"].shape == (2, 2, 8)
    assert "lm_head" not in lm.params and spec.tie_word_embeddings
    assert throughput.weight_flops_per_token(spec) == layer_matmul_flops(torch_model)


def test_attention_flops_count_the_window():
    """A window of W: query i attends min(i + 1, W) keys, in the sliding layers only."""
    config = transformers.Gemma2Config(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=4)
    spec = lj.lm.build_module(config)[0].spec
    pairs = lambda n, w: sum(min(i + 1, w) for i in range(n))
    per_pair = 2 * 2 * spec.num_heads * spec.head_dim
    for n in (1, 4, 5, 40):
        assert throughput.attention_flops(spec, n) == per_pair * (2 * pairs(n, 4) + pairs(n, n))


def test_gemma2_scoring_uses_the_capped_logits(models):
    """The final soft-cap applies wherever logits are computed: the chunked log-probabilities of `evaluate`
    (7 positions per chunk) equal those of PyTorch's capped logits, and differ from the uncapped ones."""
    lm, torch_model = models("gemma2")
    ids, mask = padded_batch(0, LONG, "right")
    targets = np.roll(ids, -1, axis=1)
    scored = (mask * np.roll(mask, -1, axis=1)).astype(bool)
    sums, _ = lm.forward(lj.lm.Inputs(ids, mask, targets=targets, scored=scored), output="logprobs", chunk=7)
    ours = np.asarray(sums).sum(axis=1)

    def reference(model):
        logits, _ = ref.forward(model, ids, mask)
        logp = torch.log_softmax(torch.tensor(logits, dtype=torch.float64), -1).numpy()
        return np.where(scored, np.take_along_axis(logp, targets[..., None], -1)[..., 0], 0).sum(axis=1)

    np.testing.assert_allclose(ours, reference(torch_model), atol=1e-3, rtol=0)
    uncapped = copy.deepcopy(torch_model)
    no_final_softcap(uncapped)
    assert np.abs(reference(uncapped) - ours).max() > 1e-1


@pytest.mark.parametrize("shape", [(4, 2), (2, 4)])
def test_gemma2_on_a_mesh_equals_one_device(checkpoint, shape):
    """Pooled neurons and logits, with and without a mask; 4 query heads split over the model axis, 2 kv
    heads split over 2 and replicated over 4; the (1 + weight) norms replicated."""
    _, lm, _, _, _ = mesh_equals_one_device(checkpoint, "gemma2", shape)
    q = lm.params["model"]["layers"]["self_attn"]["q_proj"]["kernel"]
    assert q.addressable_shards[0].data.shape == (3, 32, 4 * 16 // shape[1])


@pytest.mark.parametrize("name", ["qwen2", "qwen3", "mistral", "gemma2", "gemma3", "cohere"])
def test_checkpoints_round_trip(models, tmp_path, name):
    """save_pretrained as safetensors loads in transformers with our logits (1e-4), and as orbax back into
    lingua_jax with the same logits, for each family's parameter names (q/k norms per head, four norms,
    biases, tied and untied heads)."""
    lm, _ = models(name)
    ids, mask = padded_batch(1, (12, 7), "left")
    ours = np.asarray(lm(ids, mask).logits)
    exported = lj.save_pretrained(lm, tmp_path / "hf")
    theirs, _ = ref.forward(ref.load_model(exported), ids, mask)
    np.testing.assert_allclose(valid(ours, mask), valid(theirs, mask), atol=ATOL, rtol=0)
    orbax = lj.load_pretrained(lj.save_pretrained(lm, tmp_path / "orbax", format="orbax"))
    np.testing.assert_array_equal(np.asarray(orbax(ids, mask).logits), ours)


def test_tiny_gemma3_runs_every_stage(tmp_path):
    """configs/tiny_gemma3.py as written (a random Gemma 3 with a window of 8 and two rotary embeddings),
    every default stage, as the README's smoke run does for BLOOM."""
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(repo / "launch" / "analyze.py"), "--config",
                           str(repo / "configs" / "tiny_gemma3.py"), f"--config.results_dir={tmp_path}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "| family | gemma3_text |" in summary and "SKLR" in summary
    for table in ("ablation/ablation", "steer/steering", "compare/methods", "generation/generation_languages"):
        assert (tmp_path / f"{table}.csv").is_file(), table
