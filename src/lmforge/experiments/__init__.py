"""`lmforge experiment NAME`: the recipe's claims, re-run at small scale.

Each experiment makes or reads its data, runs the stages it needs several times (seeds),
and writes `runs/experiments/NAME/report.md` (table, figure, and whether the claim held at
this scale) and `results.json`. A `--quick` run is a smoke test, not evidence.

    lmforge experiment dedup                # Lee et al. 2022: deduplicated pretraining data
    lmforge experiment frequency-imprint    # McCoy et al. 2023: ROT13 vs ROT8, frequency swapped
    lmforge experiment long-sft             # LIMA; Zhao et al. 2024: longest-k vs random-k vs all SFT data
    lmforge experiment paraphrase-knowledge # Allen-Zhu & Li 2023: one wording vs several
    lmforge experiment rl-reasoning         # DeepSeek-R1: GRPO raises accuracy, lengthens reasoning
    lmforge experiment suppression          # Lee et al. 2024: DPO suppresses a learnt word class, not erases
    lmforge experiment token-shift          # URIAL (Lin et al. 2023): alignment changes few tokens
    lmforge experiment unknown-knowledge    # Gekhman et al. 2024: Unknown facts in SFT, and IDK data
"""
