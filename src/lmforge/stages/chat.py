"""`lmforge chat MODEL`: talk to a model in the terminal, replies streamed as they decode.

    lmforge chat runs/demo/sft/model --system "You answer briefly." --temperature 0.7
    lmforge chat runs/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    lmforge chat runs/demo/sft/model --message "What is 3 + 4?"     # one turn, then exit
    lmforge chat runs/demo/sft/model --tools calculator python       # the model may call tools

Commands inside: /reset, /system TEXT, /quit. Each reply ends at the end-of-turn token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmforge.model.quantize import Scheme
from lmforge.infer.chat import ChatSession, run_repl
from lmforge.infer.engine import Sampling
from lmforge.runtime import Runtime


@dataclass
class ChatConfig:
    model: str = ""  # model directory, .gguf file, adapter directory or hub name
    system: str = ""  # system prompt
    message: list[str] = field(default_factory=list)  # send these turns and exit (no REPL)
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 0.9  # 1 = off
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"  # weights dtype: float32 | bfloat16
    quantize: Scheme = "none"  # weight-only quantization for inference: none | int8 | int4
    tools: list[str] = field(default_factory=list)  # built-in tools the model may call: calculator, python


def chat(cfg: ChatConfig) -> list[str]:
    from lmforge.model.load import load_pretrained

    rt = Runtime.setup(cfg.device, "float32", cfg.seed)
    model, tok = load_pretrained(cfg.model, rt.device, getattr(torch, cfg.dtype),
                                  quantize=cfg.quantize)
    session = ChatSession(model, tok, cfg.system, Sampling(cfg.temperature, cfg.top_k, cfg.top_p),
                          cfg.max_new_tokens, seed=cfg.seed, tools=cfg.tools)
    if not cfg.message:
        run_repl(session)
        return [m["content"] for m in session.history if m["role"] == "assistant"]
    replies = []
    for text in cfg.message:
        print(f"> {text}")
        replies.append(session.send(text, on_text=lambda s: print(s, end="", flush=True)))
        print()
    return replies
