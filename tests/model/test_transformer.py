import pytest
import torch

from lmforge.infer.engine import Sampling, generate, sample_categorical
from lmforge.errors import InputError
from lmforge.model.hub import load_model, model_config_from_hf, model_config_to_hf, save_model
from lmforge.model.transformer import KVCache, Transformer
from tests.conftest import tiny_config

VARIANTS = {
    "llama-tied": {},
    "gqa-untied": dict(num_key_value_heads=1, tie_word_embeddings=False),
    "qwen2-bias": dict(attention_bias=True),
    "qwen3-qknorm": dict(qk_norm=True),
}


def _perturbed_model(**overrides) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(tiny_config(**overrides))
    with torch.no_grad():  # non-trivial norms and biases, so a wrong mapping would show
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_loads_our_checkpoint_with_same_logits(variant, tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _perturbed_model(**VARIANTS[variant])
    save_model(model, tmp_path, bos_token_id=0, eos_token_ids=[1])
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    x = torch.randint(0, 128, (2, 19))
    with torch.no_grad():
        diff = (model(x) - theirs(x).logits).abs().max().item()
    assert diff <= 1e-4


def test_we_load_what_transformers_writes_with_same_logits(tmp_path):
    """transformers 5 keeps rope_theta (and any scaling) in `rope_parameters`, 4.x at the top level."""
    transformers = pytest.importorskip("transformers")
    save_model(_perturbed_model(rope_theta=500000.0), tmp_path / "ours")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    theirs.save_pretrained(tmp_path / "theirs")
    loaded = load_model(tmp_path / "theirs").eval()
    assert loaded.config.rope_theta == 500000.0
    x = torch.randint(0, 128, (2, 19))
    with torch.no_grad():
        assert (loaded(x) - theirs(x).logits).abs().max().item() <= 1e-4
    hf = {**model_config_to_hf(tiny_config()), "rope_parameters": {"rope_theta": 1e4, "rope_type": "llama3"}}
    with pytest.raises(InputError, match="scaled RoPE"):
        model_config_from_hf(hf)


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_load_round_trip_is_exact(variant, tmp_path):
    model = _perturbed_model(**VARIANTS[variant])
    save_model(model, tmp_path)
    loaded = load_model(tmp_path)
    x = torch.randint(0, 128, (2, 9))
    assert torch.equal(model(x), loaded(x))
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight or not loaded.config.tie_word_embeddings


def test_kv_cache_logits_equal_full_forward(tiny_model):
    model = tiny_model.eval()
    x = torch.randint(0, 128, (3, 20))
    full = model(x)
    cache = KVCache(model.config, 3, 32, torch.float32, "cpu")
    pieces = []
    for start, end in [(0, 12)] + [(t, t + 1) for t in range(12, 20)]:
        pieces.append(model(x[:, start:end], cache=cache))
        cache.advance(end - start)
    incremental = torch.cat(pieces, dim=1)
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)


def test_batched_greedy_generation_matches_no_cache_decoding(tiny_model):
    model = tiny_model.eval()
    prompts = [[1, 5, 9, 22, 7], [1, 7], [3, 4, 5]]  # different lengths: left padding
    out = generate(model, prompts, 10, Sampling(temperature=0))
    for prompt, tokens in zip(prompts, out.tokens):
        seq = list(prompt)
        for _ in range(10):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
        assert tokens == seq[len(prompt):]


def test_generation_stops_at_stop_token_and_is_seeded(tiny_model):
    model = tiny_model.eval()
    first = generate(model, [[1, 2]], 30, Sampling(temperature=1.0), seed=3)
    again = generate(model, [[1, 2]], 30, Sampling(temperature=1.0), seed=3)
    assert first.tokens == again.tokens
    stop = first.tokens[0][4]
    stopped = generate(model, [[1, 2]], 30, Sampling(temperature=1.0), seed=3, stop_ids={stop})
    assert stopped.stopped == [True]
    assert stopped.tokens[0][-1] == stop and stop not in stopped.tokens[0][:-1]


@pytest.mark.slow
def test_compiled_decode_step_matches_eager(tiny_model):
    model = tiny_model.eval()
    prompts = [[1, 5, 9, 22, 7], [1, 7]]
    eager = generate(model, prompts, 12, Sampling(temperature=0))
    compiled = generate(model, prompts, 12, Sampling(temperature=0), compile=True)
    assert compiled.tokens == eager.tokens
    torch.testing.assert_close(torch.tensor(compiled.logprobs), torch.tensor(eager.logprobs),
                               atol=1e-4, rtol=1e-4)


def test_top_k_one_is_greedy(tiny_model):
    model = tiny_model.eval()
    greedy = generate(model, [[1, 2, 3]], 8, Sampling(temperature=0))
    top1 = generate(model, [[1, 2, 3]], 8, Sampling(temperature=1.5, top_k=1), seed=0)
    nucleus = generate(model, [[1, 2, 3]], 8, Sampling(temperature=1.0, top_p=1e-6), seed=0)
    assert greedy.tokens == top1.tokens == nucleus.tokens


def test_inverse_cdf_sampling_draws_each_token_at_its_probability():
    """Chi-square over 200k draws from 64 rows of one distribution (a 0.001 test at 4
    degrees of freedom: 18.5); zero-probability tokens never come up; a seed repeats."""
    probs = torch.tensor([0.5, 0.25, 0.0, 0.125, 0.0625, 0.0, 0.0625 - 1e-9, 1e-9])
    rows = probs.expand(64, -1)
    generator = torch.Generator().manual_seed(0)
    draws = torch.cat([sample_categorical(rows, generator) for _ in range(3125)])
    counts = torch.bincount(draws, minlength=8).double()
    assert counts[2] == counts[5] == 0
    expected = probs.double() * len(draws)
    keep = expected > 5
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert chi2 < 18.5, (counts, expected)
    again = sample_categorical(rows, torch.Generator().manual_seed(0))
    assert torch.equal(again, sample_categorical(rows, torch.Generator().manual_seed(0)))


@pytest.mark.slow
def test_compiles_without_graph_breaks_and_matches_eager(tiny_model):
    """fullgraph=True fails on any graph break in the training forward pass."""
    compiled = torch.compile(tiny_model, fullgraph=True)
    x = torch.randint(0, 128, (2, 16))
    torch.testing.assert_close(compiled(x), tiny_model(x), atol=1e-5, rtol=1e-5)
