"""A chat session: history + template rendering + streamed generation until end of turn.

    session = ChatSession(model, tok, system="You are brief.", sampling=Sampling(0.7, top_p=0.9))
    reply = session.send("What is 3 + 4?", on_text=lambda s: print(s, end=""))
    session.reset()
    session = ChatSession(model, tok, tools=["calculator"])  # the model may call the calculator

Prompts are rendered by the tokenizer's chat template (`render_prompt`), so ours, ChatML
and other formats work alike; generation stops at any stop token (end of turn / text),
and the stop token is never shown.
"""

from __future__ import annotations

from typing import Callable

import torch

from lmforge.infer.engine import Sampling, generate
from lmforge.infer.tools import BUILTIN_TOOLS, parse_tool_calls, run_builtin, to_template_messages
from lmforge.stages.common import stop_ids
from lmforge.tokenizer.chat import render_prompt


MAX_TOOL_ROUNDS = 4  # tool turns per user message before the session stops calling tools


class ChatSession:
    def __init__(self, model, tok, system: str = "", sampling: Sampling | None = None,
                 max_new_tokens: int = 256, seed: int | None = None, tools: list[str] = ()):
        self.model, self.tok, self.system = model.eval(), tok, system
        self.tools = list(tools)  # built-in tools (infer/tools.py) the model may call
        self.sampling = sampling or Sampling(temperature=0.7, top_p=0.9)
        self.max_new_tokens = max_new_tokens
        self.stop = set(stop_ids(tok))
        self.generator = torch.Generator(device=next(model.parameters()).device)
        if seed is not None:
            self.generator.manual_seed(seed)
        self.history: list[dict] = []

    def messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def reset(self) -> None:
        self.history = []

    def send(self, text: str, on_text: Callable[[str], None] | None = None) -> str:
        """Add a user turn, generate the assistant's reply (streamed to on_text), return it.
        With tools, each built-in tool the reply calls is run and its result fed back (shown
        as `[name(arguments) -> result]`) until the model answers."""
        self.history.append({"role": "user", "content": text})
        for _ in range(MAX_TOOL_ROUNDS):
            reply = self._generate(on_text)
            content, calls = parse_tool_calls(reply) if self.tools else (reply, [])
            if not calls:
                break
            self.history.append({"role": "assistant", "content": content, "tool_calls": calls})
            for call in calls:
                name, arguments = call["function"]["name"], call["function"]["arguments"]
                result = run_builtin(name, arguments) if name in self.tools else f"error: no tool {name!r}"
                if on_text is not None:
                    on_text(f"\n[{name}({arguments}) -> {result.strip()}]\n")
                self.history.append({"role": "tool", "tool_call_id": call["id"], "content": result})
        else:
            reply = self._generate(on_text)
        self.history.append({"role": "assistant", "content": reply})
        return reply

    def _generate(self, on_text: Callable[[str], None] | None) -> str:
        """One assistant turn from the history (tool tokens kept in the text when tools are on)."""
        messages = self.messages()
        if self.tools:
            messages = to_template_messages(messages, [BUILTIN_TOOLS[t] for t in self.tools], self.tok)
        prompt = render_prompt(self.tok, messages)
        skip_special = not self.tools
        stream = self.tok.stream_decoder(skip_special=skip_special)

        def on_token(_row: int, token: int) -> None:
            if on_text is not None and token not in self.stop:
                on_text(stream.feed([token]))

        tokens = generate(self.model, [prompt], self.max_new_tokens, self.sampling,
                          stop_ids=self.stop, pad_id=self.tok.pad_id or 0, on_token=on_token,
                          generator=self.generator).tokens[0]
        if on_text is not None:
            on_text(stream.flush())
        return self.tok.decode([t for t in tokens if t not in self.stop], skip_special=skip_special)


def run_repl(session: ChatSession, read: Callable[[str], str] = input,
             write: Callable[[str], None] = lambda s: print(s, end="", flush=True)) -> None:
    """Interactive loop: /reset clears history, /system TEXT sets the system prompt, /quit."""
    write("Chat: /reset clears the history, /system TEXT sets the system prompt, /quit ends.\n")
    while True:
        try:
            line = read("> ").strip()
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return
        if not line:
            continue
        if line in ("/quit", "/exit"):
            return
        if line == "/reset":
            session.reset()
            write("(history cleared)\n")
            continue
        if line.startswith("/system"):
            session.system = line[len("/system"):].strip()
            session.reset()
            write("(system prompt set; history cleared)\n")
            continue
        session.send(line, on_text=write)
        write("\n")
