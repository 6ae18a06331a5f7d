"""Who says which of two answers is better: a gold reward function, an AI judge, or a person.

    labeller = open_labeller("reward:math")               # a verifiable reward (or reward:module:function)
    labeller = open_labeller("judge:runs/big/model")      # an AI judge (judge_url= for an endpoint)
    labeller = open_labeller("human")                     # a person at the terminal
    labeller = open_labeller("mypkg.raters:make_rater")   # any factory returning a Labeller
    labeller.label(example, a, b)    # 0: a is better, 1: b is better, None: no preference (skip)

`example` is the prompt record (`messages`, plus whatever a reward reads, e.g. `answer`). A
labeller is anything with that one method, so a web arena can plug in later without this
module knowing it. A gold reward function prefers the higher reward and skips ties (a 0/1
reward says nothing about two wrong answers); the judge asks in both orders and keeps only
a verdict that survives the swap (`eval.judge`).
"""

from __future__ import annotations

import importlib
from typing import Protocol

from lmforge.config import ConfigError
from lmforge.rewards import RewardFn, load_reward

SPECS = "reward:NAME | reward:module:function | judge:MODEL | human | module:factory"


class Labeller(Protocol):
    def label(self, example: dict, a: str, b: str) -> int | None:
        """0 when `a` is better, 1 when `b` is, None to skip the pair."""


class RewardLabeller:
    """Prefers the answer a reward function scores higher; a tie is no preference."""

    def __init__(self, reward: RewardFn):
        self.reward = reward

    def label(self, example: dict, a: str, b: str) -> int | None:
        ra, rb = self.reward(a, example), self.reward(b, example)
        return None if ra == rb else int(rb > ra)


class JudgeLabeller:
    """An LLM judge (any `synth.backend` back end), asked in both orders."""

    def __init__(self, backend, max_new_tokens: int = 16):
        self.backend, self.max_new_tokens = backend, max_new_tokens

    def label(self, example: dict, a: str, b: str) -> int | None:
        from lmforge.eval.judge import pairwise_compare

        prompt = "\n\n".join(m["content"] for m in example["messages"])
        _, (row,) = pairwise_compare([prompt], [a], [b], self.backend, self.max_new_tokens)
        return {"win": 0, "loss": 1}.get(row["outcome"])


class TerminalLabeller:
    """A person answers 1, 2 or s (skip) at the terminal."""

    def __init__(self, ask=input, show=print):
        self.ask, self.show = ask, show

    def label(self, example: dict, a: str, b: str) -> int | None:
        for m in example["messages"]:
            self.show(f"[{m['role']}] {m['content']}")
        self.show(f"\n--- answer 1 ---\n{a}\n--- answer 2 ---\n{b}")
        while True:
            reply = self.ask("better answer (1 / 2 / s to skip): ").strip().lower()
            if reply in ("1", "2", "s"):
                return None if reply == "s" else int(reply) - 1


def open_labeller(spec: str, judge_url: str = "", device: str = "cpu") -> Labeller:
    """A labeller from its spec (see SPECS); a spec that fits none is a ConfigError naming the forms."""
    kind, _, rest = spec.partition(":")
    if kind == "reward" and rest:
        try:
            return RewardLabeller(load_reward(rest))
        except (ValueError, ImportError) as e:
            raise ConfigError(f"labeller {spec!r}: {e}") from None
    if kind == "judge" and rest:
        from lmforge.synth.backend import open_backend

        return JudgeLabeller(open_backend(rest, url=judge_url, device=device))
    if spec == "human":
        return TerminalLabeller()
    if kind and rest:
        return _user_labeller(spec, kind, rest)
    raise ConfigError(f"unknown labeller {spec!r}: use {SPECS}")


def _user_labeller(spec: str, module_name: str, attr: str) -> Labeller:
    try:
        factory = getattr(importlib.import_module(module_name), attr, None)
    except ImportError as e:
        raise ConfigError(f"unknown labeller {spec!r} ({e}): use {SPECS}") from None
    if not callable(factory):
        raise ConfigError(f"labeller {spec!r}: {module_name} has no callable {attr!r}")
    labeller = factory()
    if not callable(getattr(labeller, "label", None)):
        raise ConfigError(f"labeller {spec!r}: {attr}() must return an object with label(example, a, b)")
    return labeller
