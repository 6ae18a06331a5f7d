import json

import pytest
import torch
from safetensors.torch import load_file

import lmforge.stages.sft as sft_stage
from lmforge.config import ConfigError, load_config
from lmforge.data.chat import read_conversations
from lmforge.data.sft import iter_chat_eval_batches, tokenize_conversations
from lmforge.model.hub import read_safetensors
from lmforge.model.peft import unwrap
from lmforge.stages.chat import ChatConfig, chat
from lmforge.stages.check import CheckConfig, check
from lmforge.model.load import load_pretrained
from lmforge.stages.convert import ConvertConfig, convert
from lmforge.stages.sft import SFTConfig, sft
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.chat import ChatTemplateError
from lmforge.train.objectives.lm import lm_objective

# The fixture model (chat_model_dir in tests/conftest.py): vocab 512, width 64, 2 layers,
# 4 query and 2 KV heads of 16, SwiGLU 64, tied embeddings. Its parameter count, by hand:
EMBED = 512 * 64
LAYER = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 64 + 2 * 64  # q, o | k, v | gate, up, down | norms
BASE_PARAMS = EMBED + 2 * LAYER + 64  # + the final norm = 82,240


def sft_config(model_dir, chat_file, run_dir, *extra) -> SFTConfig:
    """The test defaults; an option in `extra` replaces the default of the same name."""
    options = {"--run_dir": [str(run_dir)], "--model": [str(model_dir)], "--data.train": [str(chat_file)],
               "--data.batch_size": ["4"], "--data.seq_len": ["64"], "--data.val_fraction": ["0.1"],
               "--optim.lr": ["3e-3"], "--optim.warmup_steps": ["2"], "--loop.max_steps": ["6"],
               "--loop.log_every_steps": ["2"], "--loop.progress": ["false"], "--eval.every_steps": ["3"],
               "--eval.sample_questions": ["What is 1 + 2?"], "--eval.sample_tokens": ["6"],
               "--tensorboard": ["false"], "--device": ["cpu"]}
    for arg in extra:
        if arg.startswith("--"):
            key = arg
            options[key] = []
        else:
            options[key].append(arg)
    return load_config(SFTConfig, [a for key, values in options.items() for a in (key, *values)])


@torch.no_grad()
def chat_loss(model, tok, chat_file) -> float:
    """Mean loss over every conversation of the chat file, in fixed batches (not the
    per-step training losses, which are taken on different batches)."""
    examples, _ = tokenize_conversations(tok, read_conversations([str(chat_file)]), 64)
    was_training = model.training
    model.eval()
    losses = [lm_objective(model, b)[0].item() for b in iter_chat_eval_batches(examples, 16, tok.pad_id)]
    model.train(was_training)
    return sum(losses) / len(losses)


@pytest.fixture
def trained(monkeypatch, chat_model_dir, chat_file):
    """Records the very model object sft() trains, its parameters and its loss on the chat
    data as it is handed to training (after PEFT is attached, before any step)."""
    seen = {}
    tok = Tokenizer.from_dir(chat_model_dir)
    real_apply_peft = sft_stage.apply_peft

    def spy(model, *args, **kwargs):
        model = real_apply_peft(model, *args, **kwargs)
        seen.update(model=model, loss_before=chat_loss(model, tok, chat_file),
                    before={n: p.detach().clone() for n, p in model.named_parameters()})
        return model

    monkeypatch.setattr(sft_stage, "apply_peft", spy)
    seen["loss_after"] = lambda: chat_loss(seen["model"], tok, chat_file)
    return seen


def assert_trained_only_its_parameters(seen, chat_model_dir) -> int:
    """Every trainable tensor moved; every frozen one is a base weight, bit-identical to the
    file. Returns the number of trainable elements."""
    model = seen["model"]
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    unchanged = [n for n, p in trainable.items() if torch.equal(p, seen["before"][n])]
    assert not unchanged, f"trainable tensors that did not move: {unchanged}"
    base = read_safetensors(chat_model_dir)
    params = dict(unwrap(model).named_parameters())
    assert set(base) <= set(params)
    frozen = {n for n, p in params.items() if not p.requires_grad}
    assert frozen <= set(base), f"frozen tensors that are not base weights: {frozen - set(base)}"
    for name in frozen:
        assert torch.equal(params[name], base[name]), f"frozen {name} changed"
    return sum(p.numel() for p in trainable.values())


