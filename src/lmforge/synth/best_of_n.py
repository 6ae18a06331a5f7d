"""`lmforge data best-of-n`: rejection sampling (self-alignment; RAFT, Dong et al. 2023; ReST,
Gulcehre et al. 2023): a policy samples N answers per prompt and the best one becomes SFT data.

    lmforge data best-of-n --policy runs/demo/sft/model --prompts arithmetic:500 --n 8 --verifier math
    lmforge data best-of-n --policy runs/demo/sft/model --prompts prompts.jsonl --reward_model runs/rm/model
    lmforge data best-of-n --policy runs/demo/sft/model --prompts prompts.jsonl --judge runs/smollm2

"Best" is decided by exactly one scorer: the sum of `verifier` rewards (a prompt whose best
answer scores below `min_score` is dropped: none of its samples passed), a reward model's
score, or a judge's knockout (`score.judge_knockout`, both orders per comparison). Rows are
chat JSONL with the winner's score: {"messages": [..., {"role": "assistant", ...}], "score"}.

`--rounds R` (R > 1) is the ReST / RAFT loop: round r writes OUT.round<r>.jsonl with the
current policy, `sft` (with `sft_recipe`) trains that policy on them into RUN_DIR/round<r>,
and the next round samples from the result. A killed loop resumes: finished rounds' data are
complete (a no-op) and finished SFT runs (their summary.json) are not trained again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from lmforge.errors import InputError
from lmforge.synth.feedback import constitution_template
from lmforge.synth.score import RewardModelScorer, judge_knockout, load_verifiers
from lmforge.synth.stage import (EndpointOptions, Prompt, batch_seed, generator_name, open_generator, prompt_manifest,
                                 read_prompt_set, with_system, write_resumable)


@dataclass
class BestOfNConfig:
    policy: str = ""  # the sampling model (a model lmforge loads, or with url an endpoint's model name)
    url: str = ""  # an OpenAI-compatible endpoint for the policy
    api_key_env: str = "OPENAI_API_KEY"  # environment variable holding the endpoints' API key
    prompts: str = ""  # JSONL of prompt / question / messages records, or a task NAME:N
    output: str = "data/best_of_n.jsonl"  # chat JSONL; OUT.manifest.json beside it
    n: int = 8  # answers sampled per prompt
    system_prompt: str = ""  # sent before every prompt (not written to the rows)
    max_new_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 1.0
    verifier: list[str] = field(default_factory=list)  # score = sum of these rewards (repeat --verifier)
    reward_model: str = ""  # or: score = this reward model's
    judge: str = ""  # or: the judge's knockout winner (a model lmforge loads, or with judge_url a name)
    judge_url: str = ""
    constitution: str = ""  # principles for the judge (a text file)
    min_score: float = 1.0  # verifier: drop the prompt when its best answer scores less
    batch_size: int = 8  # prompts per batch (one resume point)
    seed: int = 0
    device: str = "cpu"
    endpoint: EndpointOptions = field(default_factory=EndpointOptions)
    rounds: int = 1  # > 1: ReST / RAFT, alternating best-of-n with `sft` on its rows
    sft_recipe: str = ""  # rounds > 1: the SFT recipe (YAML); model, data.train and run_dir are set per round
    run_dir: str = "runs/rest"  # rounds > 1: round r's SFT run goes to RUN_DIR/round<r>
    overwrite: bool = False
    progress: bool = True


def best_of_n(cfg: BestOfNConfig) -> dict:
    if cfg.rounds > 1:
        return rest_rounds(cfg)
    if sum(map(bool, (cfg.verifier, cfg.reward_model, cfg.judge))) != 1:
        raise InputError("best-of-n needs exactly one scorer: --verifier NAME, --reward_model DIR or --judge MODEL")
    prompts = read_prompt_set(cfg.prompts, cfg.seed)
    pick = _picker(cfg)
    policy = open_generator(cfg.policy, cfg.url, cfg.api_key_env, cfg.endpoint, cfg.device, cfg.batch_size * cfg.n)

    def make_rows(batch_no: int, batch: list[Prompt]) -> tuple[list[dict], Counter]:
        asked = [with_system(p.messages, cfg.system_prompt) for p in batch for _ in range(cfg.n)]
        answers = policy.chat(asked, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                              seed=batch_seed(cfg.seed, batch_no))
        candidates = [[a for a in answers[i * cfg.n:(i + 1) * cfg.n] if a.strip()] for i in range(len(batch))]
        dropped = Counter({"all_empty": sum(not c for c in candidates)})
        live = [(p, c) for p, c in zip(batch, candidates) if c]
        rows = []
        for (p, c), (index, score) in zip(live, pick([p for p, _ in live], [c for _, c in live])):
            if cfg.verifier and score < cfg.min_score:
                dropped["none_passed"] += 1
                continue
            rows.append({"messages": [*p.messages, {"role": "assistant", "content": c[index]}], "score": score})
        return rows, +dropped

    manifest = prompt_manifest("data best-of-n", cfg, {"policy": generator_name(cfg.policy, cfg.url),
                                                       **_scorer_names(cfg)})
    if cfg.judge and cfg.constitution:
        manifest.inputs.append(Path(cfg.constitution))
    counts = write_resumable(Path(cfg.output), prompts, make_rows, cfg.batch_size, manifest, cfg.overwrite,
                             cfg.progress)
    print(f"data best-of-n: best of {cfg.n} for {counts['rows']} of {counts['prompts']} prompts -> {cfg.output} "
          f"(dropped: {counts['dropped'] or 'none'})")
    return counts


def _picker(cfg: BestOfNConfig):
    """fn(prompts, candidates per prompt) -> [(index of the best, its score)] for the chosen scorer."""
    if cfg.verifier:
        verifiers = load_verifiers(cfg.verifier)
        return lambda prompts, cands: [_argmax([sum(f(a, p.record) for f in verifiers.values()) for a in c])
                                       for p, c in zip(prompts, cands)]
    if cfg.reward_model:
        rm = RewardModelScorer(cfg.reward_model, cfg.device)

        def by_reward(prompts, cands):
            flat = rm.score([[*p.messages, {"role": "assistant", "content": a}] for p, c in zip(prompts, cands)
                             for a in c])
            out, start = [], 0
            for c in cands:
                out.append(_argmax(flat[start:start + len(c)]))
                start += len(c)
            return out
        return by_reward
    judge = open_generator(cfg.judge, cfg.judge_url, cfg.api_key_env, cfg.endpoint, cfg.device, 32)
    template = constitution_template(cfg.constitution)
    # a judge ranks, it does not score: the winner's score is how many rivals it met
    return lambda prompts, cands: [(i, float(len(c) - 1)) for i, c in zip(
        judge_knockout([p.text for p in prompts], cands, judge, template), cands)]


def _argmax(scores: list[float]) -> tuple[int, float]:
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))  # the first of equals
    return best, float(scores[best])


def _scorer_names(cfg: BestOfNConfig) -> dict:
    if cfg.verifier:
        return {"verifier": ", ".join(cfg.verifier)}
    if cfg.reward_model:
        return {"reward_model": cfg.reward_model}
    return {"judge": generator_name(cfg.judge, cfg.judge_url)}


def rest_rounds(cfg: BestOfNConfig) -> dict:
    """Best-of-n, then `sft` on its rows, `rounds` times; each round samples from the last model."""
    from lmforge.config import load_config
    from lmforge.stages.sft import SFTConfig, sft

    policy, rounds = cfg.policy, {}
    for r in range(1, cfg.rounds + 1):
        out = Path(cfg.output).with_suffix(f".round{r}.jsonl")
        rounds[f"round{r}"] = best_of_n(replace(cfg, policy=policy, output=str(out), rounds=1, seed=cfg.seed + r))
        run = Path(cfg.run_dir) / f"round{r}"
        if not (run / "summary.json").exists():  # a finished round is not trained again
            sft(load_config(SFTConfig, [*([cfg.sft_recipe] if cfg.sft_recipe else []), "--model", policy,
                                        "--data.train", str(out), "--run_dir", str(run), "--device", cfg.device]))
        policy = str(run / "model")  # a LoRA run's adapter directory loads as well
        rounds[f"round{r}"]["model"] = policy
    print(f"data best-of-n: {cfg.rounds} rounds; the last model is {policy}")
    return rounds
