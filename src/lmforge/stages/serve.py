"""`lmforge serve MODEL [MODEL2 ...]`: an OpenAI-compatible API with continuous batching.

    lmforge serve runs/demo/sft/model --port 8000 --api_key sk-local
    lmforge serve runs/demo/sft/model runs/demo/dpo/model --limits.max_running 32
    curl localhost:8000/v1/chat/completions -H "Authorization: Bearer sk-local" \\
         -d '{"model": "runs/demo/sft/model", "messages": [{"role": "user", "content": "Hi"}]}'

Each model gets its own scheduler thread and KV-cache slots; a model's id in the API is
its path as given. The web page (chat, arena, leaderboard) is at http://HOST:PORT/. See
infer/server.py for the routes and limits.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch

from lmforge.config import ConfigError
from lmforge.infer.arena import Arena
from lmforge.infer.server import ServeLimits, ServedModel, create_app
from lmforge.model.quantize import Scheme
from lmforge.runtime import Runtime


@dataclass
class ServeConfig:
    models: list[str] = field(default_factory=list)  # model directories, .gguf files or hub names
    host: str = "127.0.0.1"  # 0.0.0.0 listens on every interface (then set api_key)
    port: int = 8000
    api_key: list[str] = field(default_factory=list)  # accepted Bearer keys (none: no auth)
    limits: ServeLimits = field(default_factory=ServeLimits)
    arena_dir: str = "runs/arena"  # arena votes: pairs.jsonl (for dpo / rm) and ties.jsonl
    builtin_tools: list[str] = field(default_factory=lambda: ["calculator"])  # run on request: calculator, python
    device: str = "auto"
    dtype: str = "float32"  # weights dtype: float32 | bfloat16
    quantize: Scheme = "none"  # weight-only quantization for inference: none | int8 | int4
    seed: int = 0


def build_app(cfg: ServeConfig):
    if not cfg.models:
        raise ConfigError("name at least one model: lmforge serve MODEL [MODEL2 ...]")
    rt = Runtime.setup(cfg.device, "float32", cfg.seed)
    paths = dict.fromkeys(path.rstrip("/") for path in cfg.models)  # each model once, in order
    served = [ServedModel.load(path, cfg.limits, device=rt.device, dtype=getattr(torch, cfg.dtype),
                               quantize=cfg.quantize) for path in paths]
    for model in served:
        model.scheduler.start()
    return create_app({m.name: m for m in served}, cfg.api_key, cfg.limits, Arena(cfg.arena_dir),
                      cfg.builtin_tools)


def serve(cfg: ServeConfig) -> None:
    import uvicorn

    app = build_app(cfg)
    if not cfg.api_key and cfg.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"lmforge serve: warning: listening on {cfg.host} without --api_key: anyone who can "
              "reach this port can use the models", file=sys.stderr)
    print(f"lmforge serve: http://{cfg.host}:{cfg.port}/v1 ({', '.join(cfg.models)})")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning",
                timeout_keep_alive=5, limit_concurrency=4 * (cfg.limits.max_running + cfg.limits.max_waiting))
