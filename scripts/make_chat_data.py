"""Build the bundled chat set data/chat/train.jsonl (OpenAI `messages` format).

    python scripts/make_chat_data.py                       # fetches chatterbot-corpus with pip
    python scripts/make_chat_data.py --chatterbot DIR      # an unpacked chatterbot_corpus/data

Two sources, both permissive:
- chatterbot-corpus 1.3.3 (BSD-3-Clause; `pip download --no-deps chatterbot-corpus==1.3.3`):
  English and Chinese dialogue lists, turned into user/assistant turns;
- arithmetic generated here, seeded, operands 0-20 (0-10 for ×): "What is 3 + 4?" ->
  "3 + 4 = 7.", the answer format GRPO's verifier reads; only train-split questions;
- number comparison generated here: "Which is larger, 37 or 52?" -> "The larger is 52."
  (the GRPO demo's task), train-split questions only.
About a fifth of the conversations get a system prompt, some arithmetic ones two turns, so
masks for system prompts and multi-turn chats are exercised by the demo itself.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

from lmforge.rewards.tasks import arithmetic_key, comparison_key, in_split

SYSTEM_PROMPTS = ["You are a helpful assistant.", "You are a friendly assistant. Answer briefly.",
                  "You are lmforge's demo model."]
QUESTION_FORMS = ["What is {a} {op} {b}?", "what is {a} {op} {b}", "Compute {a} {op} {b}.",
                  "How much is {a} {op} {b}?", "{a} {op} {b} = ?", "Calculate {a} {op} {b}, please."]


def arithmetic_pair(rng: random.Random) -> tuple[str, str]:
    """A question from the *train* split of lmforge.rewards.tasks (decided by the problem's
    canonical key, so "4 + 3" is excluded when "3 + 4" is held out): GRPO's held-out dev and
    test problems never appear in SFT, in any wording."""
    while True:
        op = rng.choice("+-*")
        high = 10 if op == "*" else 20
        a, b = rng.randint(0, high), rng.randint(0, high)
        shown = {"*": "×"}.get(op, op)
        if in_split(arithmetic_key(a, op, b), "train"):
            break
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    question = rng.choice(QUESTION_FORMS).format(a=a, op=shown, b=b)
    return question, f"{a} {shown} {b} = {value}."


COMPARE_FORMS = ["Which is larger, {a} or {b}?", "which is larger, {a} or {b}",
                 "Which number is larger: {a} or {b}?", "Which is bigger, {a} or {b}?"]


def comparison_pair(rng: random.Random) -> tuple[str, str]:
    """"Which is larger, a or b?" from the train split (the GRPO demo's task)."""
    while True:
        a, b = rng.sample(range(100), 2)
        if in_split(comparison_key(a, b), "train"):
            break
    return rng.choice(COMPARE_FORMS).format(a=a, b=b), f"The larger is {max(a, b)}."


def chatterbot_conversations(data_dir: Path, languages=("english", "chinese")) -> list[list[dict]]:
    conversations = []
    for language in languages:
        for path in sorted((data_dir / language).glob("*.yml")):
            for turns in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations", []):
                turns = [str(t).strip() for t in turns if str(t).strip()]
                # Dialogue lists alternate speakers; keep complete user/assistant pairs.
                pairs = len(turns) // 2
                if pairs:
                    conversations.append([{"role": "user" if k % 2 == 0 else "assistant",
                                           "content": t} for k, t in enumerate(turns[:2 * pairs])])
    return conversations


def fetch_chatterbot(tmp: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp),
                    "chatterbot-corpus==1.3.3"], check=True)
    wheel = next(tmp.glob("chatterbot_corpus-*.whl"))
    zipfile.ZipFile(wheel).extractall(tmp)
    return tmp / "chatterbot_corpus" / "data"


def build(data_dir: Path, n_arithmetic: int, n_compare: int, seed: int) -> list[list[dict]]:
    rng = random.Random(seed)
    conversations = chatterbot_conversations(data_dir)
    for make, count in ((arithmetic_pair, n_arithmetic), (comparison_pair, n_compare)):
        for _ in range(count):
            turns = []
            for _ in range(2 if rng.random() < 0.15 else 1):
                q, a = make(rng)
                turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            conversations.append(turns)
    for conv in conversations:
        if rng.random() < 0.2:
            conv.insert(0, {"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    rng.shuffle(conversations)
    return conversations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chatterbot", type=Path, help="unpacked chatterbot_corpus/data directory")
    parser.add_argument("--arithmetic", type=int, default=3000, help="arithmetic conversations")
    parser.add_argument("--compare", type=int, default=2000, help="which-is-larger conversations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("data/chat/train.jsonl"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.chatterbot or fetch_chatterbot(Path(tmp))
        conversations = build(data_dir, args.arithmetic, args.compare, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        for conv in conversations:
            f.write(json.dumps({"messages": conv}, ensure_ascii=False) + "\n")
    print(f"{len(conversations)} conversations -> {args.out}")


if __name__ == "__main__":
    main()
