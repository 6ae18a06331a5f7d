"""lmforge's multiple-choice scorer against lm-evaluation-harness on the same task and model:
per-choice log-likelihoods, acc / acc_norm, and wall time.

    python bench/eval_harness.py [--model runs/models/smollm2/hf] [--task data/eval/corpus_cloze.jsonl]
        [--limit 64] [--lm_eval_batch_sizes 1 8 32] [--lmforge_batch_sizes 8 32] [--repeats 3]

lm-eval runs its HF backend (`HFLM`, transformers, fp32, CPU) through `simple_evaluate` on the
task defined programmatically from the local JSONL (`dataset_path: json`, `output_type:
multiple_choice`, `doc_to_text: context`, `doc_to_choice: choices`, `doc_to_target: gold`),
with `log_samples` for the per-choice log-likelihoods. lmforge runs
`lmforge.eval.multiple_choice.score_multiple_choice` on its own model loaded from the same
directory. Both models are loaded once; a run's time is one whole evaluation of the task on
the loaded model (lm-eval: task and dataset setup included; `loglik_s` is its
`HFLM.loglikelihood` part alone). Every run's scores are compared with lmforge's: the max
absolute difference of any choice's log-likelihood, and whether acc and acc_norm agree on
every example. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to download: the model and data are local
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Meta, add_repeats, interleave, ratio, summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_examples(task: str | Path, limit: int | None = None) -> list[dict]:
    with open(task, encoding="utf-8") as f:
        examples = [json.loads(line) for line in f if line.strip()]
    return examples[:limit] if limit else examples


def harness_model(model_dir: str | Path, dtype: str = "float32"):
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=str(model_dir), device="cpu", dtype=dtype, batch_size=1)


def harness_task(task: str | Path) -> dict:
    """The task as an lm-eval config: zero-shot, the " " delimiter, acc and acc_norm."""
    metrics = [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")]
    return {"task": Path(task).stem, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(Path(task).resolve())}}, "test_split": "test",
            "output_type": "multiple_choice", "doc_to_text": "context", "doc_to_choice": "choices",
            "doc_to_target": "gold", "metric_list": metrics}


def lm_eval_scores(lm, task: str | Path, limit: int | None = None, batch_size: int = 8) -> dict:
    """{"rows": per document {"loglikelihoods", "acc", "acc_norm"}, "seconds", "loglik_s"}."""
    import lm_eval

    lm.batch_size_per_gpu = batch_size
    loglik_s, inner = [0.0], lm.loglikelihood

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            loglik_s[0] += time.perf_counter() - start

    lm.loglikelihood = timed
    try:
        start = time.perf_counter()
        out = lm_eval.simple_evaluate(model=lm, tasks=[harness_task(task)], limit=limit, log_samples=True,
                                      bootstrap_iters=0, verbosity="ERROR")
        seconds = time.perf_counter() - start
    finally:
        del lm.loglikelihood
    samples = sorted(out["samples"][Path(task).stem], key=lambda s: s["doc_id"])
    rows = [{"loglikelihoods": [float(r[0]) for r in s["filtered_resps"]], "acc": s["acc"],
             "acc_norm": s["acc_norm"]} for s in samples]
    return {"rows": rows, "seconds": seconds, "loglik_s": loglik_s[0],
            "acc": out["results"][Path(task).stem]["acc,none"],
            "acc_norm": out["results"][Path(task).stem]["acc_norm,none"]}


def lmforge_model(model_dir: str | Path, dtype: str = "float32"):
    import torch

    from lmforge.model.hub import load_model
    from lmforge.tokenizer import Tokenizer

    return load_model(model_dir, "cpu", getattr(torch, dtype)), Tokenizer.from_dir(model_dir)


def lmforge_scores(model, tok, examples: list[dict], batch_size: int = 8) -> dict:
    from lmforge.eval.multiple_choice import multiple_choice_metrics, score_multiple_choice

    start = time.perf_counter()
    rows = score_multiple_choice(model, tok, examples, batch_size=batch_size)
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": seconds, **multiple_choice_metrics(rows)}


def compare(theirs: list[dict], ours: list[dict]) -> dict:
    """Max |difference| over every choice's log-likelihood; acc / acc_norm equal per example."""
    if len(theirs) != len(ours):
        raise ValueError(f"{len(theirs)} lm-eval rows vs {len(ours)} lmforge rows")
    diffs = [abs(a - b) for t, o in zip(theirs, ours)
             for a, b in zip(t["loglikelihoods"], o["loglikelihoods"], strict=True)]
    return {"examples": len(ours), "choices": len(diffs), "max_abs_diff": max(diffs),
            "acc_equal": all(t["acc"] == o["acc"] for t, o in zip(theirs, ours)),
            "acc_norm_equal": all(t["acc_norm"] == o["acc_norm"] for t, o in zip(theirs, ours))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(ROOT / "runs/models/smollm2/hf"))
    parser.add_argument("--task", default=str(ROOT / "data/eval/corpus_cloze.jsonl"))
    parser.add_argument("--limit", type=int, default=64, help="first N examples (0 = all)")
    parser.add_argument("--lm_eval_batch_sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--lmforge_batch_sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                        help="both sides; float64 takes fp32 rounding out of the agreement check")
    add_repeats(parser)
    args = parser.parse_args()

    import torch

    meta = Meta(["torch", "transformers", "lm_eval", "datasets"])
    meta.add(torch_threads=torch.get_num_threads())
    limit = args.limit or None
    examples = load_examples(args.task, limit)
    lm = harness_model(args.model, args.dtype)
    model, tok = lmforge_model(args.model, args.dtype)
    sides = {f"lm_eval_bs{bs}": (lambda bs=bs: lm_eval_scores(lm, args.task, limit, bs))
             for bs in args.lm_eval_batch_sizes}
    sides.update({f"lmforge_bs{bs}": (lambda bs=bs: lmforge_scores(model, tok, examples, bs))
                  for bs in args.lmforge_batch_sizes})
    runs = interleave(sides, args.repeats)

    reference_name = f"lmforge_bs{args.lmforge_batch_sizes[0]}"
    reference = runs[reference_name][0]
    lm_eval_names = [n for n in runs if n.startswith("lm_eval")]
    agreement = {n: compare(runs[n][0]["rows"], reference["rows"]) for n in runs if n != reference_name}
    # lm-eval against itself at other batch sizes: the fp32 rounding floor of any comparison.
    self_diff = [compare(runs[a][0]["rows"], runs[b][0]["rows"])["max_abs_diff"]
                 for a in lm_eval_names for b in lm_eval_names if a < b]
    seconds = {n: summary([r["seconds"] for r in rs]) for n, rs in runs.items()}
    loglik_s = {n: summary([runs[n][i]["loglik_s"] for i in range(args.repeats)]) for n in lm_eval_names}
    best = lambda prefix: min((s for n, s in seconds.items() if n.startswith(prefix)),  # noqa: E731
                              key=lambda s: s["median"])
    theirs = runs[lm_eval_names[0]][0]
    print(meta.dump({
        "task": os.path.relpath(args.task, ROOT), "examples": len(examples), "dtype": args.dtype,
        "scores": {"lm_eval": {"acc": theirs["acc"], "acc_norm": theirs["acc_norm"]},
                   "lmforge": {"acc": reference["acc"], "acc_norm": reference["acc_norm"]}},
        "max_abs_diff_vs_lm_eval": max(agreement[n]["max_abs_diff"] for n in lm_eval_names),
        "lm_eval_self_max_abs_diff": max(self_diff) if self_diff else None,
        "agreement_vs_" + reference_name: agreement,
        "seconds": seconds, "lm_eval_loglikelihood_seconds": loglik_s,
        "speedup_best_vs_best": ratio(best("lm_eval"), best("lmforge")),
    }))


if __name__ == "__main__":
    main()
