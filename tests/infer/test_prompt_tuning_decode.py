"""Prompt-tuned models decode through the batched KV-cache engine, token for token as the
no-cache forward pass (virtual tokens at positions 0..n-1, before any left padding)."""

import pytest
import torch

from lmforge.errors import InputError
from lmforge.infer.engine import Sampling, generate
from lmforge.model.peft import PromptTuningConfig, apply_peft, disable_adapters, save_adapter
from lmforge.model.transformer import Transformer
from lmforge.stages.common import export_model
from lmforge.stages.convert import ConvertConfig, convert
from tests.conftest import tiny_config

PROMPTS = [[1, 5, 9, 22, 7], [1, 7], [3, 4, 5]]  # different lengths: left padding


def _prompt_tuned(n: int = 4):
    torch.manual_seed(0)  # larger weights than the default init: varied greedy output
    base = Transformer(tiny_config(initializer_range=0.2, tie_word_embeddings=False))
    model = apply_peft(base, "prompt", prompt=PromptTuningConfig(n)).eval()
    with torch.no_grad():  # larger than vocab rows, so the virtual tokens steer the output
        model.prompt_embeddings.normal_()
    return model


def _greedy_without_cache(model, prompt: list[int], steps: int) -> tuple[list[int], list[float]]:
    seq, logprobs = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            logp = model(torch.tensor([seq]))[0, -1].log_softmax(-1)
            seq.append(int(logp.argmax()))
            logprobs.append(float(logp[seq[-1]]))
    return seq[len(prompt):], logprobs


def test_batched_cached_greedy_equals_no_cache_forward():
    model = _prompt_tuned()
    out = generate(model, PROMPTS, 10, Sampling(temperature=0))
    for prompt, tokens, logprobs in zip(PROMPTS, out.tokens, out.logprobs):
        expected, expected_logprobs = _greedy_without_cache(model, prompt, 10)
        assert tokens == expected
        torch.testing.assert_close(torch.tensor(logprobs), torch.tensor(expected_logprobs),
                                   atol=1e-5, rtol=1e-5)
    base = generate(model.base_model, PROMPTS, 10, Sampling(temperature=0))
    assert base.tokens != out.tokens  # the virtual tokens were seen
    with disable_adapters(model):
        assert generate(model, PROMPTS, 10, Sampling(temperature=0)).tokens == base.tokens


def test_virtual_tokens_count_against_the_position_budget():
    model = _prompt_tuned(n=4)
    room = model.config.max_position_embeddings - 4 - 3
    assert len(generate(model, [[1, 2, 3]], 1000, Sampling(temperature=0)).tokens[0]) == room
    with pytest.raises(ValueError, match="no room to generate"):
        generate(model, [[1] * (room + 3)], 5)


@pytest.mark.parametrize("method", ["prompt", "adapter"])
def test_convert_refuses_to_merge_prompt_tuning_and_houlsby_adapters(tok, tmp_path, method):
    torch.manual_seed(0)
    base = Transformer(tiny_config(vocab_size=tok.vocab_size))
    export_model(base, tok, tmp_path / "base")
    save_adapter(apply_peft(base, method, prompt=PromptTuningConfig(2)), tmp_path / "adapter",
                 base_model_name_or_path=str(tmp_path / "base"))
    with pytest.raises(InputError, match="cannot be merged"):
        convert(ConvertConfig(src=str(tmp_path / "adapter"), dst=str(tmp_path / "out")))
