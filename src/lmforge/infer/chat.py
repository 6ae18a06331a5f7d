"""A chat session: history + template rendering + streamed generation until end of turn.

    session = ChatSession(model, tok, system="You are brief.", sampling=Sampling(0.7, top_p=0.9))
    reply = session.send("What is 3 + 4?", on_text=lambda s: print(s, end=""))
    session.reset()

Prompts are rendered by the tokenizer's chat template (`render_prompt`), so ours, ChatML
and other formats work alike; generation stops at any stop token (end of turn / text),
and the stop token is never shown.
"""

from __future__ import annotations

from typing import Callable

import torch

from lmforge.infer.engine import Sampling, generate
from lmforge.stages.common import stop_ids
from lmforge.tokenizer.chat import render_prompt


class ChatSession:
    def __init__(self, model, tok, system: str = "", sampling: Sampling | None = None,
                 max_new_tokens: int = 256, seed: int | None = None):
        self.model, self.tok, self.system = model.eval(), tok, system
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
        """Add a user turn, generate the assistant's reply (streamed to on_text), return it."""
        self.history.append({"role": "user", "content": text})
        prompt = render_prompt(self.tok, self.messages())
        stream = self.tok.stream_decoder(skip_special=True)

        def on_token(_row: int, token: int) -> None:
            if on_text is not None and token not in self.stop:
                on_text(stream.feed([token]))

        tokens = generate(self.model, [prompt], self.max_new_tokens, self.sampling,
                          stop_ids=self.stop, pad_id=self.tok.pad_id or 0, on_token=on_token,
                          generator=self.generator).tokens[0]
        if on_text is not None:
            on_text(stream.flush())
        reply = self.tok.decode([t for t in tokens if t not in self.stop], skip_special=True)
        self.history.append({"role": "assistant", "content": reply})
        return reply


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
