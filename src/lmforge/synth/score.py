"""Ways to score an answer, shared by `data best-of-n` and `data select`: verifiable rewards,
a reward model, and a judge that picks one answer of several.

    verifiers = load_verifiers(["math"])                  # name -> fn(answer, record) -> float
    scores = RewardModelScorer("runs/rm/model").score(conversations)   # one float each
    best = judge_knockout(prompt_texts, candidates, judge_backend)     # index per prompt
"""

from __future__ import annotations

import torch

from lmforge.errors import InputError
from lmforge.eval.judge import pairwise_compare


def load_verifiers(specs: list[str]) -> dict:
    from lmforge.rewards import load_reward

    try:
        return {s: _naming_missing_fields(s, load_reward(s)) for s in specs}
    except (ValueError, ImportError) as e:
        raise InputError(f"--verifier: {e}") from None


def _naming_missing_fields(name: str, verifier):
    """A verifier reads fields of the prompt record (math: "answer"); a record without one is
    the input's fault, said as such rather than as a KeyError from inside the verifier."""
    def verify(answer: str, record: dict):
        try:
            return verifier(answer, record)
        except KeyError as e:
            prompt = str(record.get("prompt", record.get("question", "")))[:60]
            raise InputError(f"--verifier {name} needs the field {e.args[0]!r} in every prompt record; "
                             f"the record of {prompt!r} has {sorted(record)}") from None
    return verify


class RewardModelScorer:
    """A reward model directory (`lmforge rm` output or transformers' *ForSequenceClassification
    with its tokenizer): the mean over its heads at each conversation's last token."""

    def __init__(self, path: str, device: str = "cpu", batch_size: int = 16, max_len: int = 1024):
        from lmforge.model.reward import is_reward_model, load_reward_model
        from lmforge.tokenizer import Tokenizer

        if not is_reward_model(path):
            raise InputError("not a reward model directory (config.json names no *ForSequenceClassification)",
                             path)
        self.rm = load_reward_model(path, device).eval()
        self.tok = Tokenizer.from_dir(path)
        self.batch_size, self.device = batch_size, device
        self.max_len = min(max_len, self.rm.config.max_position_embeddings)

    @torch.no_grad()
    def score(self, conversations: list[list[dict]]) -> list[float]:
        from lmforge.tokenizer.chat import render_with_mask

        # a long conversation loses its start, never the end the score is read at
        ids = [render_with_mask(self.tok, c)[0][-self.max_len:] for c in conversations]
        scores = []
        for start in range(0, len(ids), self.batch_size):
            rows = ids[start:start + self.batch_size]
            batch = torch.full((len(rows), max(map(len, rows))), self.rm.pad_id, dtype=torch.long)
            for i, row in enumerate(rows):  # right padding: the score is read at the last real token
                batch[i, :len(row)] = torch.tensor(row)
            scores += self.rm(batch.to(self.device)).mean(-1).tolist()
        return scores


def judge_knockout(prompts: list[str], candidates: list[list[str]], judge, template: str = "",
                   max_new_tokens: int = 16) -> list[int]:
    """The index of each prompt's best candidate: the incumbent meets each challenger in turn,
    both orders asked (eval.judge); only a verdict that survives the swap unseats it."""
    best = [0] * len(prompts)
    for challenger in range(1, max(map(len, candidates), default=0)):
        live = [i for i, c in enumerate(candidates) if challenger < len(c)]
        _, rows = pairwise_compare([prompts[i] for i in live], [candidates[i][best[i]] for i in live],
                                   [candidates[i][challenger] for i in live], judge, max_new_tokens, template)
        for i, row in zip(live, rows):
            if row["outcome"] == "loss":
                best[i] = challenger
    return best
