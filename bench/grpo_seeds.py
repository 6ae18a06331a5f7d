"""The demo's GRPO result over several seeds: held-out accuracy before/after, mean ± standard
error across seeds, beside the blind baselines, as JSON.

    python bench/grpo_seeds.py --model runs/demo/sft/model --seeds 0 1 2 3 4            # report: test
    python bench/grpo_seeds.py --model runs/demo/sft/model --split dev -- --optim.lr 2e-4  # tuning

One seed's "0.11 -> 0.21" on 85 questions is within noise of nothing; this runs the
`lmforge grpo` stage itself once per seed (the seed drives rollout sampling and which
training prompts are drawn; the held-out problems are the same for every seed), then
reports the per-seed numbers, the mean gain and its standard error. Settings are tuned with
`--split dev`; only the settings so chosen are then run on `--split test` and recorded.
Arguments after `--` go to the stage (`--optim.lr 2e-4`, `--task.max_operand 30`, ...).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Meta  # noqa: E402

from lmforge.eval.accuracy import mean, stderr  # noqa: E402


def mean_stderr(xs: list[float]) -> dict:
    return {"mean": round(mean(xs), 4), "stderr": round(stderr(xs), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/demo/sft/model")
    ap.add_argument("--config", default="configs/grpo_tiny.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--split", default="test", choices=["dev", "test"])
    ap.add_argument("--run_root", default="runs/bench/grpo_seeds")
    ap.add_argument("stage_args", nargs="*", help="after --: overrides for the grpo stage")
    args = ap.parse_args()
    meta = Meta(["torch"])
    runs = []
    for seed in args.seeds:
        run_dir = Path(args.run_root) / f"{args.split}_seed{seed}"
        cmd = [sys.executable, "-m", "lmforge.cli", "grpo", args.config, "--model", args.model,
               "--seed", str(seed), "--task.eval_split", args.split, "--run_dir", str(run_dir),
               "--loop.progress", "false", "--tensorboard", "false", *args.stage_args]
        print(f"seed {seed}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        s = json.loads((ROOT / run_dir / "summary.json").read_text())
        runs.append({"seed": seed, "before": s["accuracy_before"], "after": s["accuracy_after"],
                     "n": s["eval_problems"], "baselines": s["baselines"],
                     "mean_step_seconds": round(s["mean_step_seconds"], 2)})
    result = {"split": args.split, "model": args.model, "stage_args": args.stage_args,
              "eval_problems": runs[0]["n"], "baselines": runs[0]["baselines"],
              "before": runs[0]["before"],  # greedy decoding of one model: the same for every seed
              "after": mean_stderr([r["after"] for r in runs]),
              "gain": mean_stderr([r["after"] - r["before"] for r in runs]), "runs": runs}
    print(meta.dump(result))


if __name__ == "__main__":
    main()
