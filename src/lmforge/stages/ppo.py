"""`lmforge ppo`: RLHF with a critic (InstructGPT) on the one training loop.

    lmforge ppo configs/ppo_tiny.yaml --model runs/demo/sft/model --reward_model runs/demo/rm/model
    lmforge ppo --model M --reward_model RM --data prompts.jsonl --value_model head --target_kl 6
    lmforge ppo --model M --task.name compare --rewards math --value_model policy --peft lora

config -> policy (full or LoRA) + critic + frozen reference -> RolloutSource (sample, score by
the reward model and/or reward functions, values, GAE) -> ppo_objective -> train(): the same
rollout source and loop as GRPO. Prompts come from `data` (prompt or preference JSONL; held-out
prompts by `eval_data` or a hash of the prompt) or, without it, from `task` (generated
verifiable problems, as `lmforge grpo`). The critic (`value_model`) is a value head on the
policy's trunk, or a trunk of its own initialised from the reward model (InstructGPT) or from
the policy. Before and after training the held-out prompts are answered greedily and by
sampling (temperature 1, fixed seed): the reward model's mean score of both, the sampled
answers' KL to the starting policy, and greedy accuracy of the first reward function.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from safetensors.torch import load_file, save_file

from lmforge.config import ConfigError
from lmforge.data.preference import hold_out, parse_preference, parse_prompt, read_records
from lmforge.eval.accuracy import mean, stderr
from lmforge.eval.rlhf import answer, reward_model_scorer, sequence_kl
from lmforge.infer.engine import Sampling
from lmforge.model.load import load_pretrained
from lmforge.model.peft import LoRAConfig, apply_peft
from lmforge.model.quantize import Scheme
from lmforge.model.reward import RewardModel, load_reward_model
from lmforge.report import plot_series, record_run, write_report
from lmforge.rewards import load_rewards
from lmforge.rewards.tasks import make_problems
from lmforge.runtime import Runtime
from lmforge.stages.common import RunOptions, stop_ids, task_evaluators
from lmforge.stages.grpo import TaskConfig, step_time_breakdown
from lmforge.stages.policy import Peft, export_merged, load_policy, make_reference, policy_checkpointing
from lmforge.tokenizer.chat import render_prompt
from lmforge.train.loop import Checkpointing, LoopConfig, Periodic, train
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.objectives.ppo import ActorCritic, AdaptiveKL, PPOTargets, ppo_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.parallel import (Parallel, check_parallel, full_tensors, load_full_state_dict, wrap_model,
                                    writes_files)
from lmforge.train.rollout import RolloutConfig, RolloutSource

ValueModel = Literal["head", "reward", "policy"]


@dataclass
class PPOConfig(RunOptions):
    run_dir: str = "runs/ppo"  # where the policy, critic, metrics and report go
    model: str = ""  # the starting policy and KL reference: a model directory (an SFT model)
    tokenizer: str = ""  # tokenizer dir (default: the model dir)
    reward_model: str = ""  # an `lmforge rm` model directory: its score of each whole answer is a reward
    rewards: list[str] = field(default_factory=list)  # reward functions (names or module:function), added to it
    reward_weights: list[float] = field(default_factory=list)  # one per reward function, then the reward model's
    data: list[str] = field(default_factory=list)  # prompt or preference JSONL files; empty: `task`'s problems
    eval_data: list[str] = field(default_factory=list)  # held-out prompt files (default: a hash split of data)
    eval_percent: int = 10  # without eval_data: share of prompts held out (by a hash of the prompt)
    eval_prompts: int = 64  # held-out prompts answered before and after (0 = all)
    on_error: Literal["raise", "skip"] = "raise"  # malformed records: fail, or count and skip
    task: TaskConfig = field(default_factory=TaskConfig)  # verifiable problems, when `data` is empty
    value_model: ValueModel = "reward"  # critic: head (on the policy's trunk) | reward | policy (own trunk from it)
    gamma: float = 1.0  # discount per token (1: the episode is one answer)
    lam: float = 0.95  # GAE λ: bias (0) vs variance (1) of the advantage estimate
    whiten_advantages: bool = True  # zero mean, unit variance over each rollout's tokens
    clip_eps: float = 0.2  # policy ratio clip
    value_clip: float = 0.2  # how far a value may move from its rollout-time estimate per update
    vf_coef: float = 0.1  # weight of the value loss
    kl_coef: float = 0.05  # β: weight of the per-token KL penalty in the reward (the start, if adaptive)
    target_kl: float = 0.0  # adapt β towards this KL per answer (nats; Ziegler et al.); 0 = fixed β
    kl_horizon: int = 10_000  # adaptive β: completions over which it may change by ~20%
    ppo_epochs: int = 4  # passes over each rollout, each in a new random order of minibatches
    minibatch_size: int = 8  # completions per optimizer step (loop.grad_accum_steps splits it further)
    rollout: RolloutConfig = field(default_factory=lambda: RolloutConfig(
        group_size=1, prompts_per_batch=16, max_new_tokens=32))  # its micro-batching is set by the two above
    peft: Peft = "none"  # none = full fine-tuning | lora (also on a critic's own trunk)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    quantize: Scheme = "none"  # QLoRA: int8 | int4 frozen policy base under LoRA
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-5, warmup_steps=0, weight_decay=0.0,
                                                                   schedule="constant"))
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(max_steps=64, log_every_steps=1,
                                                                eval_every_steps=1000))
    parallel: Parallel = "ddp"  # with several processes (torchrun): ddp (whole replicas) | fsdp (FSDP2 shards)

    def __post_init__(self):
        check_parallel(self)


def ppo(cfg: PPOConfig) -> dict:
    _check(cfg)
    train_problems, held_out = _problems(cfg)  # bad data fails before a model is loaded
    reward_fns = load_rewards(cfg.rewards)
    rt = Runtime.setup(cfg.device, cfg.dtype, cfg.seed)
    run_dir = Path(cfg.run_dir)
    policy, tok = load_policy(cfg.model, cfg.tokenizer, cfg.peft, cfg.lora, rt, cfg.quantize)
    rm = _load_reward_model(cfg.reward_model, policy, rt) if cfg.reward_model else None
    ac = ActorCritic(policy, _critic(cfg, policy, rm, tok, rt))
    reference = make_reference(policy, "adapter" if cfg.peft != "none" else "copy")
    record_run(run_dir, cfg, rt, data_files=[Path(p) for p in cfg.data + cfg.eval_data])
    render = lambda ps: [render_prompt(tok, p["messages"]) for p in ps]  # noqa: E731
    pad_id, stops = tok.pad_id or 0, set(stop_ids(tok))
    score = reward_model_scorer(rm, rm.pad_id) if rm is not None else None
    held_out_prompts = render(held_out)
    evaluate = lambda: _evaluate(cfg, policy, tok, held_out_prompts, held_out, score, reward_fns,  # noqa: E731
                                 reference, stops, pad_id)
    before = evaluate()
    rt.print(f"ppo: {len(train_problems)} train / {len(held_out)} held-out prompts, critic: {cfg.value_model}, "
             f"peft: {cfg.peft}; before: {_describe(before)}")

    targets = PPOTargets(AdaptiveKL(cfg.kl_coef, cfg.target_kl, cfg.kl_horizon), cfg.gamma, cfg.lam,
                         cfg.whiten_advantages)
    rollout = replace(cfg.rollout, updates_per_rollout=cfg.ppo_epochs, micro_batch_size=cfg.minibatch_size,
                      shuffle=True)
    source = RolloutSource(policy, render(train_problems), train_problems, reward_fns, rollout,
                           decode=lambda ids: tok.decode(ids, skip_special=True), stop_ids=stops, pad_id=pad_id,
                           reward_weights=cfg.reward_weights or None, reference=reference, score_sequences=score,
                           critic=lambda x, y: ac.values(x), targets=targets,
                           seed=cfg.seed, rank=rt.rank, world_size=rt.world_size)
    log = MetricsLog(run_dir, cfg.tensorboard, cfg.wandb_project or None, rt.is_main)
    # Before the optimizer: FSDP2 shards policy and critic in place (the reference stays a whole copy).
    train_model = wrap_model(ac, rt, cfg.compile, cfg.parallel)
    optimizer = build_optimizer(ac, cfg.optim, rt.device, policy.config.hidden_size)
    # One optimizer step per minibatch (micro-batch of the rollout); loop.max_steps counts them.
    result = train(train_model, ppo_objective(cfg.clip_eps, cfg.value_clip, cfg.vf_coef),
                   source, optimizer, loop=cfg.loop, optim=cfg.optim, runtime=rt, log=log,
                   checkpoint=actor_critic_checkpointing(ac, tok, run_dir / "model", cfg.peft, cfg.model),
                   evaluators=([Periodic(cfg.loop.eval_every_steps, lambda step: _prefixed(evaluate()))]
                               if cfg.loop.eval_every_steps < cfg.loop.max_steps else [])
                   + task_evaluators(cfg.eval_tasks, policy, tok, cfg.loop.eval_every_steps, chat=True),
                   resume=cfg.resume)
    log.close()
    after = evaluate()
    rt.print(f"ppo after {result.step} steps: {_describe(after)} (before: {_describe(before)})")
    summary = {}
    if rt.is_main:
        if cfg.peft != "none":
            export_merged(policy, tok, run_dir / "merged", cfg.model)
        summary = _write_ppo_report(run_dir, cfg, result, before, after,
                                    {"train": len(train_problems), "held_out": len(held_out)})
    return summary


def _check(cfg: PPOConfig) -> None:
    if not cfg.reward_model and not cfg.rewards:
        raise ConfigError("ppo needs a reward: --reward_model DIR (an `lmforge rm` model directory) "
                          "and/or --rewards NAME ... (e.g. math, or module:function)")
    if cfg.value_model == "reward" and not cfg.reward_model:
        raise ConfigError("value_model=reward initialises the critic from the reward model, and none is given: "
                          "pass --reward_model, or use --value_model head | policy")
    r = cfg.rollout
    if r.updates_per_rollout != 1 or r.micro_batch_size or r.shuffle:
        raise ConfigError("ppo serves each rollout itself: set ppo_epochs and minibatch_size, not "
                          "rollout.updates_per_rollout, rollout.micro_batch_size or rollout.shuffle")
    rollout_size = r.prompts_per_batch * r.group_size
    if not 0 < cfg.minibatch_size <= rollout_size or cfg.ppo_epochs < 1:
        raise ConfigError(f"minibatch_size {cfg.minibatch_size} must be in 1..{rollout_size} (the rollout's "
                          f"completions) and ppo_epochs ({cfg.ppo_epochs}) at least 1")
    n_weights = len(cfg.rewards) + bool(cfg.reward_model)
    if cfg.reward_weights and len(cfg.reward_weights) != n_weights:
        raise ConfigError(f"reward_weights: {len(cfg.reward_weights)} given for {n_weights} rewards "
                          "(one per reward function, then one for the reward model)")


def _problems(cfg: PPOConfig) -> tuple[list[dict], list[dict]]:
    """(train, held-out) problems: {"messages": prompt, ...} from prompt files, or a task's."""
    if not cfg.data:
        t = cfg.task
        return (make_problems(t.name, t.train_problems, cfg.seed, "train", t.max_operand),
                make_problems(t.name, t.eval_problems, t.eval_seed, t.eval_split, t.max_operand))
    def read(paths: list[str]) -> list[_Prompt]:
        return [r for p in paths for r in read_records(p, _parse_prompt, cfg.on_error, "prompt")]

    train_records, held_records = hold_out(read(cfg.data), read(cfg.eval_data) if cfg.eval_data else None,
                                           cfg.eval_percent, lambda r: (), "prompts")
    held_records = list({json.dumps(r.prompt): r for r in held_records}.values())  # one per prompt
    if cfg.eval_prompts and len(held_records) > cfg.eval_prompts:
        held_records = random.Random(cfg.task.eval_seed).sample(held_records, cfg.eval_prompts)  # same for every seed
    if not train_records or not held_records:
        raise ConfigError(f"ppo: {len(train_records)} train / {len(held_records)} held-out prompts; need both "
                          "(give eval_data or raise eval_percent)")
    return [{"messages": r.prompt} for r in train_records], [{"messages": r.prompt} for r in held_records]


