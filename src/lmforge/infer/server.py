"""An OpenAI-compatible HTTP API over continuous-batching schedulers (FastAPI on uvicorn).

    app = create_app({"tiny": ServedModel.load("runs/demo/sft/model")}, api_keys=["sk-1"])
    uvicorn.run(app, host="127.0.0.1", port=8000)       # what `lmforge serve` does

Routes: GET /health, GET /v1/models, POST /v1/chat/completions, POST /v1/completions
(`stream` as server-sent events in OpenAI's chunk format, ending `data: [DONE]`); with an
`Arena`, POST /v1/arena/battle, POST /v1/arena/vote, GET /v1/arena/leaderboard; and the
web page (infer/web/) at /. Handlers
are thin: validate, render the prompt, submit to the model's `Scheduler`, translate its
token events into text. They never touch the model; the scheduler's thread does.

Limits answer the way OpenAI does: a missing or wrong key 401; a bad body 400 with
{"error": {"message", "type", "param", "code"}}; a body over `max_body_bytes` 413; a
full waiting queue 429 with Retry-After (bounded, never an unbounded queue). A client
that goes away mid-stream cancels its requests, so their slots free before the next step.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.infer.arena import Arena
from lmforge.infer.body_limit import BodyLimit
from lmforge.infer.engine import Sampling
from lmforge.infer.openai_schema import ChatMessage, ChatRequest, CompletionRequest, SamplingParams, error_body
from lmforge.infer.scheduler import QueueFull, Scheduler
from lmforge.infer import tools as tool_format
from lmforge.stages.common import stop_ids
from lmforge.tokenizer.chat import render_prompt


WEB_DIR = Path(__file__).parent / "web"  # the chat page and the arena (static, no build step)


@dataclass
class ServeLimits:
    # The KV cache holds max_running x (max_prompt_tokens + max_tokens) positions, capped by
    # the model's context: SmolLM2-135M in fp32 needs 1.1 GB for 16 x 1536.
    max_prompt_tokens: int = 1024  # longer prompts get a 400
    max_tokens: int = 512  # largest max_tokens a request may ask for (default: what fits)
    max_body_bytes: int = 1_000_000  # larger request bodies get a 413
    max_running: int = 16  # requests decoding at once per model (KV-cache slots)
    max_waiting: int = 64  # requests queued per model beyond those; more get a 429
    request_timeout_s: float = 300.0  # a request still decoding after this is cut ("length")


@dataclass
class ServedModel:
    name: str
    tok: object
    scheduler: Scheduler

    @classmethod
    def load(cls, path: str, limits: ServeLimits, name: str | None = None, **load_kwargs) -> ServedModel:
        from lmforge.model.load import load_pretrained

        model, tok = load_pretrained(path, **load_kwargs)
        scheduler = Scheduler(model, set(stop_ids(tok)), limits.max_running, limits.max_waiting,
                              max_len=limits.max_prompt_tokens + limits.max_tokens)
        return cls(name or str(path).rstrip("/"), tok, scheduler)


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.headers = status, param, code, headers


def create_app(models: dict[str, ServedModel], api_keys: list[str] = (),
               limits: ServeLimits | None = None, arena: Arena | None = None,
               builtin_tools: list[str] = ("calculator",)) -> FastAPI:
    """The app; `builtin_tools` are those a request may ask the server to run (`python`
    runs code in the sandbox: off unless named)."""
    limits = limits or ServeLimits()
    app = FastAPI(title="lmforge", docs_url=None, redoc_url=None, openapi_url=None)
    api = APIRouter(dependencies=[Depends(_key_checker(api_keys))])
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    _add_error_handlers(app)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": {name: {"running": m.scheduler.running,
                                                  "waiting": m.scheduler.waiting.qsize()}
                                           for name, m in models.items()}}

    @api.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                            "owned_by": "lmforge"} for name in models]}

    @api.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        if body.builtin_tools:
            return await run_builtin_tools(models, body, limits, builtin_tools, request)
        return await chat_generation(models, body, limits).respond(request, chat=True)

    @api.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        served = _model(models, body.model)
        texts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not texts:
            raise APIError(400, "prompt must not be empty", "prompt")
        bos = [served.tok.bos_id] if served.tok.bos_id is not None else []
        prompts = [bos + served.tok.encode(t) for t in texts]
        run = Generation(served, prompts, body, body.max_tokens, limits)
        return await run.respond(request, chat=False)

    if arena is not None:
        _add_arena_routes(api, models, arena, limits)
    app.include_router(api)
    app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def chat_generation(models: dict[str, ServedModel], body: ChatRequest, limits: ServeLimits) -> Generation:
    """A chat request -> its Generation (prompt rendered by the model's chat template)."""
    served = _model(models, body.model)
    messages = tool_format.to_template_messages([m.model_dump() for m in body.messages], body.tools,
                                                served.tok)
    try:
        prompt = render_prompt(served.tok, messages)
    except ValueError as e:
        raise APIError(400, f"cannot render these messages: {e}", "messages") from e
    max_tokens = body.max_completion_tokens or body.max_tokens
    return Generation(served, [prompt], body, max_tokens, limits, with_specials=bool(body.tools))


MAX_TOOL_ROUNDS = 4  # model -> tool -> model ... at most this many tool turns per request


async def run_builtin_tools(models: dict[str, ServedModel], body: ChatRequest, limits: ServeLimits,
                            enabled: list[str], request: Request) -> dict:
    """Generate; while the model calls built-in tools, run them and generate again with the
    results appended. The reply is the last generation's, plus `tool_results` (ours)."""
    refused = sorted(set(body.builtin_tools) - set(enabled))
    if refused:
        raise APIError(400, f"built-in tools not enabled on this server: {refused}", "builtin_tools")
    if body.stream or body.n != 1:
        raise APIError(400, "builtin_tools needs stream=false and n=1", "builtin_tools")
    request_json = body.model_dump(exclude_none=True, exclude={"builtin_tools"})
    request_json["tools"] = (body.tools or []) + [tool_format.BUILTIN_TOOLS[n] for n in body.builtin_tools]
    executed = []
    for _ in range(MAX_TOOL_ROUNDS + 1):
        chat = ChatRequest.model_validate(request_json)
        reply = await chat_generation(models, chat, limits).respond(request, chat=True)
        message = reply["choices"][0]["message"]
        calls = message.get("tool_calls") or []
        if not calls or any(c["function"]["name"] not in body.builtin_tools for c in calls):
            break  # an answer, or a call of the client's own tools: the client's turn
        request_json["messages"].append(message)
        for call in calls:
            result = await asyncio.to_thread(tool_format.run_builtin, call["function"]["name"],
                                             call["function"]["arguments"])
            request_json["messages"].append({"role": "tool", "tool_call_id": call["id"], "content": result})
            executed.append({**call, "result": result})
    reply["tool_results"] = executed
    return reply


class Battle(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)


class Vote(BaseModel):
    battle_id: str
    winner: Literal["a", "b", "tie"]


def _add_arena_routes(api: APIRouter, models: dict[str, ServedModel], arena: Arena, limits: ServeLimits):
    """Two anonymous answers to one conversation (two models, or two samples of one), then a
    vote; the server alone knows which model said what until the vote is stored."""
    battles: OrderedDict[str, dict] = OrderedDict()

    @api.post("/v1/arena/battle")
    async def battle(body: Battle, request: Request):
        names = random.sample(list(models), 2) if len(models) > 1 else [next(iter(models))] * 2
        chats = [ChatRequest(model=name, messages=body.messages, temperature=body.temperature,
                             top_p=body.top_p, max_tokens=body.max_tokens) for name in names]
        replies = await asyncio.gather(*(chat_generation(models, chat, limits).respond(request, chat=True)
                                         for chat in chats))
        answers = [{"model": name, "content": reply["choices"][0]["message"]["content"]}
                   for name, reply in zip(names, replies)]
        battle_id = secrets.token_hex(12)
        battles[battle_id] = {"messages": [m.model_dump(exclude_none=True) for m in body.messages],
                              "a": answers[0], "b": answers[1]}
        while len(battles) > 10_000:  # unvoted battles are forgotten, oldest first
            battles.popitem(last=False)
        return {"battle_id": battle_id, "a": answers[0]["content"], "b": answers[1]["content"]}

    @api.post("/v1/arena/vote")
    async def vote(body: Vote):
        fight = battles.pop(body.battle_id, None)
        if fight is None:
            raise APIError(404, "no such battle (already voted on, or unknown)", "battle_id")
        await asyncio.to_thread(arena.vote, fight["messages"], fight["a"], fight["b"], body.winner)
        return {"stored": True, "a": fight["a"]["model"], "b": fight["b"]["model"]}

    @api.get("/v1/arena/leaderboard")
    async def leaderboard():
        return {"models": await asyncio.to_thread(arena.leaderboard)}


class Generation:
    """One API call: n choices per prompt submitted to the scheduler, their token events
    turned into text (stop strings cut, stop tokens hidden), as one body or as SSE chunks."""

    def __init__(self, served: ServedModel, prompts: list[list[int]], body: SamplingParams,
                 max_tokens: int | None, limits: ServeLimits, with_specials: bool = False):
        try:
            self.stops = body.stop_strings()
        except ValueError as e:
            raise APIError(400, str(e), "stop") from e
        for prompt in prompts:
            if len(prompt) > limits.max_prompt_tokens:
                raise APIError(400, f"the prompt has {len(prompt)} tokens; the limit is "
                               f"{limits.max_prompt_tokens}", "messages", "context_length_exceeded")
        if max_tokens is not None and max_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens is {max_tokens}; the limit is {limits.max_tokens}", "max_tokens")
        self.served, self.prompts, self.body, self.limits = served, prompts, body, limits
        # Unset: as much as fits, as OpenAI does (up to the server's limit).
        room = served.scheduler.max_len - max(map(len, prompts))
        self.max_tokens = max_tokens or max(1, min(limits.max_tokens, room))
        self.with_specials = with_specials
        self.id = f"cmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())

    # --- submitting and collecting ------------------------------------------------------
    def _submit(self) -> tuple[asyncio.Queue, list]:
        """Queue every choice with the scheduler -> (their event queue, the requests)."""
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        scheduler, body = self.served.scheduler, self.body
        sampling = Sampling(temperature=body.temperature, top_p=body.top_p)
        scheduler_stops = frozenset() if body.ignore_eos else scheduler.stop_ids
        requests = []
        try:
            for p, prompt in enumerate(self.prompts):
                for i in range(body.n):
                    index = p * body.n + i
                    seed = None if body.seed is None else body.seed + i
                    on_event = (lambda kind, token, index=index:
                                loop.call_soon_threadsafe(events.put_nowait, (index, kind, token)))
                    requests.append(scheduler.submit(prompt, self.max_tokens, sampling, seed, on_event,
                                                     stop_ids=scheduler_stops))
        except QueueFull as e:
            for r in requests:
                r.cancel()
            raise APIError(429, f"the server is busy ({e}); retry shortly", code="rate_limit_exceeded",
                           headers={"Retry-After": "1"}) from e
        except ValueError as e:
            for r in requests:
                r.cancel()
            raise APIError(400, str(e), "max_tokens", "context_length_exceeded") from e
        return events, requests

    async def events(self, events: asyncio.Queue, requests: list, client: Request | None):
        """Yield (choice index, text delta, finish_reason or None) until every choice ends;
        stop early if `client` disconnects (streams learn of that from Starlette instead,
        which cancels them)."""
        texts = [ChoiceText(self.served.tok, self.served.scheduler.stop_ids, self.stops, self.with_specials)
                 for _ in requests]
        deadline = time.monotonic() + self.limits.request_timeout_s
        open_choices = set(range(len(requests)))
        try:
            while open_choices:
                if time.monotonic() > deadline:
                    for i in sorted(open_choices):
                        requests[i].cancel()
                        yield i, texts[i].flush(), "length"
                    return
                try:
                    index, kind, token = await asyncio.wait_for(events.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if client is not None and await client.is_disconnected():
                        return
                    continue
                if index not in open_choices:
                    continue
                if kind == "token":
                    delta, stopped = texts[index].feed(token)
                    if stopped:
                        requests[index].cancel()
                        open_choices.discard(index)
                        yield index, delta, "stop"
                    elif delta:
                        yield index, delta, None
                else:
                    open_choices.discard(index)
                    reason = requests[index].finish_reason
                    yield index, texts[index].flush(), "length" if reason == "cancelled" else reason
        finally:
            for r in requests:
                r.cancel()  # a no-op for finished ones; frees the slot of a client gone away
            self.usage = {"prompt_tokens": sum(map(len, self.prompts)),
                          "completion_tokens": sum(len(r.output) for r in requests)}
            self.usage["total_tokens"] = self.usage["prompt_tokens"] + self.usage["completion_tokens"]

    async def respond(self, request: Request, chat: bool):
        events, requests = self._submit()
        if self.body.stream:
            return StreamingResponse(self.stream(events, requests, chat), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        choices: dict[int, dict] = {}
        async for index, delta, finish in self.events(events, requests, request):
            choice = choices.setdefault(index, {"text": "", "finish_reason": None})
            choice["text"] += delta
            choice["finish_reason"] = finish or choice["finish_reason"]
        out = [self._choice(i, c["text"], c["finish_reason"], chat) for i, c in sorted(choices.items())]
        return {"id": self.id, "object": "chat.completion" if chat else "text_completion",
                "created": self.created, "model": self.served.name, "choices": out, "usage": self.usage}

    def _choice(self, index: int, text: str, finish: str | None, chat: bool) -> dict:
        if not chat:
            return {"index": index, "text": text, "finish_reason": finish, "logprobs": None}
        message = {"role": "assistant", "content": text}
        if self.with_specials:
            content, calls = tool_format.parse_tool_calls(text)
            if calls:
                message = {"role": "assistant", "content": content or None, "tool_calls": calls}
                finish = "tool_calls"
        return {"index": index, "message": message, "finish_reason": finish, "logprobs": None}

    async def stream(self, events: asyncio.Queue, requests: list, chat: bool):
        usage_asked = bool(self.body.stream_options and self.body.stream_options.include_usage)
        extra = {"usage": None} if usage_asked else {}
        kind = "chat.completion.chunk" if chat else "text_completion"
        chunk = lambda choices, **more: _sse({"id": self.id, "object": kind, "created": self.created,  # noqa: E731
                                              "model": self.served.name, "choices": choices, **extra, **more})
        if chat:
            for index in range(len(self.prompts) * self.body.n):
                yield chunk([{"index": index, "delta": {"role": "assistant", "content": ""},
                              "finish_reason": None, "logprobs": None}])
        buffered: dict[int, str] = {}
        async for index, delta, finish in self.events(events, requests, None):
            if self.with_specials:  # tool calls are parsed from the whole text, sent at the end
                buffered[index] = buffered.get(index, "") + delta
                if finish:
                    choice = self._choice(index, buffered[index], finish, chat)
                    yield chunk([{"index": index, "delta": choice["message"],
                                  "finish_reason": choice["finish_reason"], "logprobs": None}])
                continue
            if chat:
                body = {"index": index, "delta": {"content": delta} if delta else {},
                        "finish_reason": finish, "logprobs": None}
            else:
                body = {"index": index, "text": delta, "finish_reason": finish, "logprobs": None}
            yield chunk([body])
        if usage_asked:
            yield chunk([], usage=self.usage)
        yield "data: [DONE]\n\n"


class ChoiceText:
    """Token ids -> text increments: stop tokens hidden, output cut before a stop string.

    Text that may be the start of a stop string is held back until it is not, so a stream
    never shows part of a stop string."""

    def __init__(self, tok, stop_ids: frozenset, stops: list[str], with_specials: bool = False):
        self.decoder = tok.stream_decoder(skip_special=not with_specials)
        self.stop_ids, self.stops, self.pending = stop_ids, stops, ""

    def feed(self, token: int) -> tuple[str, bool]:
        """-> (text to show now, whether a stop string ended the choice)."""
        if token in self.stop_ids:
            return "", False
        self.pending += self.decoder.feed([token])
        hits = [at for at in (self.pending.find(s) for s in self.stops) if at >= 0]
        if hits:
            text, self.pending = self.pending[:min(hits)], ""
            return text, True
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.pending.endswith(s[:k])),
                   default=0)
        text, self.pending = self.pending[:len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return text, False

    def flush(self) -> str:
        text, self.pending = self.pending + self.decoder.flush(), ""
        return text


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _model(models: dict[str, ServedModel], name: str) -> ServedModel:
    if name not in models:
        raise APIError(404, f"The model `{name}` does not exist; see GET /v1/models.", "model",
                       "model_not_found")
    return models[name]


def _key_checker(api_keys: list[str]):
    """A dependency: 401 unless `Authorization: Bearer KEY` names one of api_keys (if any)."""
    async def check(request: Request) -> None:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if api_keys and not (scheme.lower() == "bearer" and
                             any(secrets.compare_digest(key.strip().encode(), k.encode()) for k in api_keys)):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")
    return check


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_request, e: APIError):
        return JSONResponse(error_body(str(e), param=e.param, code=e.code), e.status, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":
            reason = first.get("ctx", {}).get("error", "")
            return JSONResponse(error_body(f"the body is not valid JSON: {reason}"), 400)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        reason = first.get("msg", "invalid request")
        message = f"{where}: {reason}" if where else reason
        return JSONResponse(error_body(message, param=where or None), 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, e: StarletteHTTPException):  # e.g. a body that is not UTF-8
        return JSONResponse(error_body(str(e.detail)), e.status_code, headers=e.headers)

    @app.exception_handler(ValidationError)
    async def invalid_model(_request, e: ValidationError):
        return JSONResponse(error_body(str(e)), 400)
