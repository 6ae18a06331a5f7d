#!/usr/bin/env bash
# Every GPU measurement the open issues ask for, in parts that each fit in one 10-minute
# call on a lent GPU machine, from a clean checkout with no installs (its python3 has torch,
# transformers, peft, tokenizers, tiktoken, safetensors; lmforge runs from src/).
# Each benchmark's JSON goes to $OUT/<name>.json (default runs/bench-gpu/), its log beside.
#
#   bash bench/gpu_suite.sh check      # CUDA correctness: tests/test_cuda.py (skipped in CI) + CPU suites
#   bash bench/gpu_suite.sh pretrain 12   # issue 6: MFU at d12 (then 20), ours vs transformers, both compiled
#   bash bench/gpu_suite.sh pretrain_variants 12   # ours only: compiled + Muon, eager
#   bash bench/gpu_suite.sh generate   # issue 6: d20 decode, batch 1/64, eager and compiled vs transformers
#   bash bench/gpu_suite.sh sft        # issue 4: SmolLM2-shape full FT vs LoRA, ours vs transformers+peft
#   bash bench/gpu_suite.sh sft_compile     # the same, every mode torch.compiled
#   bash bench/gpu_suite.sh sft_checkpoint  # LoRA ours vs peft, compiled, activation checkpointing on both
#   bash bench/gpu_suite.sh grpo       # issue 5: GRPO on SmolLM2-135M-Instruct (needs the model, below)
#
# Comparisons run REPEATS (default 3) processes per side, interleaved (bench/common.py), and
# report medians with min/max; ours-only variants run VARIANT_REPEATS (default 1). Each
# process pays its own start-up and compile, so a part takes about REPEATS x the old one:
# lower REPEATS (e.g. REPEATS=2) if a part does not fit in one call.
#
# The grpo part needs SmolLM2's GGUF (98 MB, over one call's 64 MiB carry limit) and the
# gguf package: `bash bench/gpu_suite.sh stage` (here, not there) writes runs/gguf.part.aa/ab
# and runs/pylib; then, in two calls while the machine stays warm:
#   call 1 (carry runs/gguf.part.aa runs/pylib):  mkdir -p /root/cache && cp runs/gguf.part.aa /root/cache/
#   call 2 (carry runs/gguf.part.ab runs/pylib):  cat /root/cache/gguf.part.aa runs/gguf.part.ab > /root/cache/smollm2.gguf
#                                      && SMOLLM2=/root/cache/smollm2.gguf bash bench/gpu_suite.sh grpo
set -uo pipefail
cd "$(dirname "$0")/.."
# runs/pylib: pure-Python packages the machine lacks, carried in (pip install --no-deps
# --target runs/pylib gguf): the GGUF reader for SmolLM2 and the GGUF tests.
export PYTHONPATH="$PWD/src:$PWD:$PWD/runs/pylib${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-runs/bench-gpu}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
R="${REPEATS:-3}"
VR="${VARIANT_REPEATS:-1}"

# The last JSON object a log holds (benchmarks print one at the end, some over several lines).
LAST_JSON='
import json, sys
text = open(sys.argv[1]).read()
starts = [i for i, c in enumerate(text) if c == "{" and (i == 0 or text[i - 1] == "\n")]
for i in reversed(starts):
    try:
        print(json.dumps(json.JSONDecoder().raw_decode(text[i:])[0]))
        sys.exit(0)
    except ValueError:
        pass
sys.exit(1)
'

run() {  # run NAME CMD...: all output to $OUT/NAME.log, its JSON result to $OUT/NAME.json
  local name="$1"; shift
  echo "== $name: $*"
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  if "$PY" -c "$LAST_JSON" "$OUT/$name.log" > "$OUT/$name.json"; then
    cat "$OUT/$name.json"
  else
    rm -f "$OUT/$name.json"
    echo "   no result (exit $rc): $(tail -n 3 "$OUT/$name.log")"
  fi
}

case "${1:-}" in
  stage)  # on the development machine: files for the grpo part, each under the carry limit
    gguf=runs/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$gguf" ] || { echo "no $gguf: run scripts/fetch_smollm2.sh first"; exit 1; }
    split -b 50M "$gguf" runs/gguf.part.
    "$PY" -m pip install -q --no-deps --target runs/pylib gguf
    ls -la runs/gguf.part.* runs/pylib
    ;;
  check)
    "$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name())" | tee "$OUT/device.txt"
    "$PY" -m pytest -p no:cacheprovider -rs tests/test_cuda.py tests/model tests/infer tests/train \
      2>&1 | tee "$OUT/tests.log" | tail -n 5
    ;;
  pretrain)
    depth="${2:-20}"  # one depth per call keeps a part inside 10 minutes
    run "pretrain_d${depth}_compile_vs_transformers" "$PY" bench/pretrain_mfu.py --depth "$depth" --compile \
      --compare transformers --steps 25 --repeats "$R"
    ;;
  pretrain_variants)
    depth="${2:-20}"
    run "pretrain_d${depth}_compile_muon" "$PY" bench/pretrain_mfu.py --depth "$depth" --compile --optimizer muon \
      --steps 25 --repeats "$VR"
    run "pretrain_d${depth}_eager" "$PY" bench/pretrain_mfu.py --depth "$depth" --steps 15 --repeats "$VR"
    ;;
  generate)
    run generate_d20_eager "$PY" bench/generate.py --depth 20 --batch_sizes 1 64 --repeats "$R"
    run generate_d20_compile "$PY" bench/generate.py --depth 20 --batch_sizes 1 64 --compile --compare none \
      --repeats "$R"
    ;;
  sft)
    run sft_peft "$PY" bench/sft_peft.py --repeats "$R"
    ;;
  sft_compile)  # --compile and --checkpoint apply to every mode, ours and transformers/peft alike
    run sft_peft_compile "$PY" bench/sft_peft.py --compile --repeats "$R"
    ;;
  sft_checkpoint)
    run sft_peft_lora_checkpoint "$PY" bench/sft_peft.py --compile --checkpoint --modes ours_lora peft_lora \
      --repeats "$R"
    ;;
  grpo)
    model="${SMOLLM2:-runs/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
    [ -f "$model" ] || { echo "no SmolLM2 at $model: see the staging note at the top"; exit 1; }
    run grpo_smollm2 "$PY" bench/grpo.py --model "$model" --task word --steps 60 --prompts 16 \
      --group 8 --micro_batch 32 --max_new_tokens 256 --eval_problems 200 --lr 1e-6 --compile
    ;;
  *)
    sed -n '2,30p' "$0"; exit 2 ;;
esac
