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


_VOTER = """
import sys
from lmforge.infer.arena import Arena
arena, start = Arena(sys.argv[1]), int(sys.argv[2])
for i in range(start, start + 10_000):
    # Long answers: each line takes many write calls, so a kill can land inside one.
    arena.vote([{"role": "user", "content": f"q{i}"}], {"model": "x", "content": f"{i} " + "a" * 300_000},
               {"model": "y", "content": f"{i} " + "b" * 300_000}, "a")
    print(i, flush=True)  # acknowledged: the line is on disk
"""


def test_votes_survive_kill_9_mid_write_and_voting_resumes(tmp_path):
    """A voter killed at random points (mid-line, often) loses no acknowledged vote, and the
    next process appends cleanly after the torn line instead of gluing a vote onto it."""
    import random
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "voter.py"
    script.write_text(_VOTER)
    acknowledged, rng = [], random.Random(0)
    for start in range(0, 40_000, 10_000):  # each process its own vote ids
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "arena"), str(start)],
                                stdout=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # it is voting
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        rest = proc.communicate()[0]
        acknowledged += [int(x) for x in (first + rest).splitlines() if x.isdigit()]
    Arena(tmp_path / "arena")  # a restarted server cuts a torn last line
    pairs = read_preferences(tmp_path / "arena" / "pairs.jsonl")  # every line parses
    on_disk = [int(p.chosen["content"].split()[0]) for p in pairs]
    assert set(acknowledged) <= set(on_disk) and len(on_disk) == len(set(on_disk))


def test_a_torn_last_line_is_cut_before_the_next_vote(tmp_path, capsys):
    arena = Arena(tmp_path)
    prompt = [{"role": "user", "content": "Hi"}]
    arena.vote(prompt, {"model": "x", "content": "Hello!"}, {"model": "y", "content": "Go."}, "a")
    with open(tmp_path / "pairs.jsonl", "a") as f:
        f.write('{"messages": [{"role": "user", "content": "cut he')  # a crash mid-write
    arena = Arena(tmp_path)
    assert "dropped a half-written last line" in capsys.readouterr().out
    arena.vote(prompt, {"model": "x", "content": "Hey"}, {"model": "y", "content": "No."}, "a")
    assert [p.chosen["content"] for p in read_preferences(tmp_path / "pairs.jsonl")] == ["Hello!", "Hey"]
