"""lmforge's preference losses against TRL's own code on one fixed batch: DPO (sigmoid), IPO,
SimPO, ORPO, KTO and the reward model's Bradley–Terry loss, in fp32 on CPU.

    python bench/trl_parity.py [--model runs/models/smollm2/hf] [--pairs 4] [--seed 0]

The policy is a Llama checkpoint directory: SmolLM2-135M-Instruct when
scripts/fetch_smollm2.sh has fetched it, else a tiny random `LlamaForCausalLM` saved to a
temporary directory. The reference is the policy with seeded noise on every weight (a
reference equal to the policy would make every DPO log-ratio 0), saved beside it. Each
side reads both directories with its own loader and scores the same token ids with its own
forward: lmforge's `Transformer` (`lmforge.model.hub.load_model`, what `load_pretrained`
runs for a directory) and transformers' `LlamaForCausalLM`.

TRL's losses come from TRL's own methods, called on a stub `self` holding only the
attributes each reads (building a trainer needs a tokenizer and dataset pipeline that is
beside the point): `DPOTrainer._compute_loss` (loss_type sigmoid and ipo) and
`KTOTrainer._compute_loss` (TRL 1.x runs its forward inside these, on the HF models),
`CPOTrainer.cpo_loss` (loss_type="simpo", cpo_alpha=0: SimPO without CPO's NLL term) and
`ORPOTrainer.odds_ratio_loss` on log-probs from TRL's `get_batch_logps` of the HF logits.
ORPO's NLL term differs by definition (TRL: prompt and response tokens, averaged over the
batch's tokens; lmforge and the paper: the response, averaged per response), so the odds-ratio
term is compared and both full losses are reported. KTO's mismatched (KL) sequences are
lmforge's, handed to TRL as its `KL_*` inputs.

The reward model is the checkpoint's trunk under a seeded score head, written by lmforge's
`save_reward_model` and read back by each side: `load_reward_model` and transformers'
`AutoModelForSequenceClassification` (`LlamaForSequenceClassification`). TRL's loss is
`RewardTrainer.compute_loss` on its own collator's batch (`DataCollatorForPreference`),
without and with a margin (TRL reads a per-pair `margin` column; lmforge's is one constant,
handed to TRL as that constant in every row). TRL's `center_rewards_coefficient` (an extra
c·mean((r_c + r_r)²), Eisenstein et al. 2023) is off by default and absent from lmforge, which
follows InstructGPT (plain Bradley–Terry) and Llama 2 (the margin).

Prints JSON: each loss on both sides, their absolute difference, the largest difference of
any per-sequence log-prob and of any reward-model score.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from types import MethodType, SimpleNamespace

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to download: the models are local

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = ROOT / "runs" / "models" / "smollm2" / "hf"
HYPER = {"beta": 0.1, "ipo_beta": 0.1, "simpo_beta": 2.0, "simpo_gamma": 0.5, "orpo_lambda": 0.1,
         "kto_beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.33, "rm_margin": 0.5}


def make_models(model_dir: Path | None, work_dir: Path, seed: int = 0) -> dict:
    """{"policy", "reference"}: each as {"ours": Transformer, "hf": LlamaForCausalLM}, fp32, eval mode."""
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from lmforge.model.hub import load_model

    if model_dir is None:
        torch.manual_seed(seed)
        model_dir = work_dir / "policy"
        LlamaForCausalLM(LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                     max_position_embeddings=128)).save_pretrained(model_dir)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in reference.parameters():  # shared (tied) tensors are visited once
            p.add_(0.2 * p.float().std() * torch.randn(p.shape, generator=g))
    reference.save_pretrained(work_dir / "reference")
    return {name: {"ours": load_model(path).eval(),
                   "hf": AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()}
            for name, path in (("policy", model_dir), ("reference", work_dir / "reference"))}


def fixed_pairs(vocab_size: int, n: int = 4, seed: int = 0):
    """n pairs of random tokens: a prompt of 3-7 tokens, responses of 2-9 (lengths differ, so
    padding and the per-token averages are exercised)."""
    from lmforge.data.preference import RenderedPair

    g = torch.Generator().manual_seed(seed)
    draw = lambda lo, hi: torch.randint(3, vocab_size, (int(torch.randint(lo, hi, (1,), generator=g)),),  # noqa: E731
                                        generator=g).tolist()
    pairs = []
    for _ in range(n):
        prompt, chosen, rejected = draw(3, 8), draw(2, 10), draw(2, 10)
        pairs.append(RenderedPair(prompt + chosen, [False] * len(prompt) + [True] * len(chosen),
                                  prompt + rejected, [False] * len(prompt) + [True] * len(rejected)))
    return pairs


def kto_examples(pairs, seed: int = 0):
    """Each pair as a desirable and an undesirable example, with lmforge's mismatched sequences."""
    from lmforge.data.kto import RenderedExample, with_mismatched

    examples = [RenderedExample(ids, mask, desirable) for p in pairs
                for ids, mask, desirable in ((p.chosen_ids, p.chosen_mask, True),
                                             (p.rejected_ids, p.rejected_mask, False))]
    return with_mismatched(examples, max_len=10_000, seed=seed)