@dataclass
class _Prompt:
    prompt: list[dict]  # the conversation an answer follows (what hold_out keys on)


def _parse_prompt(record: dict) -> _Prompt:
    """A prompt record ({"prompt"} or {"messages"}), or a preference pair's prompt."""
    if "prompt" not in record and "messages" not in record and "chosen" in record:
        return _Prompt(parse_preference(record).prompt)
    return _Prompt(parse_prompt(record))


def _load_reward_model(path: str, policy, rt) -> RewardModel:
    rm = load_reward_model(path, rt.device).eval().requires_grad_(False)
    if rm.config.vocab_size != policy.config.vocab_size:
        raise ConfigError(f"reward model {path} has a vocabulary of {rm.config.vocab_size}, the policy "
                          f"{policy.config.vocab_size}: it must score the policy's own tokens (one tokenizer)")
    return rm


def _critic(cfg: PPOConfig, policy, rm: RewardModel | None, tok, rt) -> RewardModel:
    """The value model: a head on the policy's trunk, or its own trunk (from the reward model,
    as InstructGPT, or from the policy), LoRA-adapted when the policy is."""
    if cfg.value_model == "head":
        return RewardModel(policy, heads=1, pad_id=tok.pad_id or 0).to(rt.device)
    if cfg.value_model == "reward":
        critic = load_reward_model(cfg.reward_model, rt.device)
    elif cfg.value_model == "policy":
        critic = RewardModel(load_pretrained(cfg.model, rt.device)[0], heads=1, pad_id=tok.pad_id or 0).to(rt.device)
    else:
        raise ConfigError(f"unknown value_model {cfg.value_model!r} (head | reward | policy)")
    if not critic.config.tie_word_embeddings:  # a critic reads hidden states; its LM head is dead weight
        critic.trunk.lm_head.requires_grad_(False)
    critic.trunk = apply_peft(critic.trunk, cfg.peft, lora=cfg.lora)
    return critic


