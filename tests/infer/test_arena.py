"""Arena votes on disk (the preference format) and the Bradley–Terry leaderboard."""

from lmforge.data.preference import read_preferences
from lmforge.infer.arena import Arena, bradley_terry


def test_votes_append_preference_pairs_and_ties(tmp_path):
    arena = Arena(tmp_path)
    prompt = [{"role": "user", "content": "Hi"}]
    arena.vote(prompt, {"model": "x", "content": "Hello!"}, {"model": "y", "content": "Go away."}, "a")
    arena.vote(prompt, {"model": "x", "content": "Hm."}, {"model": "y", "content": "Hi there."}, "b")
    arena.vote(prompt, {"model": "x", "content": "Hey"}, {"model": "y", "content": "Hey"}, "tie")
    pairs = read_preferences(tmp_path / "pairs.jsonl")
    assert [(p.chosen["content"], p.rejected["content"]) for p in pairs] == [("Hello!", "Go away."),
                                                                          ("Hi there.", "Hm.")]
    assert arena.outcomes() == [("x", "y", 1.0), ("y", "x", 1.0), ("x", "y", 0.5)]


def test_bradley_terry_orders_models_and_intervals_cover_the_score(tmp_path):
    votes = [("strong", "weak", 1.0)] * 9 + [("weak", "strong", 1.0)] + [("mid", "weak", 1.0)] * 6 + \
        [("weak", "mid", 1.0)] * 4 + [("strong", "mid", 0.5)] * 2
    scores = bradley_terry(votes)
    assert scores["strong"] > scores["mid"] > scores["weak"]
    assert abs(sum(scores.values()) / 3 - 1000) < 1e-6
    arena = Arena(tmp_path)
    for first, second, score in votes:
        winner = "tie" if score == 0.5 else "a"
        arena.vote([{"role": "user", "content": "q"}], {"model": first, "content": "1"},
                   {"model": second, "content": "2"}, winner)
    board = arena.leaderboard(resamples=50)
    assert [row["model"] for row in board] == ["strong", "mid", "weak"]
    assert all(row["low"] <= row["score"] <= row["high"] for row in board)