@torch.no_grad()
def lmforge_losses(models: dict, pairs, examples) -> dict:
    from lmforge.data.kto import collate_examples
    from lmforge.data.preference import collate_pairs
    from lmforge.train.logprobs import label_mask, masked_mean, masked_sum, policy_logprobs
    from lmforge.train.objectives.dpo import dpo_objective
    from lmforge.train.objectives.kto import kto_objective

    policy, ref_model = models["policy"]["ours"], models["reference"]["ours"]
    reference = lambda x, y: policy_logprobs(ref_model, x, y)  # noqa: E731
    batch = collate_pairs(pairs, pad_id=0)
    h = HYPER
    loss = lambda **kw: float(dpo_objective(reference=reference, **kw)(policy, batch)[0])  # noqa: E731
    x = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])
    y = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])
    mean_logps = masked_mean(policy_logprobs(policy, x, y), label_mask(y))
    chosen_mean = mean_logps[:len(pairs)]
    orpo = loss(loss_type="orpo", orpo_lambda=h["orpo_lambda"])
    return {"dpo": loss(beta=h["beta"]),
            "ipo": loss(beta=h["ipo_beta"], loss_type="ipo"),
            "simpo": loss(beta=h["simpo_beta"], loss_type="simpo", simpo_gamma=h["simpo_gamma"]),
            "orpo_odds_ratio": orpo - float(-chosen_mean.mean()),  # the loss less its NLL term
            "orpo_full": orpo,
            "kto": float(kto_objective(h["kto_beta"], h["desirable_weight"], h["undesirable_weight"], reference)(
                policy, collate_examples(examples, pad_id=0))[0]),
            "sequence_logps": {name: masked_sum(policy_logprobs(m["ours"], x, y), label_mask(y))
                               for name, m in models.items()}}


def _padded(seqs, masks, pad_id: int = 0) -> dict:
    """TRL's collated form: right-padded input_ids, attention_mask, completion_mask."""
    T = max(map(len, seqs))
    out = {k: torch.full((len(seqs), T), pad_id if k == "input_ids" else 0, dtype=torch.long)
           for k in ("input_ids", "attention_mask", "completion_mask")}
    for i, (seq, mask) in enumerate(zip(seqs, masks)):
        out["input_ids"][i, :len(seq)] = torch.tensor(seq)
        out["attention_mask"][i, :len(seq)] = 1
        out["completion_mask"][i, :len(seq)] = torch.tensor(mask, dtype=torch.long)
    return out


def _stub(model, ref_model, **attributes) -> SimpleNamespace:
    """The `self` TRL's loss methods read: an accelerator that gathers nothing (one process),
    metric buffers, and the trainer's settings."""
    same = lambda x: x  # noqa: E731
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather=same, gather_for_metrics=same,
                                  unwrap_model=same)
    return SimpleNamespace(model=model, ref_model=ref_model, accelerator=accelerator,
                           args=SimpleNamespace(gradient_checkpointing_kwargs=None),
                           _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
                           _total_train_tokens=0, _tp_size=1, aux_loss_enabled=False, **attributes)


