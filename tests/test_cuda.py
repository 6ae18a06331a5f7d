"""CUDA-only checks of the GPU fast paths (skipped without a GPU, as in CI).

Run on a GPU machine with `bash bench/gpu_suite.sh check`.
"""

import pytest
import torch
import torch.nn.functional as F

from lmforge.infer.engine import Sampling, generate
from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.train.head_loss import linear_cross_entropy, model_cross_entropy
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog
from lmforge.train.objectives.lm import lm_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.parallel import wrap_model
from tests.conftest import tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _model(**overrides):
    torch.manual_seed(0)
    cfg = tiny_config(vocab_size=512, hidden_size=128, num_hidden_layers=3, max_position_embeddings=256,
                      initializer_range=0.2, tie_word_embeddings=False, **overrides)
    return Transformer(cfg).cuda().eval()


def _no_cache_greedy(model, prompt, n):
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids], device="cuda"))[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("compile", [False, True])
def test_greedy_decoding_on_cuda_equals_the_no_cache_path(compile):
    model = _model()
    prompts = [[5, 9, 200, 31], [7], [1, 2, 3, 4, 5, 6, 7]]
    out = generate(model, prompts, 24, Sampling(temperature=0), compile=compile)
    with torch.no_grad():
        assert out.tokens == [_no_cache_greedy(model, p, 24) for p in prompts]


def test_fused_head_loss_on_cuda_bf16_matches_the_logits_path():
    g = torch.Generator(device="cuda").manual_seed(0)
    h = torch.randn(4, 300, 128, device="cuda", generator=g, requires_grad=True)
    w = (0.05 * torch.randn(1000, 128, device="cuda", generator=g)).requires_grad_()
    y = torch.randint(0, 1000, (4, 300), device="cuda", generator=g)
    y[:, :20] = -100
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ref = F.cross_entropy((h @ w.T).float().flatten(0, 1), y.flatten(), ignore_index=-100)
        for compiled in (False, True):
            loss = linear_cross_entropy(h, w, y, chunk_rows=256, compiled=compiled)
            assert loss.item() == pytest.approx(ref.item(), rel=2e-3)
            got = torch.autograd.grad(loss, (h, w))
            want = torch.autograd.grad(ref, (h, w), retain_graph=True)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, atol=2e-3, rtol=5e-2)


def test_compiled_bf16_training_step_on_cuda_learns():
    model = _model().train()
    rt = Runtime.setup("cuda", "bfloat16", seed=0)
    optim = OptimConfig(lr=3e-3, warmup_steps=0)
    opt = build_optimizer(model, optim, rt.device, model.config.hidden_size)
    x = torch.randint(0, 512, (8, 65), device="cuda")
    batches = iter(lambda: {"input_ids": x[:, :-1], "labels": x[:, 1:]}, None)
    result = train(wrap_model(model, rt, compile=True), lm_objective, batches, opt,
                   loop=LoopConfig(max_steps=30, progress=False, eval_every_steps=10**9),
                   optim=optim, runtime=rt, log=MetricsLog(".", enabled=False))
    assert result.losses[-1] < 0.5 * result.losses[0]
    with torch.no_grad(), rt.autocast():
        assert model_cross_entropy(model, x[:, :-1], x[:, 1:]).item() < 0.5 * result.losses[0]