def assert_reloads_identically(model, model_dir) -> None:
    """The saved model/adapter directory loads (base + adapter) with the live model's logits."""
    loaded, _ = load_pretrained(model_dir)
    x = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model.eval()(x), atol=0, rtol=0)


def test_full_sft_writes_an_hf_checkpoint_and_learns(trained, chat_model_dir, chat_file, tmp_path):
    result = sft(sft_config(chat_model_dir, chat_file, tmp_path))
    assert len(result.losses) == result.step == 6
    # 6 steps at lr 3e-3 take the chat data's loss from ~6.28 to ~4.76 (observed).
    assert trained["loss_before"] > 6.0
    assert trained["loss_after"]() < trained["loss_before"] - 1.0
    assert assert_trained_only_its_parameters(trained, chat_model_dir) == BASE_PARAMS
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trainable_params"] == summary["total_params"] == BASE_PARAMS
    assert summary["step"] == 6 and summary["final_loss"] == result.losses[-1]
    assert summary["data"]["examples"] == 44  # 48 conversations, 10% (4) held out
    assert summary["peak_memory_mb"] > 0
    model, tok = load_pretrained(tmp_path / "model")
    assert model.config.vocab_size == 512 and tok.chat_template
    assert_reloads_identically(trained["model"], tmp_path / "model")
    assert (tmp_path / "report.md").exists()


def test_packed_sft_learns_and_refuses_prompt_tuning(trained, chat_model_dir, chat_file, tmp_path):
    result = sft(sft_config(chat_model_dir, chat_file, tmp_path / "a", "--data.pack", "true",
                            "--peft", "lora", "--lora.r", "4", "--optim.lr", "1e-2"))
    assert len(result.losses) == 6
    # LoRA starts at the base (B = 0) and 6 packed steps take ~6.28 to ~5.8 (observed).
    assert trained["loss_before"] > 6.0
    assert trained["loss_after"]() < trained["loss_before"] - 0.25
    # r = 4 on all seven projections of both layers: A (r x in) + B (out x r).
    lora = 2 * 4 * ((64 + 64) * 5 + (64 + 32) * 2)
    assert assert_trained_only_its_parameters(trained, chat_model_dir) == lora
    assert_reloads_identically(trained["model"], tmp_path / "a" / "model")
    with pytest.raises(ConfigError, match="pack"):
        sft(sft_config(chat_model_dir, chat_file, tmp_path / "b", "--data.pack", "true", "--peft", "prompt"))


def test_lora_sft_saves_peft_adapter_and_resumes_exactly(chat_model_dir, chat_file, tmp_path):
    args = ["--peft", "lora", "--lora.r", "4", "--lora.dropout", "0.1"]
    straight = sft(sft_config(chat_model_dir, chat_file, tmp_path / "a", *args))
    sft(sft_config(chat_model_dir, chat_file, tmp_path / "b", *args, "--loop.max_steps", "3"))
    resumed = sft(sft_config(chat_model_dir, chat_file, tmp_path / "b", *args, "--resume"))
    assert resumed.losses == straight.losses[3:]  # bit for bit on CPU
    adapter = tmp_path / "a" / "model"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    names = load_file(adapter / "adapter_model.safetensors")
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names
    assert all(".lora_" in n for n in names)
    # The merged export differs from the base; the adapter dir loads (base + adapter) too.
    merged = read_safetensors(tmp_path / "a" / "merged")
    base = read_safetensors(chat_model_dir)
    assert not torch.equal(merged["model.layers.0.self_attn.q_proj.weight"],
                           base["model.layers.0.self_attn.q_proj.weight"])
    assert torch.equal(merged["model.norm.weight"], base["model.norm.weight"])
    model, _ = load_pretrained(adapter)
    plain, _ = load_pretrained(tmp_path / "a" / "merged")
    x = torch.randint(0, 512, (1, 9))
    torch.testing.assert_close(model.eval()(x), plain(x), atol=1e-5, rtol=1e-5)


