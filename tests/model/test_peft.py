import copy

import pytest
import torch
from torch import nn

from lmforge.model.hub import load_model, save_model
from lmforge.model.peft import (ALL_LINEAR, AdapterConfig, LoRAConfig, LoRALinear, PromptTuned,
                                PromptTuningConfig, apply_peft, count_parameters, disable_adapters,
                                load_adapter, lora_modules, merge_and_unload, merge_lora,
                                save_adapter, unmerge_lora)
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
    # By hand (tiny_config: width 32, 4 query + 2 KV heads of 8, SwiGLU 64, 2 layers, vocab
    # 128, tied): LoRA r=2 adds r*(in+out) per projection: q, o 2*(32+32); k, v 2*(32+16);
    # gate, up, down 2*(32+64) -> 1,024 a layer.
    lora = 2 * (2 * 2 * (32 + 32) + 2 * 2 * (32 + 16) + 3 * 2 * (32 + 64))
    layer = 2 * 32 * 32 + 2 * 32 * 16 + 3 * 32 * 64 + 2 * 32 + (32 + 16 + 16)  # + norms, q/k/v bias
    base = 128 * 32 + 2 * layer + 32  # tied embedding counted once, final norm
    assert (lora, base) == (2048, 22816)
    assert count_parameters(model) == (lora, base + lora)
    assert len(trainable) == 2 * 7 * 2  # lora_A + lora_B on 7 projections, 2 layers


def test_lora_parameter_count_equals_peft_on_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    save_model(_model(), tmp_path, bos_token_id=0, eos_token_ids=[1])
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    theirs = peft.get_peft_model(hf, peft.LoraConfig(r=2, lora_alpha=4, target_modules=ALL_LINEAR))
    ours = apply_peft(_model(), "lora", lora=LoRAConfig(r=2, alpha=4))
    # The base has no q/k/v bias here: 22,816 - 2 * 64 = 22,688 elements.
    assert count_parameters(ours) == theirs.get_nb_trainable_parameters() == (2048, 22688 + 2048)


def test_lora_linear_on_a_hand_computed_case():
    # W = [[1, 2], [3, 4]], b = [.5, -.5], A = [[1, -1]], B = [[2], [.5]], alpha/r = 2/1, x = [3, 1]:
    # W x + b = [5.5, 12.5]; A x = 2; 2 * B * 2 = [8, 2]; y = [13.5, 14.5].
    base = nn.Linear(2, 2)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        base.bias.copy_(torch.tensor([0.5, -0.5]))
    layer = LoRALinear(base, r=1, alpha=2.0, dropout=0.0)
    x = torch.tensor([[3.0, 1.0]])
    assert layer(x).tolist() == [[5.5, 12.5]]  # B = 0: the base layer
    with torch.no_grad():
        layer.lora_A.weight.copy_(torch.tensor([[1.0, -1.0]]))
        layer.lora_B.weight.copy_(torch.tensor([[2.0], [0.5]]))
    assert layer(x).tolist() == [[13.5, 14.5]]
    assert layer.delta_weight().tolist() == [[4.0, -4.0], [1.0, -1.0]]
    layer.merge()
    assert base.weight.tolist() == [[5.0, -2.0], [4.0, 3.0]]  # folded into the shared weight
    assert layer(x).tolist() == [[13.5, 14.5]]
    layer.unmerge()
    assert base.weight.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_A.weight.requires_grad and layer.lora_B.weight.requires_grad


# Trainable elements on tiny_config, by hand: LoRA r=4 adds 4*(in+out) to each of the 7
# projections of 2 layers; an adapter (width 32, bottleneck 8) is down 32*8+8 plus up
# 8*32+32, one after attention and one after the MLP of each layer; 3 virtual tokens x 32.
ADDED = {"lora": 2 * 4 * (2 * (32 + 32) + 2 * (32 + 16) + 3 * (32 + 64)),
         "adapter": 2 * 2 * (32 * 8 + 8 + 8 * 32 + 32), "prompt": 3 * 32}


@pytest.mark.parametrize("method", ["lora", "adapter", "prompt"])
def test_peft_trains_only_its_parameters(method, tmp_path):
    model = apply_peft(_model(), method, lora=LoRAConfig(r=4), adapter=AdapterConfig(8),
                       prompt=PromptTuningConfig(num_virtual_tokens=3))
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    added = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    # Frozen: exactly the base model's parameters; trainable: exactly the method's.
    assert {n.removeprefix("base_model.") for n in base} == {n for n, _ in _model().named_parameters()}
    assert sum(p.numel() for p in added.values()) == ADDED[method]
    _train_steps(model, 3, tmp_path)
    for n, p in model.named_parameters():
        if n in base:
            assert torch.equal(p, base[n]), f"frozen {n} changed"
    unchanged = [n for n, p in model.named_parameters() if n in added and torch.equal(p, added[n])]
    assert not unchanged, f"trainable tensors that did not move: {unchanged}"


@pytest.mark.parametrize("method", ["lora", "adapter", "prompt"])
def test_a_deep_copy_owns_its_adapter(method):
    """copy.deepcopy (the merged export, a frozen DPO reference) must not share the adapter:
    changing the copy's adapter leaves the original's outputs alone."""
    model = apply_peft(_model(), method, lora=LoRAConfig(r=4), adapter=AdapterConfig(8),
                       prompt=PromptTuningConfig(3))
    before = model(X)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        for p in twin.parameters():
            if p.requires_grad:
                p.add_(0.5)
    assert (twin(X) - before).abs().max() > 1e-2
    torch.testing.assert_close(model(X), before, atol=0, rtol=0)


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
