import json

import pytest
import torch
from safetensors.torch import load_file

from lmforge.config import ConfigError, load_config
from lmforge.model.hub import read_safetensors
from lmforge.stages.chat import ChatConfig, chat
from lmforge.stages.check import CheckConfig, check
from lmforge.stages.convert import ConvertConfig, convert, load_pretrained
from lmforge.stages.sft import SFTConfig, sft
from lmforge.tokenizer.chat import ChatTemplateError


def sft_config(model_dir, chat_file, run_dir, *extra) -> SFTConfig:
    return load_config(SFTConfig, [
        "--run_dir", str(run_dir), "--model", str(model_dir), "--data.train", str(chat_file),
        "--data.batch_size", "4", "--data.seq_len", "64", "--data.val_fraction", "0.1",
        "--optim.lr", "3e-3", "--optim.warmup_steps", "2", "--loop.max_steps", "6",
        "--loop.log_every_steps", "2", "--loop.progress", "false", "--eval.every_steps", "3",
        "--eval.sample_questions", "What is 1 + 2?", "--eval.sample_tokens", "6",
        "--tensorboard", "false", "--device", "cpu", *extra])


def test_full_sft_writes_an_hf_checkpoint_and_learns(chat_model_dir, chat_file, tmp_path):
    result = sft(sft_config(chat_model_dir, chat_file, tmp_path, "--loop.max_steps", "12"))
    assert result.losses[-1] < result.losses[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["trainable_params"] == summary["total_params"]
    assert summary["data"]["examples"] > 0 and summary["peak_memory_mb"] > 0
    model, tok = load_pretrained(tmp_path / "model")
    assert model.config.vocab_size == 512 and tok.chat_template
    assert (tmp_path / "report.md").exists()


def test_packed_sft_learns_and_refuses_prompt_tuning(chat_model_dir, chat_file, tmp_path):
    result = sft(sft_config(chat_model_dir, chat_file, tmp_path / "a", "--data.pack", "true",
                            "--loop.max_steps", "12", "--peft", "lora", "--optim.lr", "1e-2"))
    assert result.losses[-1] < result.losses[0]
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


@pytest.mark.parametrize("method", ["adapter", "prompt"])
def test_adapter_and_prompt_sft_run_on_the_one_loop(method, chat_model_dir, chat_file, tmp_path):
    result = sft(sft_config(chat_model_dir, chat_file, tmp_path, "--peft", method,
                            "--prompt.init_text", "Answer the question."))
    assert len(result.losses) == 6
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert 0 < summary["trainable_params"] < summary["total_params"] / 2
    assert (tmp_path / "model" / "adapter_model.safetensors").exists()


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