@torch.no_grad()
def trl_losses(models: dict, pairs, examples) -> dict:
    from trl.trainer.utils import add_fused_lm_head

    policy, ref_model = models["policy"]["hf"], models["reference"]["hf"]
    for model in (policy, ref_model):
        if not getattr(model, "_lmforge_fused", False):  # TRL patches forward; once per model
            add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
            model._lmforge_fused = True
    inputs = _padded([p.chosen_ids for p in pairs] + [p.rejected_ids for p in pairs],
                     [p.chosen_mask for p in pairs] + [p.rejected_mask for p in pairs])
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    return {"dpo": _trl_dpo(policy, ref_model, inputs, "sigmoid", HYPER["beta"]),
            "ipo": _trl_dpo(policy, ref_model, inputs, "ipo", HYPER["ipo_beta"]),
            **_trl_simpo_orpo(policy, inputs, labels),
            **_trl_kto(policy, ref_model, examples),
            "sequence_logps": {name: _hf_sequence_logps(m["hf"], inputs["input_ids"], labels)
                               for name, m in models.items()}}


def _trl_dpo(policy, ref_model, inputs: dict, loss_type: str, beta: float) -> float:
    from trl import DPOTrainer

    trainer = _stub(policy, ref_model, beta=beta, loss_types=[loss_type], loss_weights=[1.0], ld_alpha=None,
                    precompute_ref_logps=False, f_divergence_type="reverse_kl", label_smoothing=0.0,
                    use_weighting=False)
    return float(DPOTrainer._compute_loss(trainer, policy, inputs, False))


