"""tokenizer train -> tokenize -> pretrain -> generate, through the CLI, on a small corpus."""

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.model.hub import load_model
from lmforge.train.metrics import read_metrics


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    lines = []
    for i in range(300):
        text = (f"Document {i}. The whale swam {i % 7} miles north, and the crew sang. "
                f"船向北行了{i % 7}里。 Call me Ishmael, said sailor number {i}.")
        lines.append(json.dumps({"id": str(i), "text": text}))
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_pretrain_pipeline_end_to_end(corpus, tmp_path, capsys):
    tok_dir, shards, run = tmp_path / "tok", tmp_path / "shards", tmp_path / "run"
    assert main(["tokenizer", "train", "--input", str(corpus), "--output", str(tok_dir),
                 "--vocab_size", "512"]) == 0
    assert main(["tokenize", "--input", str(corpus), "--tokenizer", str(tok_dir),
                 "--output", str(shards), "--val_fraction", "0.1"]) == 0
    assert main(["pretrain", "--run_dir", str(run), "--data.shards", str(shards),
                 "--depth", "2", "--data.seq_len", "64", "--data.batch_size", "8",
                 "--loop.max_steps", "30", "--eval.every_steps", "15", "--optim.lr", "3e-3",
                 "--optim.warmup_steps", "5", "--eval.sample_tokens", "8",
                 "--loop.progress", "false", "--tensorboard", "false"]) == 0
    rows = read_metrics(run / "metrics.jsonl")
    train_losses = [r["train/loss"] for r in rows if "train/loss" in r]
    val = [r for r in rows if "val/bpb" in r]
    assert train_losses[-1] < train_losses[0] - 1.0
    assert len(val) == 2 and 0 < val[-1]["val/bpb"] < val[0]["val/bpb"]
    assert (run / "report.md").exists() and (run / "config.yaml").exists()
    assert json.loads((run / "run.json").read_text())["libraries"]["torch"]

    transformers = pytest.importorskip("transformers")
    ours = load_model(run / "model")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(run / "model", dtype=torch.float32)
    hf_tok = transformers.AutoTokenizer.from_pretrained(run / "model")
    ids = torch.tensor([hf_tok("Call me Ishmael")["input_ids"]])
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max() < 1e-4
    gen_cfg = json.loads((run / "model" / "generation_config.json").read_text())
    assert hf_tok.convert_tokens_to_ids("<|im_end|>") in gen_cfg["eos_token_id"]

    capsys.readouterr()
    assert main(["generate", str(run / "model"), "--prompt", "Call me", "--max_new_tokens", "8",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("Call me")
    assert main(["generate", str(run / "model"), "--prompt", "Call me", "--max_new_tokens", "8",
                 "--temperature", "0", "--quantize", "int4"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("Call me") and "decode 8 tokens at" in printed.err


def test_resume_flag_continues_from_checkpoint(corpus, tmp_path):
    tok_dir, shards, run = tmp_path / "tok", tmp_path / "shards", tmp_path / "run"
    main(["tokenizer", "train", "--input", str(corpus), "--output", str(tok_dir), "--vocab_size", "512"])
    main(["tokenize", "--input", str(corpus), "--tokenizer", str(tok_dir), "--output", str(shards)])
    common = ["--run_dir", str(run), "--data.shards", str(shards), "--depth", "1",
              "--data.seq_len", "32", "--data.batch_size", "4", "--eval.every_steps", "100",
              "--eval.sample_tokens", "4", "--loop.progress", "false", "--tensorboard", "false",
              "--loop.log_every_steps", "1"]
    main(["pretrain", *common, "--loop.max_steps", "4"])
    main(["pretrain", *common, "--loop.max_steps", "6", "--resume"])
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