def actor_critic_checkpointing(ac: ActorCritic, tok, path: Path, peft: str, base_model: str = "") -> Checkpointing:
    """The policy as `policy_checkpointing` saves it (HF model or adapter), and beside it
    critic.safetensors: the critic's trainable tensors that are not the policy's (gathered
    when sharded: every rank saves and loads)."""
    policy = policy_checkpointing(ac.policy, tok, path, peft, base_model)
    shared = {id(p) for p in ac.policy.parameters()}
    own = lambda: full_tensors({n: p for n, p in ac.critic.named_parameters()  # noqa: E731
                                if p.requires_grad and id(p) not in shared})

    def save(d: Path) -> None:
        policy.save_model(d)
        tensors = own()
        if writes_files(ac):
            save_file(tensors, str(Path(d) / "critic.safetensors"))

    def load(d: Path) -> None:
        policy.load_model(d)
        load_full_state_dict(ac.critic, load_file(str(Path(d) / "critic.safetensors")), strict=False)

    return Checkpointing(path=Path(path), save_model=save, load_model=load)


def _evaluate(cfg: PPOConfig, policy, tok, prompts, problems, score, reward_fns, reference, stops, pad_id) -> dict:
    """Held-out answers: reward-model score (greedy and sampled), sampled KL, greedy accuracy
    (the first reward function's mean, as `lmforge grpo` reports it)."""
    n = cfg.rollout.max_new_tokens
    greedy = answer(policy, prompts, n, Sampling(temperature=0.0), stops, pad_id)
    sampled = answer(policy, prompts, n, Sampling(temperature=1.0), stops, pad_id, seed=cfg.seed + 1)
    kl = sequence_kl(policy, reference, prompts, sampled, pad_id).tolist()
    texts = [tok.decode(a, skip_special=True) for a in greedy]
    out = {"kl": mean(kl), "kl_stderr": stderr(kl), "sampled_tokens": mean([len(a) for a in sampled]),
           "n": len(prompts)}
    if score is not None:
        for name, answers in (("greedy", greedy), ("sampled", sampled)):
            scores = score([p + a for p, a in zip(prompts, answers)]).tolist()
            out |= {f"rm_score_{name}": mean(scores), f"rm_score_{name}_stderr": stderr(scores)}
    if reward_fns:
        for name, answers in (("", texts), ("_sampled", [tok.decode(a, skip_special=True) for a in sampled])):
            correct = [float(reward_fns[0](t, p)) for t, p in zip(answers, problems)]
            out |= {f"accuracy{name}": mean(correct), f"accuracy{name}_stderr": stderr(correct)}
    out["samples"] = [{"prompt": p["messages"][-1]["content"], "greedy": t} for p, t in zip(problems[:5], texts)]
    return out


