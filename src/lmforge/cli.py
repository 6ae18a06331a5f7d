"""The `lmforge` command: parse the stage's typed config, then call one stage function.

    lmforge pretrain configs/tiny.yaml --optim.lr 3e-4
    lmforge tokenizer train --input data/corpus --vocab_size 8192
    lmforge generate runs/tiny/model --prompt "Once upon"

Each stage is registered below as (module, config class, function, positional fields).
Leading `*.yaml` arguments are recipes; other leading positionals fill the listed fields
(e.g. `lmforge convert SRC DST`); `--dotted.key value` overrides any field.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import typing

from lmforge.config import ConfigError, field_comments, load_config
from lmforge.errors import InputError

# command -> (module, config class, stage function, positional field names, one-line help)
STAGES: dict[str, tuple[str, str, str, tuple[str, ...], str]] = {
    "curate": ("lmforge.stages.curate", "CurateConfig", "curate", (),
               "raw web pages (WARC/HTML/JSONL) -> clean, deduplicated documents"),
    "tokenizer train": ("lmforge.stages.tokenizer", "TokenizerTrainConfig", "train_tokenizer",
                        (), "train a byte-level BPE tokenizer with chat tokens"),
    "tokenize": ("lmforge.stages.tokenize", "TokenizeConfig", "tokenize", (),
                 "documents -> memory-mapped token shards (train/val)"),
    "pretrain": ("lmforge.stages.pretrain", "PretrainConfig", "pretrain", (),
                 "pretrain a base model on token shards"),
    "dpo": ("lmforge.stages.dpo", "DPOConfig", "dpo", (),
            "align a policy to preference pairs (DPO / IPO / SimPO / ORPO; full or LoRA)"),
    "kto": ("lmforge.stages.kto", "KTOConfig", "kto", (),
            "align a policy to unpaired desirable / undesirable completions (KTO; full or LoRA)"),
    "spin": ("lmforge.stages.spin", "SPINConfig", "spin", (),
             "self-play fine-tuning (SPIN): an SFT model against its own answers, iterated"),
    "rm": ("lmforge.stages.rm", "RMConfig", "reward_model", (),
           "train a reward model on preference pairs (Bradley–Terry; ensemble; full or LoRA)"),
    "label": ("lmforge.stages.label", "LabelConfig", "label", (),
              "choose answer pairs to label (double Thompson sampling on an ensemble RM), label, refit"),
    "grpo": ("lmforge.stages.grpo", "GRPOConfig", "grpo", (),
             "online RL with verifiable rewards (GRPO) on generated tasks"),
    "ppo": ("lmforge.stages.ppo", "PPOConfig", "ppo", (),
            "RLHF with a critic (PPO): reward model and/or verifiable rewards, KL to the SFT model"),
    "generate": ("lmforge.stages.generate", "GenerateConfig", "generate", ("model",),
                 "sample from a model (KV cache, streaming)"),
    "sft": ("lmforge.stages.sft", "SFTConfig", "sft", (),
            "supervised fine-tuning on chat data: full, LoRA, Adapter or Prompt Tuning"),
    "convert": ("lmforge.stages.convert", "ConvertConfig", "convert", ("src", "dst"),
                "HF directory / .gguf / LoRA adapter / hub name -> HF model directory or .gguf file"),
    "check": ("lmforge.stages.check", "CheckConfig", "check", ("model",),
              "chat-contract pre-flight: special tokens, stop token, masks, prefixes"),
    "eval": ("lmforge.stages.eval", "EvalConfig", "evaluate", ("model",),
             "score a model on tasks: multiple choice, generative, bits per byte, code"),
    "analyze token-shift": ("lmforge.stages.analyze", "TokenShiftConfig", "analyze_token_shift",
                            ("base", "aligned"), "which of an aligned model's tokens its base would choose (URIAL)"),
    "analyze knowledge": ("lmforge.stages.analyze", "KnowledgeConfig", "analyze_knowledge", ("model",),
                          "label closed-book questions HighlyKnown ... Unknown for a model (Gekhman et al.)"),
    "experiment dedup": ("lmforge.experiments.dedup", "DedupExperimentConfig", "run_dedup", (),
                         "does deduplicated pretraining data give a better model at fixed compute? (Lee et al. 2022)"),
    "experiment frequency-imprint": ("lmforge.experiments.frequency", "FrequencyExperimentConfig",
                                     "run_frequency_imprint", (),
                                     "is a cipher frequent in pretraining decoded better after the same fine-tuning? "
                                     "(McCoy et al. 2023)"),
    "experiment long-sft": ("lmforge.experiments.long_sft", "LongSFTExperimentConfig", "run_long_sft", (),
                            "do the k longest SFT examples beat k random ones, and the whole pool, at the same "
                            "budget? (LIMA; Zhao et al. 2024)"),
    "experiment paraphrase-knowledge": ("lmforge.experiments.paraphrase", "ParaphraseExperimentConfig",
                                        "run_paraphrase_knowledge", (),
                                        "are facts read in several wordings extractable by questions, and in one "
                                        "not? (Allen-Zhu & Li 2023)"),
    "experiment rl-reasoning": ("lmforge.experiments.rl_reasoning", "RLReasoningExperimentConfig",
                                "run_rl_reasoning", (),
                                "does GRPO with a verifiable reward raise held-out accuracy and lengthen the "
                                "reasoning? (DeepSeek-R1)"),
    "experiment suppression": ("lmforge.experiments.suppression", "SuppressionExperimentConfig", "run_suppression",
                               (), "does DPO suppress a learnt word class rather than erase it: neurons, probe, "
                                   "relearning vs a model that never learned it? (Lee et al. 2024)"),
    "experiment token-shift": ("lmforge.experiments.token_shift", "TokenShiftExperimentConfig", "run_token_shift",
                               (), "do SFT, DPO and GRPO keep more of their base's token choices than a second base "
                                   "model does? (URIAL, Lin et al. 2023)"),
    "experiment unknown-knowledge": ("lmforge.experiments.unknown_knowledge", "UnknownKnowledgeExperimentConfig",
                                     "run_unknown_knowledge", (),
                                     "does fine-tuning on Unknown facts lower held-out accuracy, and does IDK data "
                                     "cut wrong answers? (Gekhman et al. 2024)"),
    "report": ("lmforge.stages.report", "ReportConfig", "report_card", ("run_root",),
               "one report card for every stage under a run root (reports, eval and token-shift tables)"),
    "lineage": ("lmforge.stages.lineage", "LineageConfig", "lineage", ("run_dir",),
                "a run's inputs, and theirs, back to the raw pages (from each artifact's own record)"),
    "chat": ("lmforge.stages.chat", "ChatConfig", "chat", ("model",),
             "chat with a model in the terminal (streaming, /reset, /system)"),
    "serve": ("lmforge.stages.serve", "ServeConfig", "serve", ("models",) * 8,  # up to 8 models
              "OpenAI-compatible API server with continuous batching (one or more models)"),
    "data distill": ("lmforge.synth.distill", "DistillConfig", "distill", (),
                     "a teacher answers a prompt set -> chat JSONL (verifier / length filters; resumable)"),
    "data judge": ("lmforge.synth.feedback", "JudgeConfig", "judge_pairs", (),
                   "RLAIF: a judge compares a policy's answers under a constitution, both orders -> pairs"),
    "data best-of-n": ("lmforge.synth.best_of_n", "BestOfNConfig", "best_of_n", (),
                       "rejection sampling: best of N by a verifier, reward model or judge -> chat JSONL"),
    "data select": ("lmforge.synth.select", "SelectConfig", "select", (),
                    "choose k of an SFT set: longest, reward model, random; MinHash near-dup removal"),
    "data idk": ("lmforge.synth.idk", "IDKConfig", "idk", (),
                 "\"I don't know\" SFT data: refusals for the questions `analyze knowledge` finds Unknown"),
    "data augment": ("lmforge.synth.augment", "AugmentConfig", "augment", (),
                     "each fact document k ways (sentence reorder or teacher paraphrase) for pretraining"),
    "data textbook": ("lmforge.synth.textbook", "TextbookConfig", "textbook", (),
                      "a teacher writes textbook passages + exercises per topic -> documents for tokenize"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = _match_command(argv)
    if command is None:
        _print_usage()
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module_name, config_name, func_name, positional, _ = STAGES[command]
    module = importlib.import_module(module_name)
    config_cls = getattr(module, config_name)
    if "-h" in rest or "--help" in rest:
        _print_config_help(command, config_cls)
        return 0
    try:
        cfg = load_config(config_cls, _positionals_to_overrides(rest, positional))
        getattr(module, func_name)(cfg)
    except (ConfigError, InputError) as e:  # the user's to fix: the message, not a traceback
        print(f"lmforge {command}: {e}", file=sys.stderr)
        return 2
    return 0


def _match_command(argv: list[str]) -> tuple[str | None, list[str]]:
    for words in (2, 1):
        name = " ".join(argv[:words])
        if len(argv) >= words and name in STAGES:
            return name, argv[words:]
    return None, argv


def _positionals_to_overrides(args: list[str], positional: tuple[str, ...]) -> list[str]:
    """Turn leading positionals (other than YAML recipes) into `--field value` pairs."""
    recipes, overrides, names = [], [], list(positional)
    i = 0
    while i < len(args) and not args[i].startswith("--"):
        if args[i].endswith((".yaml", ".yml")):
            recipes.append(args[i])
        elif names:
            overrides += [f"--{names.pop(0)}", args[i]]
        else:
            raise ConfigError(f"unexpected argument {args[i]!r}")
        i += 1
    return recipes + overrides + args[i:]


def _print_usage() -> None:
    print("usage: lmforge COMMAND [recipe.yaml ...] [--key value ...]\n\ncommands:")
    for name, (*_, help_text) in STAGES.items():
        print(f"  {name:18s} {help_text}")
    print("\n`lmforge COMMAND --help` lists the command's config fields.")


def _print_config_help(command: str, cls: type, prefix: str = "") -> None:
    if not prefix:
        print(f"usage: lmforge {command} [recipe.yaml ...] [--key value ...]\n\nfields:")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            _print_config_help(command, hint, f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        doc = field_comments(cls).get(f.name, "")
        print(f"  --{prefix}{f.name:28s} {default!r:>14}  {doc}")


if __name__ == "__main__":
    raise SystemExit(main())
