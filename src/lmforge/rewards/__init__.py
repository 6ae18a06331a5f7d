"""Reward functions for online RL: `fn(completion: str, example: dict) -> float`.

    fns = load_rewards(["math", "think_format", "mypkg.rewards:brevity"])

`example` is the prompt record the completion answers (its "answer" field for verifiable
tasks). Built-ins are named in REWARDS; anything else is "module:function", imported as is,
so a user's reward needs no registration.
"""

from __future__ import annotations

import importlib
from typing import Callable

from lmforge.rewards.format import answer_tag_reward, think_format_reward
from lmforge.rewards.math import grounded_answer_reward, math_reward

RewardFn = Callable[[str, dict], float]

REWARDS: dict[str, RewardFn] = {
    "math": math_reward,
    "think_format": think_format_reward,
    "answer_tag": answer_tag_reward,
    "grounded_answer": grounded_answer_reward,
}


def load_reward(spec: str) -> RewardFn:
    """A built-in name, or "module.path:function"."""
    if spec in REWARDS:
        return REWARDS[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise ValueError(f"unknown reward {spec!r}: use one of {sorted(REWARDS)} or 'module:function'")
    fn = getattr(importlib.import_module(module_name), attr, None)
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: {module_name} has no callable {attr!r}")
    return fn


def load_rewards(specs: list[str]) -> list[RewardFn]:
    return [load_reward(s) for s in specs]
