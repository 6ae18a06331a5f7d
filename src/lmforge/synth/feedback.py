"""`lmforge data judge`: preference pairs labelled by a judge model (RLAIF, Bai et al. 2022,
"Constitutional AI") -> preference JSONL that `dpo`, `rm` and `kto` read.

    lmforge data judge --policy runs/demo/sft/model --judge runs/smollm2 --constitution principles.md \\
        --prompts prompts.jsonl --answers 4 --temperature 0.8 --output data/rlaif_pairs.jsonl

For each prompt the policy samples `answers` answers; distinct answers are paired (at most
`max_pairs` pairs per prompt) and the judge compares each pair under the principles in the
constitution file, in both orders (`eval.judge.pairwise_compare`). A pair is kept only when
both orders pick the same answer; a tie, a verdict that flips with the order (position
bias), an unreadable verdict or identical answers are dropped and counted. Each row keeps
the judge's two verdicts: {"messages", "chosen", "rejected", "judge": {...}}.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import InputError
from lmforge.eval.judge import judge_template, parse_verdict, pairwise_compare
from lmforge.synth.stage import (EndpointOptions, Prompt, batch_seed, generator_name, open_generator, prompt_manifest,
                                 read_prompt_set, write_resumable)



@dataclass
class JudgeConfig:
    policy: str = ""  # the model whose answers are compared (a model lmforge loads, or with policy_url a name)
    policy_url: str = ""  # an OpenAI-compatible endpoint for the policy
    judge: str = ""  # the judge (a model lmforge loads, or with judge_url the endpoint's model name)
    judge_url: str = ""  # an OpenAI-compatible endpoint for the judge
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the endpoints' API key
    constitution: str = ""  # a text file of principles the judge applies (empty: helpful, correct, clear)
    prompts: str = ""  # JSONL of prompt / question / messages records, or a task NAME:N
    output: str = "data/judged_pairs.jsonl"  # preference JSONL; OUT.manifest.json beside it
    answers: int = 4  # answers sampled per prompt
    max_pairs: int = 6  # pairs judged per prompt (of the answers' distinct pairs, in order)
    max_new_tokens: int = 256
    temperature: float = 0.8  # the policy's; the judge decodes greedily
    top_p: float = 1.0
    judge_tokens: int = 16  # the judge's longest verdict
    batch_size: int = 8  # prompts per batch (one resume point)
    seed: int = 0
    device: str = "cpu"
    endpoint: EndpointOptions = field(default_factory=EndpointOptions)
    overwrite: bool = False
    progress: bool = True


def judge_pairs(cfg: JudgeConfig) -> dict:
    prompts = read_prompt_set(cfg.prompts, cfg.seed)
    template = constitution_template(cfg.constitution)
    policy = open_generator(cfg.policy, cfg.policy_url, cfg.api_key_env, cfg.endpoint, cfg.device,
                            cfg.batch_size * cfg.answers)
    judge = (policy if (cfg.judge, cfg.judge_url) == (cfg.policy, cfg.policy_url) else
             open_generator(cfg.judge, cfg.judge_url, cfg.api_key_env, cfg.endpoint, cfg.device, 32))

    def make_rows(batch_no: int, batch: list[Prompt]) -> tuple[list[dict], Counter]:
        asked = [p.messages for p in batch for _ in range(cfg.answers)]
        answers = policy.chat(asked, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                              seed=batch_seed(cfg.seed, batch_no))
        dropped, pairs = Counter(), []
        for i, p in enumerate(batch):
            mine = answers[i * cfg.answers:(i + 1) * cfg.answers]
            candidates = list(itertools.combinations(range(len(mine)), 2))[:cfg.max_pairs]
            for a, b in candidates:
                if mine[a].strip() == mine[b].strip():
                    dropped["identical_answers"] += 1
                else:
                    pairs.append((p, mine[a], mine[b]))
        if not pairs:
            return [], dropped
        _, verdicts = pairwise_compare([p.text for p, _, _ in pairs], [a for _, a, _ in pairs],
                                       [b for _, _, b in pairs], judge, cfg.judge_tokens, template)
        rows = []
        for (p, a, b), v in zip(pairs, verdicts):
            row, reason = preference_row(p, a, b, v["verdict_a_first"], v["verdict_b_first"])
            if reason:
                dropped[reason] += 1
            else:
                rows.append({**row, "judge": {"model": generator_name(cfg.judge, cfg.judge_url), **row["judge"]}})
        return rows, dropped

    counts = write_resumable(Path(cfg.output), prompts, make_rows, cfg.batch_size, _manifest(cfg),
                             cfg.overwrite, cfg.progress)
    print(f"data judge: {counts['rows']} pairs both orders agree on, from {counts['prompts']} prompts -> "
          f"{cfg.output} (dropped: {counts['dropped'] or 'none'})")
    return counts


def preference_row(prompt: Prompt, a: str, b: str, a_first: str, b_first: str) -> tuple[dict, str | None]:
    """The pair ordered chosen-first when both verdicts agree, else the reason it is dropped."""
    first, second = parse_verdict(a_first), parse_verdict(b_first)
    if first is None or second is None:
        return {}, "unreadable_verdict"
    if (first, second) == ("1", "2"):
        chosen, rejected, chosen_first, rejected_first = a, b, a_first, b_first
    elif (first, second) == ("2", "1"):
        chosen, rejected, chosen_first, rejected_first = b, a, b_first, a_first
    else:
        return {}, "judge_tie" if "tie" in (first, second) else "order_disagreement"
    return {"messages": prompt.messages, "chosen": chosen, "rejected": rejected,
            "judge": {"verdict_chosen_first": chosen_first, "verdict_rejected_first": rejected_first}}, None


def constitution_template(path: str) -> str:
    """The judge's prompt with the constitution's principles written in."""
    if not path:
        return judge_template()
    if not Path(path).is_file():
        raise InputError("no such constitution file", path)
    principles = Path(path).read_text(encoding="utf-8").strip()
    return judge_template(f"Judge them by these principles:\n\n{principles}")


def _manifest(cfg: JudgeConfig):
    manifest = prompt_manifest("data judge", cfg, {"policy": generator_name(cfg.policy, cfg.policy_url),
                                                   "judge": generator_name(cfg.judge, cfg.judge_url)})
    if cfg.constitution:
        manifest.inputs.append(Path(cfg.constitution))
    return manifest
