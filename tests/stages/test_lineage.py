"""`lmforge lineage`: raw pages -> curate -> tokenize -> pretrain -> sft, printed back from the
SFT run, and each run.json keeps its parents' manifests."""

import json
import shutil
from pathlib import Path

from lmforge.cli import main

WARC = Path(__file__).resolve().parents[2] / "data" / "web" / "sample.warc.gz"
QUICK = ["--loop.max_steps", "2", "--loop.progress", "false", "--tensorboard", "false", "--device", "cpu"]


def test_lineage_walks_back_to_the_raw_pages(tmp_path, chat_file, capsys):
    raw = tmp_path / "raw.warc.gz"
    shutil.copy(WARC, raw)
    curated, tok, shards = tmp_path / "curated", tmp_path / "tok", tmp_path / "shards"
    pre, sft = tmp_path / "pretrain", tmp_path / "sft"
    assert main(["curate", "--input", str(raw), "--output", str(curated), "--filters.language.enabled", "false",
                 "--report", "false", "--workers", "1"]) == 0
    assert main(["tokenizer", "train", "--input", str(curated), "--output", str(tok), "--vocab_size", "300"]) == 0
    assert main(["tokenize", "--input", str(curated), "--tokenizer", str(tok), "--output", str(shards)]) == 0
    assert main(["pretrain", "--data.shards", str(shards), "--run_dir", str(pre), "--depth", "1",
                 "--data.seq_len", "32", "--data.batch_size", "2", "--eval.sample_tokens", "2", *QUICK]) == 0
    assert main(["sft", "--model", str(pre / "model"), "--data.train", str(chat_file), "--run_dir", str(sft),
                 "--data.batch_size", "2", "--data.seq_len", "64", "--eval.sample_tokens", "2", *QUICK]) == 0
    capsys.readouterr()
    assert main(["lineage", str(sft)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{sft}  [sft: git ")
    chain = "\n".join(lines)
    for what in (f"model: {pre / 'model'} -> {pre}  [pretrain", f"data.shards: {shards}  [tokenize",
                 f"input: {curated}  [curate", f"input: {raw}  [file: sha256:", f"data.train: {chat_file}",
                 f"tokenizer: {tok}  [tokenizertrain: git "):
        assert what in chain, chain
    # the chain is readable from run.json alone, after the parents are gone
    manifests = json.loads((sft / "run.json").read_text())["parent_manifests"]
    pretrain_run = manifests[str(pre / "model")]["run.json"]
    assert pretrain_run["stage"] == "pretrain"
    assert pretrain_run["parent_manifests"][str(shards)]["index.json"]["inputs"] == [str(curated)]
    assert manifests[str(chat_file)]["digest"].startswith("sha256:")
