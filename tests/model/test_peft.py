import pytest
import torch

from lmforge.model.hub import load_model, save_model
from lmforge.model.peft import (AdapterConfig, LoRAConfig, PromptTuned, PromptTuningConfig,
                                apply_peft, count_parameters, disable_adapters, load_adapter,
                                lora_modules, merge_and_unload, merge_lora, save_adapter,
                                unmerge_lora)
from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog
from lmforge.train.objectives.lm import lm_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from tests.conftest import ToyBatches, tiny_config


def _model(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(tiny_config(**overrides)).eval()


def _randomise_lora(model) -> None:
    """LoRA starts as a no-op (B = 0); give it a real update so equalities mean something."""
    with torch.no_grad():
        for m in lora_modules(model):
            m.lora_B.weight.normal_(std=0.05)


def _train_steps(model, steps: int, tmp_path) -> None:
    optim = OptimConfig(lr=1e-2, warmup_steps=0, schedule="constant")
    optimizer = build_optimizer(model, optim, torch.device("cpu"), 32)
    train(model, lm_objective, ToyBatches(), optimizer, loop=LoopConfig(max_steps=steps, progress=False),
          optim=optim, runtime=Runtime.setup("cpu", "float32", 0),
          log=MetricsLog(tmp_path, tensorboard=False))


X = torch.randint(0, 128, (2, 11), generator=torch.Generator().manual_seed(1))


def test_lora_starts_at_base_and_merge_gives_same_logits():
    model = _model()
    base = model(X)
    apply_peft(model, "lora", lora=LoRAConfig(r=4, alpha=8))
    torch.testing.assert_close(model(X), base)  # B = 0: training starts at the base model
    _randomise_lora(model)
    unmerged = model(X)
    assert (unmerged - base).abs().max() > 1e-3
    merge_lora(model)
    torch.testing.assert_close(model(X), unmerged, atol=1e-5, rtol=1e-5)
    with disable_adapters(model):  # merged weights are taken out again for the reference
        torch.testing.assert_close(model(X), base, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model(X), unmerged, atol=1e-5, rtol=1e-5)
    plain = merge_and_unload(model)
    assert not lora_modules(plain)
    torch.testing.assert_close(plain(X), unmerged, atol=1e-5, rtol=1e-5)
    assert set(plain.state_dict()) == set(_model().state_dict())


def test_lora_keeps_hf_names_and_freezes_the_base():
    model = apply_peft(_model(attention_bias=True), "lora", lora=LoRAConfig(r=2))
    names = {n for n, _ in model.named_parameters()}
    assert "model.layers.0.self_attn.q_proj.weight" in names
    assert "model.layers.0.self_attn.q_proj.bias" in names
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    n_trainable, total = count_parameters(model)
    assert n_trainable == sum(p.numel() for n, p in model.named_parameters() if n in trainable)


@pytest.mark.parametrize("method", ["lora", "adapter", "prompt"])
def test_peft_trains_only_its_parameters(method, tmp_path):
    model = apply_peft(_model(), method, lora=LoRAConfig(r=4), adapter=AdapterConfig(8),
                       prompt=PromptTuningConfig(num_virtual_tokens=3))
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    added = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    _train_steps(model, 3, tmp_path)
    for n, p in model.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), f"frozen {n} changed"
    assert any(not torch.equal(p, added[n]) for n, p in model.named_parameters() if n in added)


def test_adapter_and_prompt_start_at_base_and_disable():
    base = _model()(X)
    adapted = apply_peft(_model(), "adapter", adapter=AdapterConfig(8))
    torch.testing.assert_close(adapted(X), base)  # zero-init up-projection
    prompted = apply_peft(_model(), "prompt", prompt=PromptTuningConfig(4))
    assert isinstance(prompted, PromptTuned) and prompted(X).shape == base.shape
    assert (prompted(X) - base).abs().max() > 1e-4  # the virtual tokens are seen
    with disable_adapters(prompted):
        torch.testing.assert_close(prompted(X), base)


@pytest.mark.parametrize("method", ["lora", "adapter", "prompt"])
def test_adapter_save_load_round_trip(method, tmp_path):
    model = apply_peft(_model(), method, lora=LoRAConfig(r=4), adapter=AdapterConfig(8),
                       prompt=PromptTuningConfig(3))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    save_adapter(model, tmp_path)
    loaded = load_adapter(_model(), tmp_path)
    torch.testing.assert_close(loaded(X), model(X))


def test_our_lora_loads_in_peft_on_transformers_with_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model = _model(num_key_value_heads=2, tie_word_embeddings=False)
    save_model(model, tmp_path / "base", bos_token_id=0, eos_token_ids=[1])
    apply_peft(model, "lora", lora=LoRAConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    _randomise_lora(model)
    save_adapter(model, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(X).logits, model(X), atol=1e-4, rtol=1e-4)


def test_our_prompt_tuning_loads_in_peft_with_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    model = _model()
    save_model(model, tmp_path / "base", bos_token_id=0, eos_token_ids=[1])
    prompted = apply_peft(model, "prompt", prompt=PromptTuningConfig(3))
    save_adapter(prompted, tmp_path / "adapter")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", dtype=torch.float32)
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():  # PEFT returns the virtual tokens' logits too: drop them
        torch.testing.assert_close(theirs(input_ids=X).logits[:, 3:], prompted(X), atol=1e-4, rtol=1e-4)


def test_merged_lora_exports_as_plain_checkpoint(tmp_path):
    model = apply_peft(_model(), "lora", lora=LoRAConfig(r=4))
    _randomise_lora(model)
    expected = model(X)
    save_model(merge_and_unload(model), tmp_path)
    torch.testing.assert_close(load_model(tmp_path)(X), expected, atol=1e-5, rtol=1e-5)