def _prefixed(metrics: dict) -> dict:
    return {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, float)}


def _describe(m: dict) -> str:
    parts = []
    if "rm_score_greedy" in m:
        parts.append(f"reward-model score greedy {m['rm_score_greedy']:.3f} ± {m['rm_score_greedy_stderr']:.3f}, "
                     f"sampled {m['rm_score_sampled']:.3f} ± {m['rm_score_sampled_stderr']:.3f}")
    if "accuracy" in m:
        parts.append(f"accuracy greedy {m['accuracy']:.3f} ± {m['accuracy_stderr']:.3f}, "
                     f"sampled {m['accuracy_sampled']:.3f} ± {m['accuracy_sampled_stderr']:.3f}")
    return "; ".join(parts + [f"KL to the reference {m['kl']:.3f} ± {m['kl_stderr']:.3f} nats/answer"])


def _write_ppo_report(run_dir: Path, cfg: PPOConfig, result, before: dict, after: dict, prompts: dict) -> dict:
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r]
    timing = step_time_breakdown(rows, cfg.loop.grad_accum_steps)
    last = rows[-1] if rows else {}
    summary = {"step": result.step, "seed": cfg.seed, "prompts": prompts, "value_model": cfg.value_model,
               "before": before, "after": after, "final_kl_coef": last.get("train/kl_coef"),
               "final_train_kl": last.get("train/kl"), **timing}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    share = timing["generate_share"]
    r = cfg.rollout
    lines = [f"- policy: {cfg.model} ({cfg.peft}); reward: "
             + ", ".join(([f"reward model {cfg.reward_model}"] if cfg.reward_model else []) + cfg.rewards)
             + f"; critic: {cfg.value_model}",
             f"- {result.step} minibatch steps: rollouts of {r.prompts_per_batch} prompts × {r.group_size}, "
             f"{cfg.ppo_epochs} epochs of minibatches of {cfg.minibatch_size}; "
             f"β {cfg.kl_coef}" + (f" adaptive to KL {cfg.target_kl}" if cfg.target_kl > 0 else " fixed")
             + f", γ {cfg.gamma}, λ {cfg.lam}",
             f"- **held-out ({prompts['held_out']} prompts) before -> after**: {_describe(before)} -> "
             f"{_describe(after)}",
             f"- time: {timing['step_seconds_total']:.1f} s training, {100 * share:.0f}% of it generating"
             if share is not None else "- no steps run"]
    if after.get("samples"):
        lines += ["", "| prompt | greedy answer after |", "|---|---|",
                  *[f"| {s['prompt']} | {s['greedy']!r} |" for s in after["samples"]]]
    steps = [r["step"] for r in rows]
    series = lambda key: (steps, [r.get(key, 0.0) for r in rows])  # noqa: E731
    plots = {"reward.png": plot_series({"rollout reward": series("train/reward_mean")}, "step", "reward"),
             "kl.png": plot_series({"KL per answer": series("train/kl"), "β": series("train/kl_coef")},
                                   "step", "nats")}
    write_report(run_dir, "PPO report", lines, plots)
    return summary
