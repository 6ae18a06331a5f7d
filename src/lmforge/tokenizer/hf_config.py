"""The Hugging Face side files of a tokenizer directory: tokenizer_config.json and friends.

A directory we write loads with `transformers.AutoTokenizer.from_pretrained(dir)`, and its
`apply_chat_template` renders our chat format. Reading is tolerant of other models'
directories: special tokens may be plain strings or serialised AddedToken dicts, and the
chat template may sit in tokenizer_config.json or (transformers >= 4.43) chat_template.jinja.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.tokenizer.bpe import ENDOFTEXT, IM_END, IM_SEP, IM_START, PAD

# `<|im_start|>{role}<|im_sep|>{content}<|im_end|>` per message. It opens with the BOS
# token because pretraining starts every document with it, so a chat is in-distribution.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    f"{{{{ '{IM_START}' + message['role'] + '{IM_SEP}' + message['content'] + '{IM_END}' }}}}"
    "{% endfor %}"
    f"{{% if add_generation_prompt %}}{{{{ '{IM_START}assistant{IM_SEP}' }}}}{{% endif %}}"
)


def our_tokenizer_config(special_tokens: list[str]) -> dict:
    """tokenizer_config.json for a tokenizer trained by lmforge (BOS = EOS = <|endoftext|>)."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": ENDOFTEXT,
        "eos_token": ENDOFTEXT,
        "pad_token": PAD,
        "unk_token": None,
        "additional_special_tokens": [t for t in special_tokens if t not in (ENDOFTEXT, PAD)],
        "add_bos_token": False,  # BOS is added explicitly (tokenize stage, chat template)
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,  # it would rewrite " ." and break round trips
        "model_max_length": 1_000_000_000,
        "chat_template": CHAT_TEMPLATE,
    }


def read_tokenizer_config(directory: Path) -> dict:
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    jinja = directory / "chat_template.jinja"
    if not config.get("chat_template") and jinja.exists():
        config["chat_template"] = jinja.read_text()
    return config


def token_content(value: object) -> str | None:
    """`"<s>"` or `{"content": "<s>", ...}` (a serialised AddedToken) -> `"<s>"`."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def write_tokenizer_config(directory: Path, config: dict) -> None:
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    special_map = {key: config[key] for key in ("bos_token", "eos_token", "pad_token", "unk_token",
                                                "additional_special_tokens")
                   if config.get(key) is not None}
    (directory / "special_tokens_map.json").write_text(
        json.dumps(special_map, indent=2, ensure_ascii=False))
