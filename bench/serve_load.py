"""Load on `lmforge serve`: N concurrent streaming chat clients for a bounded time, on loopback.

    python bench/serve_load.py --model runs/models/smollm2/hf --clients 1 16 64 --seconds 30
    python bench/serve_load.py --random_depth 4 --clients 1 16 64     # a random demo-size model

The server runs as its own process (`lmforge serve`, what a user starts), so the clients
here do not share its interpreter. Each client sends streaming chat completions back to
back (`--max_tokens` new tokens each, `ignore_eos` so every answer has that length) until
`--seconds` have passed, and records the time to the first content chunk and the tokens
the server reports (`stream_options.include_usage`). Per concurrency level: requests,
failures (any non-200 or broken stream), p50 / p99 time-to-first-token, and aggregate
completion tokens/s over the level's wall time. `--random_depth D` builds a randomly
initialised depth-D model (the tiny recipe's shape) with a tokenizer trained on the bundled
corpus. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import ROOT, Meta

PROMPTS = ["Why is the sky blue?", "Write a short story about a lighthouse keeper.",
           "What is 17 * 23? Explain step by step.", "Name three rivers in Europe and their lengths."]


def random_model(depth: int, out: Path) -> Path:
    import torch

    from lmforge.model.transformer import ModelConfig, Transformer
    from lmforge.stages.common import export_model
    from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer
    from lmforge.tokenizer import Tokenizer

    train_tokenizer(TokenizerTrainConfig(input=[str(ROOT / "data" / "corpus")], output=str(out),
                                         vocab_size=8192, max_chars=2_000_000))
    torch.manual_seed(0)
    width = 64 * depth  # the depth dial of configs/tiny.yaml: depth 4 -> width 256, 4 heads of 64
    model = Transformer(ModelConfig(vocab_size=8192, hidden_size=width, intermediate_size=3 * width,
                                    num_hidden_layers=depth, num_attention_heads=depth,
                                    num_key_value_heads=depth, head_dim=64, max_position_embeddings=1024))
    export_model(model, Tokenizer.from_dir(out), out)
    return out


def start_server(model: str, args) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.server_threads)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmforge.cli", "serve", model, "--port", str(port), "--device", "cpu",
         "--limits.max_running", str(max(args.clients)), "--limits.max_waiting", str(max(args.clients)),
         "--limits.max_prompt_tokens", "192", "--limits.max_tokens", str(args.max_tokens)],
        env=env, cwd=ROOT, stdout=sys.stderr)  # stdout carries only the JSON
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
    raise RuntimeError("the server did not come up in 300 s")


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True,
            "temperature": 0.8}
    started = time.perf_counter()
    first, tokens, done = None, 0, False
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            return {"ok": False, "status": response.status_code}
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return {"ok": done and tokens > 0, "ttft_s": first, "tokens": tokens, "status": 200}


async def level(url: str, model: str, clients: int, seconds: float, max_tokens: int) -> dict:
    """`clients` loops of back-to-back requests; a request started before the deadline finishes."""
    deadline = time.perf_counter() + seconds
    results: list[dict] = []

    async def run_client(client: httpx.AsyncClient, i: int) -> None:
        k = 0
        while time.perf_counter() < deadline:
            try:
                results.append(await one_request(client, url, model, PROMPTS[(i + k) % len(PROMPTS)],
                                                 max_tokens))
            except (httpx.HTTPError, json.JSONDecodeError) as e:
                results.append({"ok": False, "error": repr(e)})
            k += 1

    # One connection pool for all clients: building an httpx client per task costs ~0.1 s of
    # CPU (an SSL context), which would delay the 64th client's start by seconds.
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(run_client(client, i) for i in range(clients)))
        wall = time.perf_counter() - started
    ok = [r for r in results if r["ok"]]
    ttft = sorted(r["ttft_s"] for r in ok if r["ttft_s"] is not None)
    pct = lambda q: round(ttft[min(len(ttft) - 1, int(q * len(ttft)))], 3) if ttft else None  # noqa: E731
    tokens = sum(r["tokens"] for r in ok)
    return {"clients": clients, "requests": len(results), "failed": len(results) - len(ok),
            "ttft_p50_s": round(statistics.median(ttft), 3) if ttft else None, "ttft_p99_s": pct(0.99),
            "completion_tokens": tokens, "wall_s": round(wall, 1), "tokens_per_s": round(tokens / wall, 1),
            "errors": sorted({r.get("error") or str(r.get("status")) for r in results if not r["ok"]})[:3]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory / .gguf / hub name for `lmforge serve`")
    parser.add_argument("--random_depth", type=int, help="serve a random model of this depth instead")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seconds", type=float, default=30.0, help="per concurrency level")
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--server_threads", type=int, default=1,
                        help="torch threads in the server (1: the clients need the other core, and "
                             "OpenMP threads that spin on an oversubscribed machine cost 4x, measured)")
    args = parser.parse_args()
    meta = Meta(["torch", "fastapi", "uvicorn"])
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(sys.stderr):  # the tokenizer trainer prints progress
            model = args.model or str(random_model(args.random_depth or 4, Path(tmp) / "model"))
        proc, url = start_server(model, args)
        try:
            levels = [asyncio.run(level(url, model, n, args.seconds, args.max_tokens)) for n in args.clients]
        finally:
            proc.terminate()
            proc.wait(30)
    single = levels[0]["tokens_per_s"] if levels[0]["clients"] == 1 else None
    for row in levels:
        row["speedup_vs_1"] = round(row["tokens_per_s"] / single, 2) if single else None
    meta.add(model=args.model or f"random depth {args.random_depth or 4}", max_tokens=args.max_tokens)
    print(meta.dump({"levels": levels}))


if __name__ == "__main__":
    main()
