"""Our tokenizer directory loads in transformers; other models' directories load in ours."""

import json

import pytest
from tokenizers import Tokenizer as Backend
from tokenizers import decoders, models, pre_tokenizers

from lmforge.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_transformers_loads_ours_and_renders_chat(trained_dir, tok):
    hf = transformers.AutoTokenizer.from_pretrained(str(trained_dir))
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (tok.bos_id, tok.eos_id, tok.pad_id)
    messages = [{"role": "user", "content": "Why is the sky blue?"},
                {"role": "assistant", "content": "Rayleigh scattering."}]
    text = hf.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert text == ("<|endoftext|><|im_start|>user<|im_sep|>Why is the sky blue?<|im_end|>"
                    "<|im_start|>assistant<|im_sep|>")
    ids = hf.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert ids == tok.encode(hf.apply_chat_template(messages, tokenize=False), allow_special=True)
    assert hf("Call me Ishmael. 鯨魚")["input_ids"] == tok.encode("Call me Ishmael. 鯨魚")


def test_foreign_chatml_directory_loads_without_our_tokens(tmp_path):
    """A SmolLM2/Qwen-like layout: ChatML, AddedToken dicts, no BOS, template in a .jinja file."""
    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    from tokenizers import trainers
    backend.train_from_iterator(["hello world"] * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": None, "pad_token": "<|endoftext|>",
        "eos_token": {"__type": "AddedToken", "content": "<|im_end|>", "special": True}}))
    (tmp_path / "chat_template.jinja").write_text(CHATML)

    tok = Tokenizer.from_dir(tmp_path)
    assert tok.bos_id is None
    assert tok.eos_id == tok.token_to_id("<|im_end|>")
    assert tok.pad_id == tok.token_to_id("<|endoftext|>")
    assert tok.special_ids == {0, 1, 2}
    assert tok.chat_template == CHATML
    assert tok.token_to_id("<|im_sep|>") is None
    assert not set(tok.encode("<|im_end|>")) & tok.special_ids
