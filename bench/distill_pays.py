"""Does distillation pay? A student fine-tuned on a teacher's answers vs the same student
fine-tuned on the prompt set's original answers, held-out exact match, as JSON.

    OMP_NUM_THREADS=1 python bench/distill_pays.py --seeds 0 1            # both settings (~15 min, 2 cores)
    OMP_NUM_THREADS=1 python bench/distill_pays.py --settings lora --seeds 0 1 2 --lora_steps 60
    OMP_NUM_THREADS=1 python bench/distill_pays.py --quick                # a smoke run: 1 seed, tiny sizes

The teacher is SmolLM2-135M-Instruct (`--teacher`) with a system prompt (`--system_prompt`,
default: a few worked examples). It answers `--prompts` training-split questions of a
verifiable task through `lmforge data distill` itself (`lmforge.synth.distill`), the system
prompt left out of the rows (`keep_system_prompt false`), answers cut off at
`--max_new_tokens` dropped, and with `--verifier math` only answers whose number is right
kept. The original answers are the task's own reference answers for the same prompts
("3 + 4 = 7."). Each student is then fine-tuned with `lmforge sft` on each set with the
same steps, learning rate, batch and seed, and scored greedily, without a system prompt,
by `lmforge eval`'s runner on the bundled test split (data/eval/*_test.jsonl): split by
canonical problem (lmforge.rewards.tasks), so the teacher never saw a held-out question
nor a rewording of one (checked here).

Settings (`--settings`):
- **tiny**: the demo-sized student, pretrained here by `lmforge pretrain` (depth `--tiny_depth`,
  on bundled English text with a tokenizer trained on it), fully fine-tuned; task `--tiny_task`
  (default compare: "Which is larger, a or b?", the demo's task; arithmetic it can barely do).
- **lora**: SmolLM2 itself with LoRA, no system prompt: distilling the teacher's system prompt
  away (context distillation, Askell et al. 2021; Snell et al. 2022); task `--lora_task`.

Rows per setting: the base student (no fine-tuning), original answers, teacher answers, and
the teacher itself (with its system prompt, the ceiling the distilled student copies). Each
fine-tuned row is mean ± standard error over `--seeds` (the seed drives the student's
pretraining, LoRA initialisation and data order; the teacher's answers are greedy, made once
per task), and the paired difference teacher − original per seed. Record results in
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, Meta  # noqa: E402

from lmforge.config import from_dict  # noqa: E402
from lmforge.eval.accuracy import greedy_accuracy, mean, stderr  # noqa: E402
from lmforge.eval.generative import answer_reward  # noqa: E402
from lmforge.eval.run import EvalOptions, evaluate_task  # noqa: E402
from lmforge.eval.tasks import load_task  # noqa: E402
from lmforge.model.load import load_pretrained  # noqa: E402
from lmforge.rewards.tasks import arithmetic_key, comparison_key, in_split  # noqa: E402
from lmforge.stages.common import stop_ids  # noqa: E402
from lmforge.synth.stage import read_prompt_set, with_system, write_jsonl  # noqa: E402
from lmforge.tokenizer.chat import render_prompt  # noqa: E402

# Worked examples in the form of the reference answers; all three are training-split
# problems (check_held_out asserts it for any system prompt).
FEW_SHOT = ("You are a careful calculator. Answer with the question's numbers and the result, "
            "in one short sentence, like these examples.\n"
            "Q: What is 8 + 6? A: 8 + 6 = 14.\n"
            "Q: What is 5 - 13? A: 5 - 13 = -8.\n"
            "Q: Which is larger, 13 or 8? A: The larger is 13.")
TEST_FILES = {"arithmetic": "data/eval/arithmetic_test.jsonl", "compare": "data/eval/compare_test.jsonl"}


def original_answers(prompts_spec: str, out: Path) -> Path:
    """The prompt set's own answers: each problem's reference solution, as chat rows."""
    rows = [{"messages": [*p.messages, {"role": "assistant", "content": p.record["solution"]}]}
            for p in read_prompt_set(prompts_spec)]
    write_jsonl(out, rows)
    return out


def teacher_answers(args, prompts_spec: str, out: Path) -> dict:
    """`lmforge data distill` with the system prompt distilled away; returns its counts."""
    from lmforge.synth.distill import DistillConfig, distill

    return distill(from_dict(DistillConfig, {
        "teacher": args.teacher, "prompts": prompts_spec, "output": str(out), "system_prompt": args.system_prompt,
        "keep_system_prompt": False, "max_new_tokens": args.max_new_tokens, "verifier": args.verifier,
        "batch_size": 32, "overwrite": True, "progress": False}))


def tiny_student(work: Path, seed: int, args) -> Path:
    """A demo-sized base model: a BPE tokenizer and `lmforge pretrain` on bundled English."""
    from lmforge.experiments.runs import tokenize_docs, train_small
    from lmforge.stages.tokenizer import TokenizerTrainConfig, train_tokenizer

    data = work / "tiny_data"
    if not (data / "tokenizer" / "tokenizer.json").exists():
        from lmforge.data.documents import ReadStats, read_documents

        text = next(read_documents(ROOT / "data/corpus/en_moby_dick.jsonl.gz", "text", "raise", ReadStats()))["text"]
        docs = [{"id": f"en{i}", "text": text[i:i + 2000]} for i in range(0, args.tiny_chars, 2000)]
        write_jsonl(data / "english.jsonl", docs)
        train_tokenizer(TokenizerTrainConfig(input=[str(data / "english.jsonl")], output=str(data / "tokenizer"),
                                             vocab_size=args.tiny_vocab))
        tokenize_docs(data, "pretrain", docs)
    return train_small(work / f"tiny_pretrain_seed{seed}", data / "shards_pretrain", seed, args.tiny_pretrain_steps,
                       args.tiny_depth, 128, 16, "The whale")


def finetune(student: Path, chat_file: Path, run_dir: Path, seed: int, peft: str, steps: int, lr: float,
             batch_size: int) -> Path:
    """`lmforge sft` on one chat file; the same settings for every arm of a setting. Rows are
    not packed, so a step is `batch_size` conversations whichever answers they hold."""
    from lmforge.stages.sft import SFTConfig, sft

    sft(from_dict(SFTConfig, {
        "run_dir": str(run_dir), "model": str(student), "seed": seed, "peft": peft, "tensorboard": False,
        "lora": {"r": 8, "alpha": 16}, "export_merged": False,
        "data": {"train": [str(chat_file)], "val_fraction": 0.0, "seq_len": 128, "batch_size": batch_size},
        "optim": {"lr": lr, "weight_decay": 0.0, "schedule": "cosine", "warmup_steps": min(10, steps // 5)},
        "loop": {"max_steps": steps, "log_every_steps": 10, "progress": False, "eval_every_steps": steps},
        "eval": {"sample_questions": []}}))
    return run_dir / "model"


def held_out(model_dir: str | Path, task_file: str, max_new_tokens: int, system_prompt: str = "") -> dict:
    """Greedy exact match on the test split. Without a system prompt: `lmforge eval`'s runner
    itself; with one (the teacher's row): the same reward and decoding, the prompt rendered
    after the system turn."""
    model, tok = load_pretrained(model_dir)
    task = load_task(str(ROOT / task_file))
    task.max_new_tokens = max_new_tokens
    if not system_prompt:
        metrics, rows = evaluate_task(model.eval(), tok, task, EvalOptions())
        return {"exact_match": metrics["exact_match"], "n": metrics["n"], "samples": [r["completion"] for r in rows[:3]]}
    prompts = [render_prompt(tok, with_system([{"role": "user", "content": r["prompt"]}], system_prompt))
               for r in task.examples]
    result = greedy_accuracy(model.eval(), prompts, task.examples, lambda ids: tok.decode(ids, skip_special=True),
                             answer_reward(task.extract, task.match), max_new_tokens, 32,
                             stop_ids=set(stop_ids(tok)), pad_id=tok.pad_id or 0)
    return {"exact_match": result["accuracy"], "n": result["n"], "samples": result["completions"][:3]}


def mean_se(xs: list[float]) -> dict:
    return {"mean": round(mean(xs), 4), "se": round(stderr(xs), 4) if len(xs) > 1 else None,
            "per_seed": [round(x, 4) for x in xs]}


def check_held_out(prompts_spec: str, system_prompt: str) -> None:
    """No held-out problem (by canonical key, so no rewording of one either) among the
    teacher's prompts or the problems its system prompt shows."""
    shown = [arithmetic_key(int(a), op, int(b)) for a, op, b in re.findall(r"(\d+) ([+-]) (\d+)", system_prompt)]
    shown += [comparison_key(int(a), int(b)) for a, b in re.findall(r"(\d+) or (\d+)", system_prompt)]
    keys = shown + [p.record["key"] for p in read_prompt_set(prompts_spec)]
    assert not [k for k in keys if not in_split(k, "train")], "the teacher would see a held-out problem"


def answer_sets_for(task: str, args, work: Path) -> dict:
    """The teacher's and the original answers to the same training prompts of `task`."""
    spec = f"{task}:{args.prompts}"
    check_held_out(spec, args.system_prompt)
    t = time.perf_counter()
    counts = teacher_answers(args, spec, work / f"teacher_{task}.jsonl")
    sets = {"teacher": work / f"teacher_{task}.jsonl", "original": original_answers(spec, work / f"original_{task}.jsonl"),
            "rows": {"teacher": counts["rows"], "original": counts["prompts"], "teacher_dropped": counts["dropped"]},
            "teacher_seconds": round(time.perf_counter() - t, 1),
            # greedy, one sample: the share kept is the teacher's accuracy on its training prompts
            "teacher_accuracy": {"training_prompts_kept": round(counts["rows"] / counts["prompts"], 4)}}
    if args.teacher_eval:
        sets["teacher_accuracy"]["held_out"] = held_out(args.teacher, TEST_FILES[task], args.eval_tokens,
                                                        args.system_prompt)
    return sets


def run_setting(name: str, args, work: Path, teacher_sets: dict) -> dict:
    task, peft, steps, lr = ((args.tiny_task, "none", args.tiny_steps, args.tiny_lr) if name == "tiny" else
                             (args.lora_task, "lora", args.lora_steps, args.lora_lr))
    files = teacher_sets[task]
    arms = {"original answers": files["original"], "teacher answers": files["teacher"]}
    batch_size = min(16, files["rows"]["teacher"], files["rows"]["original"])
    rows = {"base student": [], **{arm: [] for arm in arms}}
    t0 = time.perf_counter()
    for seed in args.seeds:
        student = tiny_student(work, seed, args) if name == "tiny" else Path(args.teacher)
        if name == "tiny" or not rows["base student"]:  # SmolLM2 is the same base for every seed
            rows["base student"].append(held_out(student, TEST_FILES[task], args.eval_tokens))
        for arm, chat_file in arms.items():
            t = time.perf_counter()
            model_dir = finetune(student, chat_file, work / name / f"{arm.split()[0]}_seed{seed}", seed, peft, steps,
                                 lr, batch_size)
            trained = time.perf_counter()
            rows[arm].append({"seed": seed, **held_out(model_dir, TEST_FILES[task], args.eval_tokens),
                              "train_seconds": round(trained - t, 1),
                              "eval_seconds": round(time.perf_counter() - trained, 1)})
            print(f"{name} seed {seed} {arm}: exact match {rows[arm][-1]['exact_match']:.3f} "
                  f"(train {trained - t:.0f} s)", file=sys.stderr, flush=True)
    acc = {k: mean_se([r["exact_match"] for r in v]) for k, v in rows.items()}
    paired = [t["exact_match"] - o["exact_match"] for t, o in zip(rows["teacher answers"], rows["original answers"])]
    return {"task": task, "test_file": TEST_FILES[task], "student": "tiny (pretrained here)" if name == "tiny"
            else args.teacher, "peft": peft, "steps": steps, "lr": lr, "batch_size": batch_size, "exact_match": acc,
            "teacher_minus_original": mean_se(paired), "teacher_with_system_prompt": files["teacher_accuracy"],
            "rows_trained": files["rows"], "teacher_seconds": files["teacher_seconds"], "samples": {k: v[0]["samples"] for k, v in rows.items()},
            "seconds": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="runs/models/smollm2/hf")
    ap.add_argument("--system_prompt", default=FEW_SHOT)
    ap.add_argument("--settings", nargs="+", default=["tiny", "lora"], choices=["tiny", "lora"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--prompts", type=int, default=128, help="training prompts the teacher answers")
    ap.add_argument("--verifier", nargs="*", default=["math"], help="distill's verifiers (none: keep every answer)")
    ap.add_argument("--max_new_tokens", type=int, default=32, help="the teacher's answers")
    ap.add_argument("--eval_tokens", type=int, default=24, help="new tokens per held-out answer")
    ap.add_argument("--tiny_task", default="compare", choices=sorted(TEST_FILES))
    ap.add_argument("--tiny_depth", type=int, default=2)
    ap.add_argument("--tiny_vocab", type=int, default=512)
    ap.add_argument("--tiny_chars", type=int, default=60_000, help="English pretraining text")
    ap.add_argument("--tiny_pretrain_steps", type=int, default=150)
    ap.add_argument("--tiny_steps", type=int, default=150)
    ap.add_argument("--tiny_lr", type=float, default=1e-3)
    ap.add_argument("--lora_task", default="arithmetic", choices=sorted(TEST_FILES))
    ap.add_argument("--lora_steps", type=int, default=20)
    ap.add_argument("--lora_lr", type=float, default=5e-4)
    ap.add_argument("--teacher_eval", action="store_true", help="also score the teacher (with its system prompt) held out")
    ap.add_argument("--work", default="runs/bench/distill_pays")
    ap.add_argument("--quick", action="store_true", help="1 seed, 16 prompts, a few steps: a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.prompts, args.tiny_pretrain_steps, args.tiny_steps, args.lora_steps = [0], 16, 10, 10, 3
    meta = Meta(["torch", "transformers"])
    work = ROOT / args.work
    t0 = time.perf_counter()
    tasks = sorted({args.tiny_task if s == "tiny" else args.lora_task for s in args.settings})
    with contextlib.redirect_stdout(sys.stderr):  # the stages' prints; stdout is the JSON
        answer_sets = {task: answer_sets_for(task, args, work) for task in tasks}
        results = {name: run_setting(name, args, work, answer_sets) for name in args.settings}
    print(meta.dump({"bench": "distill_pays", "teacher": args.teacher, "system_prompt": args.system_prompt,
                     "prompts": args.prompts, "verifier": args.verifier, "seeds": args.seeds,
                     "teacher_max_new_tokens": args.max_new_tokens, "eval_tokens": args.eval_tokens,
                     "settings": results,
                     "wall_seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