def test_qlora_sft_trains_on_an_int4_base_and_merges_into_the_float_one(chat_model_dir, chat_file, tmp_path):
    args = ["--peft", "lora", "--lora.r", "4", "--quantize", "int4"]
    result = sft(sft_config(chat_model_dir, chat_file, tmp_path / "q", *args))
    assert result.losses[-1] < result.losses[0]
    adapter = tmp_path / "q" / "model"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "LORA"
    # The merged export is the float base + the adapter (not the int4-rounded base + adapter).
    merged = read_safetensors(tmp_path / "q" / "merged")
    lora, _ = load_pretrained(adapter)  # float base, adapter attached
    name = "model.layers.0.mlp.up_proj"
    expected = lora.get_submodule(name).weight + lora.get_submodule(name).delta_weight()
    torch.testing.assert_close(merged[name + ".weight"], expected.detach())
    with pytest.raises(ConfigError, match="PEFT method"):
        sft(sft_config(chat_model_dir, chat_file, tmp_path / "f", "--quantize", "int8"))


# (method, learning rate, fewest nats the chat data's loss must fall in 6 steps, trainable
# elements). Observed drops: adapter ~0.45 (6.28 -> 5.84); prompt tuning, which can only
# steer a random model through 16 input vectors, ~0.12 (6.29 -> 6.18).
PEFT_RUNS = [("adapter", "3e-3", 0.3, 2 * 2 * (64 * 64 + 64 + 64 * 64 + 64)),  # 2 per layer: down + up
             ("prompt", "3e-2", 0.06, 16 * 64)]  # 16 virtual tokens of width 64


@pytest.mark.parametrize("method,lr,min_drop,n_trainable", PEFT_RUNS, ids=[r[0] for r in PEFT_RUNS])
def test_adapter_and_prompt_sft_learn_on_the_one_loop(method, lr, min_drop, n_trainable, trained,
                                                      chat_model_dir, chat_file, tmp_path):
    result = sft(sft_config(chat_model_dir, chat_file, tmp_path, "--peft", method, "--optim.lr", lr,
                            "--prompt.init_text", "Answer the question."))
    assert len(result.losses) == 6
    assert trained["loss_after"]() < trained["loss_before"] - min_drop
    assert assert_trained_only_its_parameters(trained, chat_model_dir) == n_trainable
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trainable_params"] == n_trainable
    assert summary["total_params"] == BASE_PARAMS + n_trainable
    names = set(load_file(tmp_path / "model" / "adapter_model.safetensors"))
    if method == "adapter":
        assert len(names) == 2 * 2 * 4  # {attn,mlp}_adapter.{down,up}.{weight,bias}, 2 layers
        assert "base_model.model.model.layers.1.mlp_adapter.up.weight" in names
    else:
        assert names == {"prompt_embeddings"}
        # Initialised from the text's token embeddings, repeated to 16 rows.
        tok = Tokenizer.from_dir(chat_model_dir)
        ids = (tok.encode("Answer the question.") * 16)[:16]
        table = read_safetensors(chat_model_dir)["model.embed_tokens.weight"]
        assert torch.equal(trained["before"]["prompt_embeddings"], table[ids])
    assert_reloads_identically(trained["model"], tmp_path / "model")


def test_sft_refuses_a_template_without_stop_token(chat_model_dir, chat_file, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(chat_model_dir, broken)
    config_path = broken / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    config_path.write_text(json.dumps(config))
    with pytest.raises(ChatTemplateError, match="does not end with a special token"):
        sft(sft_config(broken, chat_file, tmp_path / "run"))
    with pytest.raises(SystemExit):
        check(CheckConfig(model=str(broken)))
    assert check(CheckConfig(model=str(chat_model_dir), data=[str(chat_file)])).ok


def test_convert_hub_name_and_chat_turns(chat_model_dir, tmp_path, capsys):
    model, _ = load_pretrained("someone/tiny-chat", download=lambda repo: str(chat_model_dir))
    assert model.config.hidden_size == 64
    convert(ConvertConfig(src=str(chat_model_dir), dst=str(tmp_path / "copy")))
    assert (tmp_path / "copy" / "generation_config.json").exists()
    replies = chat(ChatConfig(model=str(tmp_path / "copy"), message=["Hi", "And?"],
                              max_new_tokens=5, temperature=0, device="cpu"))
    assert len(replies) == 2 and "> And?" in capsys.readouterr().out
