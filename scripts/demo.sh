#!/usr/bin/env bash
# The whole lmforge pipeline on the embedded default: raw web pages -> chat model, on CPU.
# Each line is one stage; every stage writes its outputs (and a report) under runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
start=$(date +%s)
stage() { printf '\n\033[1m== %s (%ss elapsed)\033[0m\n' "$1" "$(( $(date +%s) - start ))"; }

stage "1. curate: bundled WARC of real web pages -> clean, deduplicated documents"
lmforge curate --input data/web/sample.warc.gz --output "$OUT/curated"

stage "2. tokenizer: byte-level BPE with chat tokens, on the bundled corpus + curated pages"
lmforge tokenizer train --input data/corpus "$OUT/curated" --output "$OUT/tokenizer" --vocab_size 8192

stage "3. tokenize: documents -> memory-mapped token shards (train/val)"
lmforge tokenize --input data/corpus "$OUT/curated" --tokenizer "$OUT/tokenizer" --output "$OUT/shards"

stage "4. pretrain: a ~5M-parameter base model (samples are printed before and after)"
lmforge pretrain configs/tiny.yaml --run_dir "$OUT/pretrain" --data.shards "$OUT/shards"

stage "5. sample from the base model"
lmforge generate "$OUT/pretrain/model" --prompt "Call me Ishmael." --max_new_tokens 48

stage "6. SFT: teach the base model to answer in chat format and stop (full fine-tuning)"
lmforge sft configs/sft_tiny.yaml --run_dir "$OUT/sft" --model "$OUT/pretrain/model"

stage "7. reward model on preference pairs (Bradley–Terry): held-out pair accuracy vs the SFT model's own preference"
lmforge rm configs/rm_tiny.yaml --run_dir "$OUT/rm" --model "$OUT/sft/model"

stage "8. RLHF: PPO with a critic against that reward model, KL-leashed to the SFT model"
lmforge ppo configs/ppo_tiny.yaml --run_dir "$OUT/ppo" --model "$OUT/sft/model" --reward_model "$OUT/rm/model"

stage "9. DPO on the same pairs, no reward model (reference log-probs precomputed once)"
lmforge dpo configs/dpo_tiny.yaml --run_dir "$OUT/dpo" --model "$OUT/sft/model"

stage "10. GRPO from the SFT model on a verifiable task (which number is larger): held-out accuracy before and after"
# From SFT, not from DPO: DPO on the arithmetic pairs can pull comparison answers into the
# "a + b = c" form, and then hardly any sampled answer earns a reward (bench/RESULTS.md).
lmforge grpo configs/grpo_tiny.yaml --run_dir "$OUT/grpo" --model "$OUT/sft/model"

stage "11. evaluate each post-trained model on the same held-out tasks (never trained on)"
for s in sft ppo dpo grpo; do
  lmforge eval "$OUT/$s/model" --task data/eval/compare_test.jsonl data/eval/arithmetic_test.jsonl \
    --max_new_tokens 12 --output "$OUT/eval/$s"
done

stage "12. token shift: which of each aligned model's answer tokens the base model would choose itself"
for s in sft dpo grpo; do
  lmforge analyze token-shift "$OUT/pretrain/model" "$OUT/$s/model" --prompts data/eval/chat_prompts.txt --output "$OUT/token_shift/$s"
done

stage "13. chat with the final model (it stops by itself at <|im_end|>)"
lmforge chat "$OUT/grpo/model" --message "Which is larger, 34 or 92?" --temperature 0

stage "14. report card: every stage, the eval table and token shift in one page"
lmforge report "$OUT"
echo "Models (Hugging Face format): $OUT/*/model    Report card: $OUT/report.md"
