"""Which two of a prompt's sampled answers to show a labeller, given an ensemble reward model.

    scores = rm(answer_ids)                         # (N answers, k heads): one row per answer
    i, j = double_thompson(scores, generator)       # or random_pair, max_spread
    select = SELECTORS["double_ts"]                 # by name, as `lmforge label --selector` takes it

An ensemble's heads stand in for samples from the posterior over reward functions
(Dwaracherla et al. 2024, "Efficient Exploration for LLMs", §4: an ensemble or epinet on a
fixed trunk). Double Thompson sampling draws one head and takes its best answer, then draws
heads again until one's best answer is a different one: each side of the pair is an answer
that is best under some plausible reward, so labels go where they decide which answer is
best, not to pairs every head already orders the same way. When every draw agrees (the
heads are confident about the best answer), the second answer is the best *other* answer
under the last draw. Random pairs and the pair of maximal disagreement ("infomax": the
largest variance over heads of P(i preferred to j)) are the baselines the paper compares
against.
"""

from __future__ import annotations

from typing import Callable

import torch

Selector = Callable[[torch.Tensor, torch.Generator], tuple[int, int]]


def double_thompson(scores: torch.Tensor, generator: torch.Generator, max_draws: int = 8) -> tuple[int, int]:
    """(N, heads) scores -> (i, j), i != j: each the argmax under a randomly drawn head;
    up to `max_draws` draws for a j that differs from i."""
    _check(scores)
    draw = lambda: int(torch.randint(scores.shape[1], (1,), generator=generator))  # noqa: E731
    first = int(scores[:, draw()].argmax())
    for _ in range(max_draws):
        head = draw()
        second = int(scores[:, head].argmax())
        if second != first:
            return first, second
    others = scores[:, head].clone()
    others[first] = float("-inf")
    return first, int(others.argmax())


def random_pair(scores: torch.Tensor, generator: torch.Generator) -> tuple[int, int]:
    """Two distinct answers uniformly at random (the scores only give N)."""
    _check(scores)
    i, j = torch.randperm(scores.shape[0], generator=generator)[:2].tolist()
    return i, j


def max_spread(scores: torch.Tensor, generator: torch.Generator) -> tuple[int, int]:
    """The pair whose preference the heads disagree on most: max over i < j of the variance
    over heads of σ(s_i - s_j) (ties broken by the lower index; `generator` is unused)."""
    _check(scores)
    if scores.shape[1] < 2:
        raise ValueError("max_spread needs an ensemble (reward model heads >= 2)")
    variance = torch.sigmoid(scores[:, None, :] - scores[None, :, :]).var(-1)  # (N, N)
    variance = variance.triu(diagonal=1) - torch.ones_like(variance).tril()  # only i < j
    flat = int(variance.argmax())
    return divmod(flat, scores.shape[0])


def _check(scores: torch.Tensor) -> None:
    if scores.dim() != 2 or scores.shape[0] < 2:
        raise ValueError(f"need scores of shape (answers >= 2, heads), got {tuple(scores.shape)}")


SELECTORS: dict[str, Selector] = {"double_ts": double_thompson, "random": random_pair, "max_spread": max_spread}
