"""Multiple choice by log-likelihood: the packed, context-shared scores equal a plain forward
pass per choice, acc/acc_norm follow lm-eval's definitions, and (slow) the numbers agree with
lm-evaluation-harness on SmolLM2."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from lmforge.eval.multiple_choice import (encode_pair, multiple_choice_metrics, score_example,
                                          score_multiple_choice, special_prefix)
from lmforge.model.transformer import Transformer
from lmforge.train.head_loss import model_token_logprobs
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / "runs" / "models" / "smollm2" / "hf"
TASK = ROOT / "data" / "eval" / "corpus_cloze.jsonl"

EXAMPLES = [
    {"context": "Call me Ishmael. Some years ago, never mind how long", "gold": 0,
     "choices": ["precisely, having little money", "the whale", "床前明月光", "x"]},
    {"context": "The state of the Union is ", "gold": 1, "choices": ["strong.", "weak", "a"]},
    {"context": "", "gold": 0, "choices": ["Hello there.", "Goodbye"]},  # empty: BOS conditions
    {"context": "Q: 2+2?\nA:", "gold": 1, "choices": ["3", "4", "five", "22", "none of them"]},
]


def naive_logliks(model, tok, example) -> list[float]:
    """One full forward pass per choice over context + continuation, no sharing."""
    out = []
    for choice in example["choices"]:
        ctx, cont = encode_pair(tok, example["context"], " " + choice, special_prefix(tok))
        ids = torch.tensor(ctx + cont)
        labels = torch.full_like(ids, -100)
        labels[len(ctx):] = ids[len(ctx):]
        with torch.no_grad():
            out.append(float(model_token_logprobs(model, ids[None, :-1], labels[None, 1:]).sum()))
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_packed_shared_context_scores_equal_a_full_forward_per_choice(tok, batch_size):
    torch.manual_seed(0)
    model = Transformer(tiny_config(vocab_size=tok.vocab_size, max_position_embeddings=256))
    rows = score_multiple_choice(model, tok, EXAMPLES, batch_size=batch_size)
    assert model.training  # restored
    diffs = [abs(a - b) for ex, row in zip(EXAMPLES, rows)
             for a, b in zip(naive_logliks(model.eval(), tok, ex), row["loglikelihoods"])]
    assert len(diffs) == sum(len(ex["choices"]) for ex in EXAMPLES) and max(diffs) < 1e-5
    assert [row["choice_lengths"] for row in rows][0] == [30, 9, 5, 1]
    json.dumps(rows)  # rows are written as JSONL


def test_encoding_moves_trailing_space_and_splits_the_whole_like_lm_eval(tok):
    ctx, cont = encode_pair(tok, "The state of the Union is ", " strong.", [])
    assert ctx == tok.encode("The state of the Union is")
    assert ctx + cont == tok.encode("The state of the Union is  strong.")
    ctx, cont = encode_pair(tok, "", " Hello", [])
    assert ctx == [tok.bos_id] and cont == tok.encode(" Hello")


def test_a_post_processor_bos_goes_on_the_context_once(trained_dir):
    from tokenizers.processors import TemplateProcessing

    from lmforge.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(trained_dir)  # a fresh one: the session fixture stays as it is
    bos = tok.id_to_token(tok.bos_id)
    tok.backend.post_processor = TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.bos_id)])
    prefix = special_prefix(tok)
    assert prefix == [tok.bos_id]
    ctx, cont = encode_pair(tok, "Call me", " Ishmael", prefix)
    assert ctx == [tok.bos_id] + tok.encode("Call me") and tok.bos_id not in cont
    assert encode_pair(tok, bos + "Call me", " Ishmael", prefix)[0] == ctx  # no second BOS


def test_acc_is_the_argmax_of_sums_and_acc_norm_divides_by_characters():
    # Sums favour the short choice; per character the long one wins.
    row = score_example([-4.0, -10.0, -30.0], ["ab", "abcdefghij", "x" * 20], gold=1)
    assert (row["pred"], row["acc"]) == (0, 0.0)
    assert row["choice_lengths"] == [2, 10, 20]
    assert (row["pred_norm"], row["acc_norm"]) == (1, 1.0)  # -1.0/char beats -2.0 and -1.5
    tie = score_example([-2.0, -2.0], ["a", "b"], gold=1)
    assert (tie["pred"], tie["pred_norm"]) == (0, 0)  # the first on ties, as np.argmax
    metrics = multiple_choice_metrics([row, tie, score_example([-1.0, -3.0], ["aa", "b"], gold=0)])
    assert metrics["n"] == 3 and metrics["acc"] == pytest.approx(1 / 3)
    assert metrics["acc_norm"] == pytest.approx(2 / 3)
    assert metrics["acc_stderr"] == pytest.approx(1 / 3)  # sample std (1/3) ** 0.5 over 3 ** 0.5


@pytest.mark.slow
@pytest.mark.skipif(not SMOLLM2.exists() or importlib.util.find_spec("lm_eval") is None,
                    reason="needs runs/models/smollm2/hf and lm-eval")
def test_agrees_with_lm_evaluation_harness_on_smollm2():
    sys.path.insert(0, str(ROOT / "bench"))
    from eval_harness import (compare, harness_model, lm_eval_scores, lmforge_model, lmforge_scores,
                              load_examples)

    theirs = lm_eval_scores(harness_model(SMOLLM2), TASK, limit=20, batch_size=8)
    model, tok = lmforge_model(SMOLLM2)
    ours = lmforge_scores(model, tok, load_examples(TASK, limit=20), batch_size=8)
    agreement = compare(theirs["rows"], ours["rows"])
    assert agreement["choices"] == 80 and agreement["max_abs_diff"] <= 1e-4
    assert agreement["acc_equal"] and agreement["acc_norm_equal"]
    assert (theirs["acc"], theirs["acc_norm"]) == (ours["acc"], ours["acc_norm"])
