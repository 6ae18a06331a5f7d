"""lmforge's DPO, IPO, SimPO, ORPO, KTO and reward-model (Bradley–Terry, with and without a
margin) losses equal TRL's own on one batch, each side with its own forward of the same
checkpoint (SmolLM2 when fetched, else a tiny random Llama). The comparison itself is
bench/trl_parity.py, which says what each side runs."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _require_trl() -> None:
    try:
        from trl import DPOTrainer, KTOTrainer, RewardTrainer  # noqa: F401
        from trl.experimental.cpo import CPOTrainer  # noqa: F401
        from trl.experimental.orpo import ORPOTrainer  # noqa: F401
    except Exception as e:  # ImportError, or TRL's lazy import failing on this transformers version
        pytest.skip(f"TRL's trainers do not import here ({type(e).__name__}: {e}); pip install trl==1.16.0")


@pytest.mark.slow
def test_preference_losses_match_trl():
    _require_trl()
    sys.path.insert(0, str(ROOT / "bench"))
    from trl_parity import SMOLLM2, run

    result = run(SMOLLM2 if SMOLLM2.exists() else None)
    # per-sequence log-probs summed over a response (up to ~100 in size): fp32 forwards agree
    assert result["sequence_logps_max_abs_diff"] < 2e-4
    assert result["reward_scores_max_abs_diff"] < 1e-4  # lmforge's RewardModel vs LlamaForSequenceClassification
    for name, row in result["losses"].items():
        if name == "orpo_full":  # the NLL term differs by definition (see orpo_loss)
            assert row["abs_diff"] > 0
            continue
        assert row["lmforge"] == pytest.approx(row["trl"], abs=1e-5, rel=1e-5), name
    assert result["kto_z0"] > 0  # the KL estimate is live, not clamped to 0