def _trl_simpo_orpo(policy, inputs: dict, labels: torch.Tensor) -> dict:
    """CPO's SimPO loss and ORPO's odds-ratio term (TRL's older trainers) on log-probs averaged
    per response by TRL's get_batch_logps from the HF logits; ORPOTrainer's NLL for reference."""
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer

    logits = policy(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    chosen, rejected = CPOTrainer.get_batch_logps(logits, labels, average_log_prob=True).chunk(2)
    accelerator = SimpleNamespace(device=torch.device("cpu"))
    cpo = SimpleNamespace(beta=HYPER["simpo_beta"], simpo_gamma=HYPER["simpo_gamma"], label_smoothing=0.0,
                          loss_type="simpo", alpha=0.0, accelerator=accelerator)
    odds_ratio = -ORPOTrainer.odds_ratio_loss(SimpleNamespace(beta=HYPER["orpo_lambda"], accelerator=accelerator),
                                              chosen, rejected)[0].mean()
    # ORPOTrainer's NLL: cross-entropy over every attended token of the chosen sequences.
    B = len(chosen)
    nll_labels = inputs["input_ids"][:B].masked_fill(inputs["attention_mask"][:B] == 0, -100)
    nll = torch.nn.functional.cross_entropy(logits[:B, :-1].flatten(0, 1), nll_labels[:, 1:].flatten())
    return {"simpo": float(CPOTrainer.cpo_loss(cpo, chosen, rejected)[0].mean()),
            "orpo_odds_ratio": float(odds_ratio), "orpo_full": float(nll + odds_ratio)}


def _trl_kto(policy, ref_model, examples) -> dict:
    """KTOTrainer's loss, with lmforge's mismatched sequences as its KL_* inputs; and its z0."""
    from trl import KTOTrainer

    inputs = _padded([e.ids for e in examples], [e.mask for e in examples])
    inputs.update({f"KL_{k}": v for k, v in _padded([e.kl_ids for e in examples],
                                                   [e.kl_mask for e in examples]).items()},
                  label=torch.tensor([e.desirable for e in examples]))
    trainer = _stub(policy, ref_model, calculate_KL=True, precompute_ref_logps=False, loss_type="kto",
                    beta=HYPER["kto_beta"], desirable_weight=HYPER["desirable_weight"],
                    undesirable_weight=HYPER["undesirable_weight"])
    trainer._compute_kl_logps = MethodType(KTOTrainer._compute_kl_logps, trainer)
    loss = float(KTOTrainer._compute_loss(trainer, policy, inputs, False))
    return {"kto": loss, "kto_z0": trainer._metrics["eval"]["kl"][-1]}


def _hf_sequence_logps(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed log-probs of the labelled tokens from plain HF logits (no TRL code involved)."""
    targets = labels[:, 1:]
    logps = torch.log_softmax(model(input_ids=input_ids).logits[:, :-1].float(), -1)
    return logps.gather(-1, targets.clamp(min=0)[..., None])[..., 0].masked_fill(targets == -100, 0).sum(-1)


def make_reward_models(model_dir: Path, work_dir: Path, seed: int = 0) -> dict:
    """{"ours": RewardModel, "hf": LlamaForSequenceClassification}, fp32, eval mode: the
    checkpoint's trunk under a seeded score head, saved by lmforge and loaded by each side."""
    from transformers import AutoModelForSequenceClassification

    from lmforge.model.hub import load_model
    from lmforge.model.reward import RewardModel, load_reward_model, save_reward_model

    torch.manual_seed(seed)
    save_reward_model(RewardModel(load_model(model_dir), heads=1, pad_id=0), work_dir / "reward_model")
    return {"ours": load_reward_model(work_dir / "reward_model").eval(),
            "hf": AutoModelForSequenceClassification.from_pretrained(work_dir / "reward_model",
                                                                     dtype=torch.float32).eval()}


@torch.no_grad()
def lmforge_rm_losses(rm, pairs) -> dict:
    from lmforge.data.preference import collate_shared_prompt
    from lmforge.train.objectives.reward import pair_scores, reward_objective

    batch = collate_shared_prompt(pairs, pad_id=rm.pad_id)  # the prompt once per pair; TRL's rows repeat it
    return {"reward_bt": float(reward_objective()(rm, batch)[0]),
            "reward_bt_margin": float(reward_objective(margin=HYPER["rm_margin"])(rm, batch)[0]),
            "reward_scores": torch.cat(pair_scores(rm, batch))[:, 0]}


@torch.no_grad()
def trl_rm_losses(model, pairs, pad_id: int = 0) -> dict:
    """RewardTrainer.compute_loss on its collator's batch, without and with a margin column."""
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    collate = DataCollatorForPreference(pad_token_id=pad_id)
    rows = [{"chosen_ids": p.chosen_ids, "rejected_ids": p.rejected_ids} for p in pairs]
    trainer = _stub(model, None)
    trainer.args = SimpleNamespace(center_rewards_coefficient=None)  # TRL's default
    loss = lambda rows: float(RewardTrainer.compute_loss(trainer, model, collate(rows)))  # noqa: E731
    inputs = collate(rows)
    return {"reward_bt": loss(rows),
            "reward_bt_margin": loss([dict(r, margin=HYPER["rm_margin"]) for r in rows]),
            "reward_scores": model(input_ids=inputs["input_ids"],
                                   attention_mask=inputs["attention_mask"]).logits[:, 0]}


def compare(ours: dict, theirs: dict) -> dict:
    """Per loss: both values and |difference|; the largest per-sequence log-prob difference."""
    losses = {k: {"lmforge": ours[k], "trl": theirs[k], "abs_diff": abs(ours[k] - theirs[k])}
              for k in ("dpo", "ipo", "simpo", "orpo_odds_ratio", "kto", "reward_bt", "reward_bt_margin",
                        "orpo_full")}
    logps_diff = max(float((ours["sequence_logps"][k] - theirs["sequence_logps"][k]).abs().max())
                     for k in ours["sequence_logps"])
    scores_diff = float((ours["reward_scores"] - theirs["reward_scores"]).abs().max())
    return {"losses": losses, "sequence_logps_max_abs_diff": logps_diff, "reward_scores_max_abs_diff": scores_diff,
            "kto_z0": theirs["kto_z0"]}


def run(model_dir: Path | None, n_pairs: int = 4, seed: int = 0) -> dict:
    with tempfile.TemporaryDirectory() as work:
        models = make_models(model_dir, Path(work), seed)
        pairs = fixed_pairs(models["policy"]["hf"].config.vocab_size, n_pairs, seed)
        examples = kto_examples(pairs, seed)
        ours, theirs = lmforge_losses(models, pairs, examples), trl_losses(models, pairs, examples)
        reward_models = make_reward_models(model_dir or Path(work) / "policy", Path(work), seed)
        ours.update(lmforge_rm_losses(reward_models["ours"], pairs))
        theirs.update(trl_rm_losses(reward_models["hf"], pairs))
        return compare(ours, theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(SMOLLM2) if SMOLLM2.exists() else "",
                        help="a Llama HF directory (default: SmolLM2 if fetched, else a tiny random model)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "bench"))
    from common import Meta

    meta = Meta(["torch", "transformers", "trl"])
    result = run(Path(args.model) if args.model else None, args.pairs, args.seed)
    meta.add(model=args.model or "tiny random LlamaForCausalLM", hyperparameters=HYPER)
    print(meta.dump(result))


if __name__ == "__main__":
    main()
