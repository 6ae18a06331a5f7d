"""One generation back end for everything that asks a model for text: judges, teachers, the
data engine. A local model (batched through the KV-cache engine) or an OpenAI-compatible
endpoint, behind the same call.

    backend = open_backend("runs/smollm2")                                   # any model lmforge loads
    backend = open_backend("gpt-4o-mini", url="https://host/v1", api_key_env="OPENAI_API_KEY")
    replies = backend.chat([[{"role": "user", "content": "Hi"}], ...], max_new_tokens=64)
    completions = backend.complete(conversations, max_new_tokens=64)   # + finish_reason per reply

Endpoint calls go out concurrently (`concurrency` at a time), each with a timeout, and are
retried with exponential backoff on connection errors, timeouts, 429, 5xx and replies that
are not a chat completion (malformed JSON); any other HTTP error is raised at once with the
server's message (a `BackendError`). `seed` makes sampling repeatable: the local model
reseeds its generator; an endpoint receives OpenAI's `seed` field, `seed + i` for the i-th
conversation, so n copies of one prompt still give n different samples. The API key is read from an
environment variable, never from a config file, so it never lands in a run directory.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

Messages = list[dict]


class BackendError(RuntimeError):
    """The endpoint gave no usable answer (after its retries)."""


@dataclass
class Completion:
    text: str
    finish_reason: str = "stop"  # "length": cut off at max_new_tokens (OpenAI's names)


class LocalBackend:
    """A model in this process; prompts rendered with its chat template, generated in batches."""

    def __init__(self, model, tok, batch_size: int = 32, seed: int = 0):
        self.model, self.tok, self.batch_size = model.eval(), tok, batch_size
        self.generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)

    def chat(self, conversations: list[Messages], max_new_tokens: int = 256, temperature: float = 0.0,
             top_p: float = 1.0, seed: int | None = None) -> list[str]:
        return [c.text for c in self.complete(conversations, max_new_tokens, temperature, top_p, seed)]

    def complete(self, conversations: list[Messages], max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None) -> list[Completion]:
        from lmforge.infer.engine import Sampling, generate
        from lmforge.stages.common import stop_ids
        from lmforge.tokenizer.chat import render_prompt

        prompts = [render_prompt(self.tok, m) for m in conversations]
        stops = set(stop_ids(self.tok))
        if seed is not None:
            self.generator.manual_seed(seed)
        replies = []
        for start in range(0, len(prompts), self.batch_size):
            out = generate(self.model, prompts[start:start + self.batch_size], max_new_tokens,
                           Sampling(temperature, top_p=top_p), stop_ids=stops, pad_id=self.tok.pad_id or 0,
                           generator=self.generator)
            replies += [Completion(self.tok.decode([t for t in row if t not in stops], skip_special=True).strip(),
                                   "stop" if stopped else "length") for row, stopped in zip(out.tokens, out.stopped)]
        return replies


@dataclass
class EndpointBackend:
    """POST {url}/chat/completions, as OpenAI, vLLM, llama.cpp's server and `lmforge serve` take it."""

    url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    retries: int = 4
    backoff_s: float = 1.0  # waits 1, 2, 4, 8 s between tries
    concurrency: int = 4

    def chat(self, conversations: list[Messages], max_new_tokens: int = 256, temperature: float = 0.0,
             top_p: float = 1.0, seed: int | None = None) -> list[str]:
        return [c.text for c in self.complete(conversations, max_new_tokens, temperature, top_p, seed)]

    def complete(self, conversations: list[Messages], max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int | None = None) -> list[Completion]:
        body = {"model": self.model, "max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
        bodies = [{**body, "messages": m, **({"seed": seed + i} if seed is not None else {})}
                  for i, m in enumerate(conversations)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._complete, bodies))

    def _complete(self, body: dict) -> Completion:
        key = os.environ.get(self.api_key_env, "")
        request = urllib.request.Request(
            self.url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(), method="POST",
            headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    choice = json.loads(response.read())["choices"][0]
                    return Completion(choice["message"]["content"] or "", choice.get("finish_reason") or "stop")
            except urllib.error.HTTPError as e:
                if e.code != 429 and e.code < 500 or attempt == self.retries:
                    message = e.read()[:300].decode(errors="replace")
                    raise BackendError(f"{self.url}: HTTP {e.code}: {message}") from None
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
                if attempt == self.retries:
                    raise BackendError(f"{self.url}: no answer after {self.retries + 1} tries ({e})") from None
            except (ValueError, KeyError, IndexError, TypeError) as e:  # JSONDecodeError is a ValueError
                if attempt == self.retries:
                    raise BackendError(f"{self.url}: no chat completion in the reply after {self.retries + 1} "
                                       f"tries ({type(e).__name__}: {e})") from None
            time.sleep(self.backoff_s * 2 ** attempt)
        raise AssertionError("unreachable")


def open_backend(model: str, url: str = "", api_key_env: str = "OPENAI_API_KEY", device: str = "cpu",
                 **options):
    """An endpoint when `url` is given (then `model` is the server's model name), else a model
    lmforge loads (directory, .gguf, adapter, hub name)."""
    if url:
        return EndpointBackend(url, model, api_key_env, **options)
    from lmforge.model.load import load_pretrained

    loaded, tok = load_pretrained(model, device)
    return LocalBackend(loaded, tok, **options)
