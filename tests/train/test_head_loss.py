import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.model.peft import PromptTuningConfig, apply_peft
from lmforge.model.transformer import Transformer
from lmforge.train.head_loss import (head_weight, linear_cross_entropy, linear_token_logprobs,
                                     model_cross_entropy, model_token_logprobs, token_logprobs)
from tests.conftest import tiny_config


def _problem(n=37, c=16, v=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(2, n, c, generator=g, requires_grad=True)
    w = torch.randn(v, c, generator=g, requires_grad=True)
    y = torch.randint(0, v, (2, n), generator=g)
    y[0, :5] = -100  # unscored positions (prompt, padding)
    return h, w, y


@pytest.mark.parametrize("chunk_rows", [1, 7, 74, 1000])
def test_linear_cross_entropy_equals_unfused_value_and_gradients(chunk_rows):
    h, w, y = _problem()
    ref = F.cross_entropy((h @ w.T).flatten(0, 1), y.flatten(), ignore_index=-100)
    ref_gh, ref_gw = torch.autograd.grad(2.5 * ref, (h, w))  # a non-unit upstream gradient
    loss = linear_cross_entropy(h, w, y, chunk_rows=chunk_rows)
    gh, gw = torch.autograd.grad(2.5 * loss, (h, w))
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    torch.testing.assert_close(gh, ref_gh, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gw, ref_gw, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # the no-grad path (validation) gives the same value
        assert linear_cross_entropy(h, w, y, chunk_rows=chunk_rows).item() == pytest.approx(ref.item(), abs=1e-5)


def test_compiled_chunks_equal_eager_chunks():
    h, w, y = _problem()
    eager = linear_cross_entropy(h, w, y, chunk_rows=30)  # 74 rows: chunks of 30, 30, 14
    compiled = linear_cross_entropy(h, w, y, chunk_rows=30, compiled=True)
    assert compiled.item() == pytest.approx(eager.item(), abs=1e-5)
    for a, b in zip(torch.autograd.grad(compiled, (h, w)), torch.autograd.grad(eager, (h, w))):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_linear_cross_entropy_only_differentiates_what_requires_grad():
    h, w, y = _problem()
    w.requires_grad_(False)  # a frozen, tied head under LoRA
    loss = linear_cross_entropy(h, w, y, chunk_rows=10)
    loss.backward()
    assert h.grad is not None and w.grad is None


def test_all_ignored_labels_give_zero_loss_and_zero_gradient():
    h, w, y = _problem()
    loss = linear_cross_entropy(h, w, torch.full_like(y, -100))
    loss.backward()
    assert loss.item() == 0.0 and h.grad.abs().max().item() == 0.0


@pytest.mark.parametrize("frozen_head", [False, True])  # True: LoRA's tied head, its own backward
@pytest.mark.parametrize("chunk_rows", [5, 1000])
def test_linear_token_logprobs_equal_unfused_under_weighted_gradients(chunk_rows, frozen_head):
    h, w, y = _problem()
    w.requires_grad_(not frozen_head)
    ref = token_logprobs(h @ w.T, y)
    logps = linear_token_logprobs(h, w, y, chunk_rows=chunk_rows)
    torch.testing.assert_close(logps, ref, atol=1e-5, rtol=1e-5)
    assert logps[0, :5].abs().max().item() == 0.0
    weights = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))  # like advantages
    inputs = (h,) if frozen_head else (h, w)
    got = torch.autograd.grad((logps * weights).sum(), inputs)
    want = torch.autograd.grad((ref * weights).sum(), inputs)
    assert got[0][0, :5].abs().max().item() == 0.0  # unscored rows get no gradient
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_matches_the_unfused_autocast_loss():
    h, w, y = _problem(n=64, c=32, v=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy((h @ w.T).float().flatten(0, 1), y.flatten(), ignore_index=-100)
        loss = linear_cross_entropy(h, w, y, chunk_rows=16)
    ref_g = torch.autograd.grad(ref, h)[0]
    g = torch.autograd.grad(loss, h)[0]
    assert loss.item() == pytest.approx(ref.item(), rel=1e-3)
    torch.testing.assert_close(g, ref_g, atol=2e-3, rtol=2e-2)


class _Wrapper(nn.Module):
    """Stands in for DistributedDataParallel, which keeps the model as `.module`."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_model_losses_find_the_head_through_wrappers_and_equal_the_logits_path():
    torch.manual_seed(0)
    model = Transformer(tiny_config())
    x = torch.randint(0, 128, (2, 12))
    y = torch.randint(0, 128, (2, 12))
    y[:, :3] = -100
    logits = model(x)
    ref = F.cross_entropy(logits.flatten(0, 1), y.flatten(), ignore_index=-100)
    for wrapped in (model, _Wrapper(model), torch.compile(model, backend="eager")):
        assert head_weight(wrapped) is model.lm_head.weight
        assert model_cross_entropy(wrapped, x, y).item() == pytest.approx(ref.item(), abs=1e-5)
        torch.testing.assert_close(model_token_logprobs(wrapped, x, y), token_logprobs(logits, y))
    prompted = apply_peft(model, "prompt", prompt=PromptTuningConfig(num_virtual_tokens=3))
    assert head_weight(prompted) is model.lm_head.weight
    torch.testing.assert_close(model_token_logprobs(prompted, x, y), token_logprobs(prompted(x), y))
    with pytest.raises(TypeError, match="no lm_head"):
        head_weight(nn.Linear(2, 2))
