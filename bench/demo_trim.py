"""Can `make demo` train for fewer steps and keep its GRPO result? The demo's training chain
(pretrain -> SFT -> DPO -> GRPO, the configs `scripts/demo.sh` uses) at several step budgets
and seeds, GRPO's held-out accuracy before/after on the **dev** split (the test split is what
the demo reports, so it stays out of this choice), each stage's wall time, as JSON.

    python bench/demo_trim.py --budgets 200/200/40 120/120/40 --seeds 0 1
    python bench/demo_trim.py --budgets 200/100/40 --seeds 0 1 -- --optim.lr 2e-3   # pretrain overrides

A budget is PRETRAIN/SFT/GRPO steps (DPO keeps its 24). GRPO starts from `--grpo_from`: the
SFT model (the demo's chain since 2026-12-08) or the DPO model. The seed is every stage's seed
(initialisation, data order, rollouts). The token shards are `--shards` (the demo's own, from
its first three stages: `make demo` or `scripts/demo.sh` up to `tokenize`). Stage times are
only comparable on an idle machine; the GRPO gain is comparable anywhere.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Meta  # noqa: E402

from lmforge.eval.accuracy import mean, stderr  # noqa: E402
from lmforge.train.metrics import read_metrics  # noqa: E402


def stage(name: str, config: str, run_dir: Path, seed: int, steps: int | None, *overrides: str) -> float:
    cmd = [sys.executable, "-m", "lmforge.cli", name, config, "--run_dir", str(run_dir), "--seed", str(seed),
           "--loop.progress", "false", "--tensorboard", "false", *(["--loop.max_steps", str(steps)] if steps else []),
           *overrides]
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return round(time.perf_counter() - t, 1)


def chain(budget: str, seed: int, args) -> dict:
    pretrain, sft, grpo = (int(x) for x in budget.split("/"))
    run = Path(args.run_root) / f"{budget.replace('/', '-')}_{args.grpo_from}_seed{seed}"
    seconds = {
        "pretrain": stage("pretrain", "configs/tiny.yaml", run / "pretrain", seed, pretrain, "--data.shards",
                          args.shards, *args.pretrain_args),
        "sft": stage("sft", "configs/sft_tiny.yaml", run / "sft", seed, sft, "--model", str(run / "pretrain/model")),
    }
    if args.grpo_from == "dpo":
        seconds["dpo"] = stage("dpo", "configs/dpo_tiny.yaml", run / "dpo", seed, None, "--model",
                               str(run / "sft/model"))
    seconds["grpo"] = stage("grpo", "configs/grpo_tiny.yaml", run / "grpo", seed, grpo, "--model",
                            str(run / args.grpo_from / "model"), "--task.eval_split", "dev")
    s = json.loads((ROOT / run / "grpo" / "summary.json").read_text())
    val = [r["val/bpb"] for r in read_metrics(ROOT / run / "pretrain" / "metrics.jsonl") if "val/bpb" in r]
    result = {"budget": budget, "seed": seed, "val_bpb": round(val[-1], 4) if val else None,
              "grpo_before": s["accuracy_before"], "grpo_after": s["accuracy_after"], "dev_problems": s["eval_problems"],
              "seconds": seconds}
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", nargs="+", default=["200/200/40", "120/120/40"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--grpo_from", default="sft", choices=["sft", "dpo"])
    ap.add_argument("--shards", default="runs/demo/shards")
    ap.add_argument("--run_root", default="runs/bench/demo_trim")
    ap.add_argument("pretrain_args", nargs="*", help="after --: overrides for the pretrain stage")
    args = ap.parse_args()
    meta = Meta(["torch"])
    runs = [chain(budget, seed, args) for budget in args.budgets for seed in args.seeds]
    summary = {}
    for budget in args.budgets:
        rows = [r for r in runs if r["budget"] == budget]
        gains = [r["grpo_after"] - r["grpo_before"] for r in rows]
        summary[budget] = {"grpo_after": round(mean([r["grpo_after"] for r in rows]), 4),
                           "grpo_gain": round(mean(gains), 4),
                           "grpo_gain_stderr": round(stderr(gains), 4) if len(gains) > 1 else None,
                           "val_bpb": round(mean([r["val_bpb"] for r in rows if r["val_bpb"] is not None]), 4),
                           "train_seconds": round(mean([sum(r["seconds"].values()) for r in rows]), 1)}
    print(meta.dump({"bench": "demo_trim", "split": "dev", "grpo_from": args.grpo_from,
                     "pretrain_args": args.pretrain_args, "summary": summary, "runs": runs}))


if __name__ == "__main__":
    main()
