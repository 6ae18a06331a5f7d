"""`lmforge data select`: longest-k, reward-model top-k and a seeded random-k, after MinHash
near-duplicate removal; kept conversations keep their input order."""

import json

import torch

from lmforge.cli import main
from lmforge.data.chat import read_conversations
from lmforge.model.reward import RewardModel, save_reward_model
from lmforge.model.transformer import Transformer
from lmforge.synth.score import RewardModelScorer
from lmforge.tokenizer import Tokenizer
from tests.conftest import tiny_config

TOPICS = ["the moon", "rivers", "bread", "chess", "volcanoes", "bees"]


def chat_file(tmp_path):
    """Six conversations with answers of growing length; the fourth has a near-copy appended."""
    records = [{"messages": [{"role": "user", "content": f"Tell me about {t}."},
                             {"role": "assistant", "content": f"Here is what I know about {t}: " +
                              " ".join(f"fact {t} number {j} is interesting" for j in range(i + 1))}]}
               for i, t in enumerate(TOPICS)]
    near = json.loads(json.dumps(records[3]))
    near["messages"][1]["content"] += " Indeed."  # one word more: a near duplicate, and longer
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*records, near]))
    return path


def select(tmp_path, *args):
    out = tmp_path / "selected.jsonl"
    assert main(["data", "select", "--data", str(chat_file(tmp_path)), "--output", str(out), *map(str, args)]) == 0
    return [c[0]["content"] for c in read_conversations(out)], json.loads((tmp_path / "selected.jsonl.manifest.json")
                                                                         .read_text())


def test_longest_k_after_near_duplicate_removal(tmp_path):
    kept, manifest = select(tmp_path, "--method", "longest", "--k", 3)
    assert kept == [f"Tell me about {t}." for t in ("chess", "volcanoes", "bees")]  # input order
    assert manifest["counts"] == {"read": 7, "rows": 3, "dropped": {"near_duplicate": 1, "not_selected": 3}}
    assert list(manifest["inputs"]) == [str(tmp_path / "chat.jsonl")] and manifest["status"] == "complete"
    kept, _ = select(tmp_path, "--method", "longest", "--k", 3, "--dedup", "false")
    assert kept == [f"Tell me about {t}." for t in ("volcanoes", "bees", "chess")]  # the longer near copy is in


def test_random_k_is_seeded(tmp_path):
    first, _ = select(tmp_path, "--method", "random", "--k", 3, "--seed", 4)
    again, _ = select(tmp_path, "--method", "random", "--k", 3, "--seed", 4)
    other, _ = select(tmp_path, "--method", "random", "--k", 3, "--seed", 5)
    assert first == again and len(first) == 3 and len(set(first)) == 3
    assert other != first  # (for these two seeds)


def test_reward_model_top_k(chat_model_dir, tmp_path):
    torch.manual_seed(2)
    tok = Tokenizer.from_dir(chat_model_dir)
    rm_dir = tmp_path / "rm"
    save_reward_model(RewardModel(Transformer(tiny_config(vocab_size=512)), pad_id=tok.pad_id or 0), rm_dir, tok)
    kept, manifest = select(tmp_path, "--method", "reward", "--reward_model", rm_dir, "--k", 2)
    conversations = read_conversations(tmp_path / "chat.jsonl")[:6]  # the near copy goes in dedup
    scores = RewardModelScorer(str(rm_dir)).score(conversations)
    top = sorted(sorted(range(6), key=lambda i: -scores[i])[:2])
    assert kept == [conversations[i][0]["content"] for i in top]
    assert manifest["generators"] == {"reward_model": str(rm_dir)}
