"""The arena's votes on disk, and a Bradley–Terry leaderboard from them.

    arena = Arena("runs/arena")
    arena.vote(messages, a={"model": "sft", "content": "..."}, b={...}, winner="a")
    arena.leaderboard()          # [{"model", "score", "low", "high", "votes"}, ...]

`pairs.jsonl` gets one preference record per decisive vote, in the format `lmforge dpo`
and `lmforge rm` read (`{"messages", "chosen", "rejected"}`, plus which model said what);
`ties.jsonl` gets the ties, which a pair loss cannot use but the leaderboard counts as half
a win each. Files are only appended to, each line flushed and fsynced before the vote is
acknowledged, so an acknowledged vote survives a crash.

Scores are Bradley–Terry strengths (Chatbot Arena's Elo-like scale: 400·log10 odds, the
mean at 1000), fitted by Zermelo's iteration; the interval is the 2.5–97.5 percentile over
bootstrap resamples of the votes, as LMSYS report theirs.
"""

from __future__ import annotations

import json
import math
import os
import random
import threading
from pathlib import Path

WINNERS = ("a", "b", "tie")


class Arena:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pairs, self.ties = self.dir / "pairs.jsonl", self.dir / "ties.jsonl"
        self._lock = threading.Lock()
        for path in (self.pairs, self.ties):
            _drop_torn_tail(path)

    def vote(self, messages: list[dict], a: dict, b: dict, winner: str) -> dict:
        """Append one vote; return the record written."""
        if winner not in WINNERS:
            raise ValueError(f"winner must be one of {WINNERS}, got {winner!r}")
        if winner == "tie":
            record, path = {"messages": messages, "a": a, "b": b, "winner": "tie"}, self.ties
        else:
            chosen, rejected = (a, b) if winner == "a" else (b, a)
            record = {"messages": messages, "chosen": chosen["content"], "rejected": rejected["content"],
                      "chosen_model": chosen["model"], "rejected_model": rejected["model"]}
            path = self.pairs
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, open(path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return record

    def outcomes(self) -> list[tuple[str, str, float]]:
        """(model, model, score of the first: 1 win, 0.5 tie) for every vote so far."""
        out = []
        for record in _read(self.pairs):
            out.append((record["chosen_model"], record["rejected_model"], 1.0))
        for record in _read(self.ties):
            out.append((record["a"]["model"], record["b"]["model"], 0.5))
        return out

    def leaderboard(self, resamples: int = 200, seed: int = 0) -> list[dict]:
        votes = self.outcomes()
        scores = bradley_terry(votes)
        rng = random.Random(seed)
        samples = [bradley_terry([rng.choice(votes) for _ in votes]) for _ in range(resamples)] if votes else []
        counts: dict[str, int] = {}
        for first, second, _ in votes:
            counts[first] = counts.get(first, 0) + 1
            counts[second] = counts.get(second, 0) + 1
        rows = []
        for model, score in sorted(scores.items(), key=lambda kv: -kv[1]):
            spread = sorted(s.get(model, score) for s in samples) or [score]
            rows.append({"model": model, "score": round(score, 1), "votes": counts[model],
                         "low": round(spread[int(0.025 * (len(spread) - 1))], 1),
                         "high": round(spread[int(0.975 * (len(spread) - 1))], 1)})
        return rows


def bradley_terry(votes: list[tuple[str, str, float]], iterations: int = 200,
                  prior: float = 0.5) -> dict[str, float]:
    """Strengths p_i maximising the likelihood of the votes (P(i beats j) = p_i / (p_i + p_j)),
    by Zermelo's fixed point p_i <- wins_i / sum_j n_ij / (p_i + p_j). `prior` adds that many
    virtual ties against every other model, so a model that never lost stays finite."""
    models = sorted({m for first, second, _ in votes for m in (first, second)})
    if not models:
        return {}
    wins = {m: 0.0 for m in models}
    games: dict[tuple[str, str], float] = {}
    for first, second, score in votes:
        wins[first] += score
        wins[second] += 1 - score
        for key in ((first, second), (second, first)):
            games[key] = games.get(key, 0.0) + 1
    for i in models:
        for j in models:
            if i != j:
                wins[i] += prior / 2
                games[(i, j)] = games.get((i, j), 0.0) + prior
    strength = {m: 1.0 for m in models}
    for _ in range(iterations):
        played = {i: sum(n / (strength[i] + strength[j]) for (a, j), n in games.items() if a == i)
                  for i in models}
        new = {i: wins[i] / max(played[i], 1e-12) for i in models}
        mean_log = sum(math.log(max(v, 1e-12)) for v in new.values()) / len(new)
        strength = {m: v / math.exp(mean_log) for m, v in new.items()}
    return {m: 1000 + 400 * math.log10(max(s, 1e-12)) for m, s in strength.items()}


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line that a crash left half-written. It was never acknowledged (a vote is
    acknowledged after its whole line is fsynced), and the next vote appended to it would
    be glued onto it and lost, and `lmforge dpo` would stop at the broken line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    print(f"arena: {path}: dropped a half-written last line ({len(data) - keep} bytes, never acknowledged)")


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a crash mid-write: the votes before it stand
    return records
