"""`lmforge generate MODEL --prompt TEXT`: sample continuations, streamed to the terminal.

    lmforge generate runs/demo/pretrain/model --prompt "Call me" --max_new_tokens 64
    lmforge generate runs/demo/pretrain/model --prompt "One" "Two" --temperature 0
    lmforge generate runs/models/smollm2/hf --prompt "Once" --quantize int8   # or int4

Several prompts decode together as one batch through the KV-cache engine. The speed of the
prompt's prefill and of decoding (tokens per second) goes to stderr at the end.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

from lmforge.model.quantize import Scheme
from lmforge.infer.engine import Sampling, generate as generate_tokens
from lmforge.runtime import Runtime
from lmforge.stages.common import stop_ids
from lmforge.model.load import load_pretrained


@dataclass
class GenerateConfig:
    model: str = ""  # model directory, .gguf file, adapter directory or hub name
    prompt: list[str] = field(default_factory=lambda: [""])  # one or more prompts
    max_new_tokens: int = 128
    temperature: float = 0.8  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 0.95  # 1 = off
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"  # weights dtype for inference: float32 | bfloat16
    quantize: Scheme = "none"  # weight-only quantization for inference: none | int8 | int4
    compile: bool = False  # torch.compile each decode step (CUDA graphs on a GPU)


def generate(cfg: GenerateConfig) -> list[str]:
    rt = Runtime.setup(cfg.device, "float32", cfg.seed)
    model, tok = load_pretrained(cfg.model, rt.device, getattr(torch, cfg.dtype),
                                  quantize=cfg.quantize)
    model.eval()
    bos = [tok.bos_id] if tok.bos_id is not None else []
    prompts = [bos + tok.encode(p) for p in cfg.prompt]
    sampling = Sampling(cfg.temperature, cfg.top_k, cfg.top_p)
    streaming = len(prompts) == 1
    decoder = tok.stream_decoder(skip_special=True)
    if streaming:
        print(cfg.prompt[0], end="", flush=True)
    on_token = (lambda row, t: print(decoder.feed([t]), end="", flush=True)) if streaming else None
    out = generate_tokens(model, prompts, cfg.max_new_tokens, sampling, stop_ids=set(stop_ids(tok)),
                          seed=cfg.seed, pad_id=tok.pad_id or 0, on_token=on_token,
                          compile=cfg.compile)
    texts = [p + tok.decode(t, skip_special=True) for p, t in zip(cfg.prompt, out.tokens)]
    if streaming:
        print(decoder.flush(), flush=True)
    else:
        for i, text in enumerate(texts):
            print(f"[{i}] {text}\n")
    print(f"[{out.speed()}]", file=sys.stderr)
    return texts
