"""Label efficiency of `lmforge label`'s pair selectors: reward-model quality against the
number of labels, for double Thompson sampling, random pairs and max spread, over seeds.

    python bench/label_efficiency.py                       # a few minutes on 2 CPU cores
    python bench/label_efficiency.py --seeds 0 1 2 --max_labels 120
    python bench/label_efficiency.py --label_noise 0.3 --out bench/label_efficiency_noisy

The setting, chosen to be honest and small enough for a CPU:
- Answers: a tiny random transformer (the test suite's shape, width 64) samples `--answers`
  answers at temperature 1 to each of `--prompts` arithmetic questions (babble, but real
  sampled text); each answer is rendered with its prompt through the chat template.
- The reward model is `lmforge label`'s default: an ensemble of `--heads` score heads on a
  frozen trunk (the same tiny transformer). With the trunk frozen a head only ever sees the
  trunk's last-token hidden state, so those are computed once and the heads are refit on
  them directly with `lmforge rm`'s objective (`reward_objective`: Bradley–Terry, a bootstrap
  mask per head), warm-started, every `--refit_every` labels, as the stage does.
- The labeller is a gold reward function standing in for people, as Dwaracherla et al. 2024
  simulate raters with a reward model: a fixed random linear reward on the same features
  (drawn once, seed 12345). It prefers the answer with the higher gold reward
  (`RewardLabeller` semantics), or with `--label_noise T` draws its verdict Bradley–Terry
  style at temperature T × the gold reward's spread (a noisy rater). The reward model can
  represent the gold reward exactly, so what differs between selectors is only which pairs
  get labelled.
- Each label uses a fresh training prompt (one pair per prompt, as the stage); evaluation is
  on `--test_prompts` other prompts, every pair of their answers.

Metrics on held-out prompts, by the ensemble mean: `pair_accuracy` (all pairs of answers,
ordered as the gold reward orders them), `top_pair_accuracy` (the gold-best answer ranked
above the gold-second-best: what a best-of-N policy or RLHF against the reward model needs),
and `best_of_n` (gold reward of the answer the reward model ranks first, 0 = a random
answer, 1 = the gold-best); and, to explain them, `label_gap`: the mean gold-reward gap of the
pairs labelled so far, in units of the gold reward's standard deviation (a close pair is
the one a noisy rater gets wrong most often). Mean ± standard error over seeds (the seed draws the heads'
prior, the prompt order and the selectors' randomness). Writes bench/label_efficiency.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Meta  # noqa: E402

from lmforge.data.preference import render_response  # noqa: E402
from lmforge.eval.accuracy import complete, mean, stderr  # noqa: E402
from lmforge.infer.engine import Sampling  # noqa: E402
from lmforge.model.reward import last_token_index  # noqa: E402
from lmforge.model.transformer import ModelConfig, Transformer  # noqa: E402
from lmforge.rewards.tasks import arithmetic_problems  # noqa: E402
from lmforge.stages.common import stop_ids  # noqa: E402
from lmforge.tokenizer import Tokenizer, train_bpe  # noqa: E402
from lmforge.tokenizer.chat import render_prompt  # noqa: E402
from lmforge.train.objectives.reward import bootstrap_masks, reward_objective  # noqa: E402
from lmforge.train.pair_selection import SELECTORS  # noqa: E402

METRICS = ("pair_accuracy", "top_pair_accuracy", "best_of_n")


@torch.no_grad()
def answer_features(args) -> tuple[torch.Tensor, list[list[str]]]:
    """(prompts, answers, C) standardised last-token hidden states of sampled answers."""
    problems = arithmetic_problems(args.prompts + args.test_prompts, seed=0, split="all")
    texts = [p["messages"][0]["content"] + " " + p["solution"] for p in problems]
    tok = Tokenizer.from_trained(train_bpe(texts * 4, vocab_size=400, show_progress=False))
    torch.manual_seed(0)
    trunk = Transformer(ModelConfig(vocab_size=448, hidden_size=args.width, intermediate_size=2 * args.width,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                    head_dim=args.width // 4, max_position_embeddings=256)).eval()
    stops, pad_id = set(stop_ids(tok)), tok.pad_id or 0
    prompts = [render_prompt(tok, p["messages"]) for p in problems for _ in range(args.answers)]
    answers = complete(trunk, prompts, lambda ids: tok.decode([t for t in ids if t not in stops], skip_special=True),
                       args.max_new_tokens, batch_size=256, sampling=Sampling(1.0), stop_ids=stops, pad_id=pad_id)
    seqs = [render_response(tok, problems[k // args.answers]["messages"], {"role": "assistant", "content": a},
                            256)[0] for k, a in enumerate(answers)]
    feats = []
    for start in range(0, len(seqs), 256):
        chunk = seqs[start:start + 256]
        ids = torch.full((len(chunk), max(map(len, chunk))), pad_id, dtype=torch.long)
        for row, seq in enumerate(chunk):
            ids[row, :len(seq)] = torch.tensor(seq)
        hidden = trunk(ids, return_hidden=True)
        feats.append(hidden[torch.arange(len(chunk)), last_token_index(ids, pad_id)])
    feats = torch.cat(feats)
    feats = (feats - feats.mean(0)) / feats.std(0).clamp(min=1e-6)
    n = args.answers
    return feats.view(-1, n, args.width), [answers[k:k + n] for k in range(0, len(answers), n)]


def refit(head: torch.nn.Linear, chosen: torch.Tensor, rejected: torch.Tensor, seed: int, args) -> None:
    """`lmforge rm`'s objective, full batch, on the cached features (warm start, fresh AdamW)."""
    objective = reward_objective(0.0, bootstrap_masks(len(chosen), args.heads, seed))
    batch = {"chosen_input_ids": chosen, "rejected_input_ids": rejected, "pair_index": torch.arange(len(chosen))}
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.0)
    for _ in range(args.refit_steps):
        loss, _ = objective(head, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@torch.no_grad()
def evaluate(head: torch.nn.Linear, feats: torch.Tensor, gold: torch.Tensor) -> dict:
    scores = head(feats).mean(-1)  # (P, N): the ensemble mean
    ds, dg = scores[:, :, None] - scores[:, None, :], gold[:, :, None] - gold[:, None, :]
    upper = torch.ones_like(ds[0], dtype=torch.bool).triu(1).expand_as(ds)
    agree = ((ds * dg > 0).float() + 0.5 * (ds == 0).float())[upper & (dg != 0)]
    best, second = gold.topk(2, dim=1).indices.T
    rows = torch.arange(len(gold))
    pick = scores.argmax(1)
    regret_scale = (gold.max(1).values - gold.mean(1)).clamp(min=1e-9)
    return {"pair_accuracy": agree.mean().item(),
            "top_pair_accuracy": (scores[rows, best] > scores[rows, second]).float().mean().item(),
            "best_of_n": ((gold[rows, pick] - gold.mean(1)) / regret_scale).mean().item()}


def prefers_first(gold_gap: torch.Tensor, temperature: float, noise: torch.Generator) -> bool:
    """The gold labeller's verdict: the higher gold reward, or with a temperature > 0 a
    Bradley–Terry draw, P(first) = σ(gap / temperature) (a noisy rater)."""
    if temperature <= 0:
        return bool(gold_gap > 0)
    return bool(torch.rand((), generator=noise) < torch.sigmoid(gold_gap / temperature))


def simulate(selector: str, seed: int, feats: torch.Tensor, gold: torch.Tensor, args) -> list[dict]:
    """Label one pair per training prompt, refit every `refit_every`; the held-out curve."""
    train_feats, test_feats = feats[:args.prompts], feats[args.prompts:]
    train_gold, test_gold = gold[:args.prompts], gold[args.prompts:]
    torch.manual_seed(seed)
    head = torch.nn.Linear(args.width, args.heads, bias=False)  # the heads' prior: a random draw each
    torch.nn.init.normal_(head.weight, std=args.width ** -0.5)
    order = torch.randperm(args.prompts, generator=torch.Generator().manual_seed(seed)).tolist()
    noise, gold_scale = torch.Generator().manual_seed(10_000 + seed), gold.std().item()
    chosen, rejected, gaps = [], [], []
    curve = [{"labels": 0, **evaluate(head, test_feats, test_gold)}]
    for t, p in enumerate(order[:args.max_labels]):
        with torch.no_grad():
            scores = head(train_feats[p])  # (N, heads)
        i, j = SELECTORS[selector](scores, torch.Generator().manual_seed(seed * 1_000_003 + t))
        gaps.append(abs(train_gold[p, i] - train_gold[p, j]).item() / gold_scale)
        if not prefers_first(train_gold[p, i] - train_gold[p, j], args.label_noise * gold_scale, noise):
            i, j = j, i
        chosen.append(train_feats[p, i])
        rejected.append(train_feats[p, j])
        if (t + 1) % args.refit_every == 0:
            refit(head, torch.stack(chosen), torch.stack(rejected), seed, args)
            curve.append({"labels": t + 1, **evaluate(head, test_feats, test_gold), "label_gap": mean(gaps)})
    return curve


def summarise(curves: list[list[dict]]) -> list[dict]:
    rows = []
    for points in zip(*curves):
        row = {"labels": points[0]["labels"]}
        for m in (m for m in (*METRICS, "label_gap") if m in points[0]):  # no labels: no gap
            xs = [pt[m] for pt in points]
            row[m] = {"mean": round(mean(xs), 4), "stderr": round(stderr(xs), 4)}
        rows.append(row)
    return rows


def table(results: dict, show_labels: list[int]) -> str:
    names = list(results)
    head = "| labels | " + " | ".join(f"{m} ({n})" for m in METRICS for n in names) + " |"
    lines = [head, "|" + "---|" * (1 + len(METRICS) * len(names))]
    for k, labels in enumerate(r["labels"] for r in results[names[0]]):
        if labels in show_labels:
            cells = [f"{results[n][k][m]['mean']:.3f} ± {results[n][k][m]['stderr']:.3f}"
                     for m in METRICS for n in names]
            lines.append(f"| {labels} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.8))
    for ax, m in zip(axes, METRICS):
        for name, rows in results.items():
            xs = [r["labels"] for r in rows]
            mu = torch.tensor([r[m]["mean"] for r in rows])
            se = torch.tensor([r[m]["stderr"] for r in rows])
            ax.plot(xs, mu, label=name)
            ax.fill_between(xs, mu - se, mu + se, alpha=0.2)
        ax.set_xlabel("labels")
        ax.set_ylabel(f"held-out {m}")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--selectors", nargs="+", default=["random", "double_ts", "max_spread"])
    ap.add_argument("--prompts", type=int, default=300, help="training prompts (one label each at most)")
    ap.add_argument("--test_prompts", type=int, default=100)
    ap.add_argument("--answers", type=int, default=8, help="sampled answers per prompt")
    ap.add_argument("--max_new_tokens", type=int, default=16)
    ap.add_argument("--width", type=int, default=64, help="trunk hidden size = feature dimension")
    ap.add_argument("--heads", type=int, default=8, help="ensemble size")
    ap.add_argument("--max_labels", type=int, default=200)
    ap.add_argument("--refit_every", type=int, default=10)
    ap.add_argument("--refit_steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.03)
    ap.add_argument("--label_noise", type=float, default=0.0,
                    help="0: the labeller always prefers the higher gold reward; T > 0: Bradley-Terry draws "
                         "at temperature T x the gold reward's standard deviation (a noisy rater)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "label_efficiency"))
    args = ap.parse_args()
    torch.set_num_threads(1)  # tiny tensors: one thread beats OpenMP's synchronisation, more so on a shared machine
    meta = Meta(["torch"])
    feats, _ = answer_features(args)
    gold_head = torch.randn(args.width, generator=torch.Generator().manual_seed(12345)) * args.width ** -0.5
    gold = feats @ gold_head  # (P, N)
    spectrum = torch.linalg.svdvals(feats.reshape(-1, args.width))
    effective_rank = float(spectrum.sum() ** 2 / (spectrum ** 2).sum())  # participation ratio
    results = {s: summarise([simulate(s, seed, feats, gold, args) for seed in args.seeds]) for s in args.selectors}
    out = Path(args.out)
    plot(results, out.with_suffix(".png"))
    show = sorted({0, 10, 20, 40, 80, 120, 160, 200, args.max_labels})
    markdown = table(results, show)
    result = {"settings": {k: v for k, v in vars(args).items() if k != "out"},
              "feature_effective_rank": round(effective_rank, 1), "results": results, "table": markdown}
    text = meta.dump(result)
    out.with_suffix(".json").write_text(text + "\n")
    print(text)
    print(markdown, file=sys.stderr)


if __name__ == "__main__":
    main()
