"""Token shift (URIAL, Lin et al. 2023): how many of an aligned model's tokens would its base
model have chosen anyway?

    result = token_shift(base, aligned, tok, prompts)   # shares, by position, top shifted tokens

The aligned model answers each prompt greedily. At every position of its answer the base
model, given the very same prefix, ranks the token the aligned model chose: rank 0 is
*unshifted* (the base's own greedy choice), rank 1-2 *marginal*, anything else *shifted*.
URIAL found most tokens unshifted and the shifted ones mostly stylistic (discourse
markers, safety phrases): alignment changes how a model speaks more than what it knows.
Both models must share a tokenizer (the ranks compare ids).
"""

from __future__ import annotations

from collections import Counter

import torch

from lmforge.infer.engine import Sampling, generate
from lmforge.stages.common import stop_ids
from lmforge.tokenizer.chat import render_prompt

CLASSES = ("unshifted", "marginal", "shifted")


def shift_class(rank: int) -> str:
    return "unshifted" if rank == 0 else "marginal" if rank <= 2 else "shifted"


@torch.no_grad()
def base_ranks(base, sequences: list[list[int]], starts: list[int], batch_size: int = 16) -> list[list[int]]:
    """For each sequence, the base model's rank of every token from `starts[i]` on, given the
    tokens before it (0 = the base's argmax). One right-padded forward pass per batch."""
    device = next(base.parameters()).device
    ranks = []
    for s in range(0, len(sequences), batch_size):
        chunk = sequences[s:s + batch_size]
        width = max(len(x) for x in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long, device=device)
        for i, x in enumerate(chunk):
            ids[i, :len(x)] = torch.tensor(x, device=device)
        logits = base(ids).float()  # (B, T, V); padding sits after each sequence, causal: unseen
        for i, x in enumerate(chunk):
            start = starts[s + i]
            scores = logits[i, start - 1:len(x) - 1]  # position t-1 predicts token t
            chosen = scores.gather(-1, ids[i, start:len(x), None])
            ranks.append((scores > chosen).sum(-1).tolist())
    return ranks


def token_shift(base, aligned, tok, prompts: list[str], max_new_tokens: int = 128,
                batch_size: int = 16, position_buckets: int = 8) -> tuple[dict, list[dict]]:
    rendered = [render_prompt(tok, [{"role": "user", "content": p}]) for p in prompts]
    stops = set(stop_ids(tok))
    answers = []
    for s in range(0, len(rendered), batch_size):
        out = generate(aligned.eval(), rendered[s:s + batch_size], max_new_tokens, Sampling(temperature=0.0),
                       stop_ids=stops, pad_id=tok.pad_id or 0)
        answers += [[t for t in row if t not in stops] for row in out.tokens]
    ranks = base_ranks(base.eval(), [r + a for r, a in zip(rendered, answers)], [len(r) for r in rendered],
                       batch_size)
    rows, counts, shifted_tokens = [], Counter(), Counter()
    by_position: dict[int, Counter] = {}
    longest = max((len(a) for a in answers), default=1)
    for prompt, answer, rank in zip(prompts, answers, ranks):
        for t, (token, r) in enumerate(zip(answer, rank)):
            cls = shift_class(r)
            counts[cls] += 1
            by_position.setdefault(min(position_buckets - 1, t * position_buckets // max(1, longest)),
                                   Counter())[cls] += 1
            if cls == "shifted":
                shifted_tokens[tok.decode([token])] += 1
        rows.append({"prompt": prompt, "answer": tok.decode(answer), "tokens": [tok.decode([t]) for t in answer],
                     "base_ranks": rank})
    total = sum(counts.values())
    summary = {"tokens": total, "answers": len(prompts),
               **{f"{c}_share": counts[c] / total if total else float("nan") for c in CLASSES},
               "by_position": [{c: n[c] / max(1, sum(n.values())) for c in CLASSES}
                               for _, n in sorted(by_position.items())],
               "top_shifted_tokens": shifted_tokens.most_common(20)}
    return summary, rows


def plot_by_position(summary: dict):
    """A report plot: the share of each class along the answer (stacked bars)."""
    def draw(ax):
        buckets = summary["by_position"]
        bottom = [0.0] * len(buckets)
        for cls, color in zip(CLASSES, ("#4c72b0", "#dd8452", "#c44e52")):
            heights = [b[cls] for b in buckets]
            ax.bar(range(len(buckets)), heights, bottom=bottom, label=cls, color=color)
            bottom = [x + h for x, h in zip(bottom, heights)]
        ax.set_xlabel("position in the answer (fraction of the longest answer, in buckets)")
        ax.set_ylabel("share of tokens")
        ax.legend()

    return draw
