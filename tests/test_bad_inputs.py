"""Bad input is named, never swallowed: each malformed input (tests/bad_inputs/, plus the ones
made here: truncated or corrupt archives, a 50 MB line, broken model directories) given to
the command that reads it exits with code 2 and ONE line naming the file and line or the
config field, no traceback, no output that looks complete, and the input left unchanged."""

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from lmforge.cli import main

BAD = Path(__file__).parent / "bad_inputs"
ROOT = Path(__file__).resolve().parents[1]
# Files whose presence says "this output is finished": none may exist after a failure.
COMPLETE_MARKERS = {"index.json", "summary.json", "report.md", "model.safetensors", "adapter_model.safetensors",
                    "done.json", "stats.json", "tokenizer.json", "manifest.json"}
TRAIN = ["--loop.max_steps", "1", "--device", "cpu", "--tensorboard", "false", "--loop.progress", "false"]


@pytest.fixture(scope="module")
def made(tmp_path_factory, chat_model_dir, trained_dir):
    """Inputs too large to commit or derived from real files."""
    d = tmp_path_factory.mktemp("made")
    warc = (ROOT / "data" / "web" / "sample.warc.gz").read_bytes()
    (d / "truncated.warc.gz").write_bytes(warc[: len(warc) * 2 // 5])
    (d / "corrupt.warc.gz").write_bytes(warc[:200] + bytes(4000) + warc[4200:8000])
    (d / "not_gzip.jsonl.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"this is not deflate data" * 50)
    docs = "".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(2000)).encode()
    (d / "truncated.jsonl.gz").write_bytes(gzip.compress(docs)[:3000])
    (d / "garbage_records.warc").write_bytes(
        b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 9999999\r\n\r\nHTTP/1.1 200 OK\r\n\r\n<html>short")
    (d / "not_a.warc").write_bytes(b"GET / HTTP/1.1\r\nthis is no WARC record at all\r\n" * 20)
    # a 50 MB single line: a JSON document that never ends
    with open(d / "huge_line.jsonl", "w") as f:
        f.write('{"text": "' + "a" * (50 << 20))
    with open(d / "huge_chat.jsonl", "w") as f:
        f.write('{"messages": [{"role": "user", "content": "' + "b" * (50 << 20))
    models = {}
    for name in ("corrupt_weights", "wrong_vocab", "no_tokenizer", "big_tokenizer", "broken_config"):
        models[name] = d / name
        shutil.copytree(chat_model_dir, models[name])
    weights = models["corrupt_weights"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config = json.loads((chat_model_dir / "config.json").read_text())
    (models["wrong_vocab"] / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] * 2}))
    (models["no_tokenizer"] / "tokenizer.json").unlink()
    for f in ("tokenizer.json", "tokenizer_config.json"):  # 2048 tokens for a 512-row embedding
        shutil.copy(trained_dir / f, models["big_tokenizer"] / f)
    (models["broken_config"] / "config.json").write_text('{"vocab_size": 512, "hidden_size": ')
    assert main(["convert", str(chat_model_dir), str(d / "tiny.gguf")]) == 0
    gguf = (d / "tiny.gguf").read_bytes()
    (d / "mamba.gguf").write_bytes(gguf.replace(b"llama", b"mamba"))  # every llama.* key too
    (d / "truncated.gguf").write_bytes(gguf[: len(gguf) // 3])
    (d / "docs.jsonl").write_text("".join(json.dumps({"id": str(i), "text": f"doc {i} " * 9}) + "\n" for i in range(9)))
    assert main(["tokenize", "--input", str(d / "docs.jsonl"), "--tokenizer", str(trained_dir),
                 "--output", str(d / "no_val_shards"), "--val_fraction", "0"]) == 0
    return {"dir": d, "model": chat_model_dir, "tokenizer": trained_dir, **models}


# Command lines: {in} the bad input, {out} an output path, {model} a tiny model, {tok} a tokenizer.
CURATE = ["curate", "--input", "{in}", "--output", "{out}"]
TOKENIZE = ["tokenize", "--input", "{in}", "--tokenizer", "{tok}", "--output", "{out}"]
TOKENIZER = ["tokenizer", "train", "--input", "{in}", "--output", "{out}", "--vocab_size", "300"]
SFT = ["sft", "--model", "{model}", "--data.train", "{in}", "--run_dir", "{out}", *TRAIN]
DPO = ["dpo", "--model", "{model}", "--data", "{in}", "--run_dir", "{out}", *TRAIN]
RM = ["rm", "--model", "{model}", "--data", "{in}", "--run_dir", "{out}", *TRAIN]
KTO = ["kto", "--model", "{model}", "--pairs", "{in}", "--run_dir", "{out}", *TRAIN]
GENERATE = ["generate", "{in}", "--prompt", "hi", "--max_new_tokens", "2"]
CONVERT = ["convert", "{in}", "{out}/model"]
PRETRAIN = ["pretrain", "{in}", "--run_dir", "{out}"]
EVAL = ["eval", "{model}", "--task", "{in}", "--output", "{out}"]

# id -> (command line, the input (made:NAME = made by the fixture), what the error line must name)
CASES = {
    # curate: archives and documents
    "curate-truncated-warc-gz": (CURATE, "made:truncated.warc.gz", "truncated.warc.gz"),
    "curate-corrupt-warc-gz": (CURATE, "made:corrupt.warc.gz", "corrupt.warc.gz"),
    "curate-warc-garbage-records": (CURATE, "made:garbage_records.warc", "garbage_records.warc"),
    "curate-not-a-warc": (CURATE, "made:not_a.warc", "not_a.warc"),
    "curate-broken-jsonl": (CURATE, "docs_broken_line.jsonl", "docs_broken_line.jsonl:2"),
    "curate-invalid-utf8": (CURATE, "docs_invalid_utf8.jsonl", "docs_invalid_utf8.jsonl:2"),
    "curate-empty-file": (CURATE, "docs_empty.jsonl", "docs_empty.jsonl"),
    "curate-binary-as-text": (CURATE, "binary.txt", "binary.txt"),
    "curate-not-gzip": (CURATE, "made:not_gzip.jsonl.gz", "not_gzip.jsonl.gz"),
    # tokenize and tokenizer training: documents
    "tokenize-broken-jsonl": (TOKENIZE, "docs_broken_line.jsonl", "docs_broken_line.jsonl:2"),
    "tokenize-invalid-utf8": (TOKENIZE, "docs_invalid_utf8.jsonl", "docs_invalid_utf8.jsonl:2"),
    "tokenize-empty-file": (TOKENIZE, "docs_empty.jsonl", "docs_empty.jsonl"),
    "tokenize-no-text-field": (TOKENIZE, "docs_no_text_field.jsonl", "docs_no_text_field.jsonl:2"),
    "tokenize-text-not-string": (TOKENIZE, "docs_text_not_string.jsonl", "docs_text_not_string.jsonl:2"),
    "tokenize-array-line": (TOKENIZE, "docs_array_line.jsonl", "docs_array_line.jsonl:2"),
    "tokenize-truncated-gzip": (TOKENIZE, "made:truncated.jsonl.gz", "truncated.jsonl.gz"),
    "tokenize-huge-line": (TOKENIZE, "made:huge_line.jsonl", "huge_line.jsonl:1"),
    "tokenize-binary-as-text": (TOKENIZE, "binary.txt", "binary.txt"),
    "tokenize-missing-tokenizer": (["tokenize", "--input", "{in}", "--tokenizer", "{out}/nowhere", "--output", "{out}"],
                                   "docs_no_text_field.jsonl", "nowhere"),
    "tokenizer-train-empty": (TOKENIZER, "docs_empty.jsonl", "docs_empty.jsonl"),
    "tokenizer-train-broken-jsonl": (TOKENIZER, "docs_broken_line.jsonl", "docs_broken_line.jsonl:2"),
    "tokenizer-train-not-gzip": (TOKENIZER, "made:not_gzip.jsonl.gz", "not_gzip.jsonl.gz"),
    # sft: conversations
    "sft-unknown-role": (SFT, "chat_unknown_role.jsonl", "chat_unknown_role.jsonl:2"),
    "sft-out-of-order-roles": (SFT, "chat_out_of_order.jsonl", "chat_out_of_order.jsonl:2"),
    "sft-empty-turn": (SFT, "chat_empty_turn.jsonl", "chat_empty_turn.jsonl:2"),
    "sft-no-assistant": (SFT, "chat_no_assistant.jsonl", "chat_no_assistant.jsonl:2"),
    "sft-broken-jsonl": (SFT, "chat_broken_line.jsonl", "chat_broken_line.jsonl:2"),
    "sft-messages-not-list": (SFT, "chat_messages_not_list.jsonl", "chat_messages_not_list.jsonl:2"),
    "sft-content-not-string": (SFT, "chat_content_not_string.jsonl", "chat_content_not_string.jsonl:2"),
    "sft-empty-file": (SFT, "chat_empty.jsonl", "chat_empty.jsonl"),
    "sft-invalid-utf8": (SFT, "chat_invalid_utf8.jsonl", "chat_invalid_utf8.jsonl:2"),
    "sft-huge-line": (SFT, "made:huge_chat.jsonl", "huge_chat.jsonl:1"),
    "sft-binary-as-text": (SFT, "binary.txt", "binary.txt"),
    # preference stages: pairs
    "dpo-identical-answers": (DPO, "pairs_identical.jsonl", "pairs_identical.jsonl:2"),
    "dpo-missing-rejected": (DPO, "pairs_missing_rejected.jsonl", "pairs_missing_rejected.jsonl:2"),
    "dpo-broken-jsonl": (DPO, "pairs_broken_line.jsonl", "pairs_broken_line.jsonl:2"),
    "dpo-empty-file": (DPO, "pairs_empty.jsonl", "pairs_empty.jsonl"),
    "dpo-empty-chosen": (DPO, "pairs_chosen_empty.jsonl", "pairs_chosen_empty.jsonl:2"),
    "rm-identical-answers": (RM, "pairs_identical.jsonl", "pairs_identical.jsonl:2"),
    "kto-identical-answers": (KTO, "pairs_identical.jsonl", "pairs_identical.jsonl:2"),
    # model directories and files
    "generate-corrupt-safetensors": (GENERATE, "made:corrupt_weights", "model.safetensors"),
    "generate-wrong-vocab-size": (GENERATE, "made:wrong_vocab", "vocab_size"),
    "generate-missing-tokenizer": (GENERATE, "made:no_tokenizer", "tokenizer"),
    "generate-broken-config-json": (GENERATE, "made:broken_config", "config.json"),
    "sft-mismatched-tokenizer": (["sft", "--model", "{in}", "--data.train", "data/chat/train.jsonl", "--run_dir", "{out}",
                                  *TRAIN], "made:big_tokenizer", "the tokenizer has 2048 tokens"),
    "convert-gguf-unsupported-arch": (CONVERT, "made:mamba.gguf", "architecture 'mamba' is not supported"),
    "convert-truncated-gguf": (CONVERT, "made:truncated.gguf", "truncated.gguf: "),
    "pretrain-empty-validation-split": (["pretrain", "--data.shards", "{in}", "--run_dir", "{out}", *TRAIN],
                                        "made:no_val_shards", "no_val_shards/index.json"),
    # evaluation tasks, prompt sets, and the commands that serve a model
    "eval-task-invalid-utf8": (EVAL, "task_invalid_utf8.jsonl", "task_invalid_utf8.jsonl:2"),
    "eval-task-broken-jsonl": (EVAL, "task_broken_line.jsonl", "task_broken_line.jsonl:2"),
    "eval-task-answer-not-scalar": (EVAL, "task_answer_not_scalar.jsonl", "task_answer_not_scalar.jsonl:2"),
    "eval-task-empty-file": (EVAL, "docs_empty.jsonl", "docs_empty.jsonl"),
    "best-of-n-prompt-without-answer": (["data", "best-of-n", "--policy", "{model}", "--prompts", "{in}", "--n", "2",
                                         "--verifier", "math", "--max_new_tokens", "2", "--output", "{out}/best.jsonl"],
                                        "prompts_no_answer.jsonl", "'answer'"),
    "data-select-broken-jsonl": (["data", "select", "--data", "{in}", "--method", "longest", "--k", "1",
                                  "--output", "{out}/selected.jsonl"], "chat_broken_line.jsonl", "chat_broken_line.jsonl:2"),
    "label-prompts-broken-jsonl": (["label", "--model", "{model}", "--labeller", "reward:math", "--prompts", "{in}",
                                    "--run_dir", "{out}"], "task_broken_line.jsonl", "task_broken_line.jsonl:2"),
    "chat-missing-model": (["chat", "{out}/nowhere"], "docs_empty.jsonl", "nowhere"),
    "serve-missing-model": (["serve", "{out}/nowhere"], "docs_empty.jsonl", "nowhere"),
    # configs
    "config-unknown-key": (PRETRAIN, "config_unknown_key.yaml", "optim.warmup_step"),
    "config-wrong-type": (PRETRAIN, "config_wrong_type.yaml", "optim.lr"),
    "config-negative-steps": (PRETRAIN, "config_negative_steps.yaml", "loop.max_steps"),
    "config-yaml-syntax": (PRETRAIN, "config_yaml_syntax.yaml", "config_yaml_syntax.yaml:3"),
    "config-not-a-mapping": (PRETRAIN, "config_not_a_mapping.yaml", "config_not_a_mapping.yaml"),
    "config-bad-choice": (PRETRAIN, "config_bad_choice.yaml", "loop.spike_action"),
    "config-zero-batch": (PRETRAIN, "config_zero_batch.yaml", "data.batch_size"),
    "config-unknown-override": (["sft", "--run_dir", "{out}", "--optim.lrr", "1e-3"], "config_zero_batch.yaml",
                                "optim.lrr"),
}


def digest(path: Path) -> dict:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_it(case, made, tmp_path, capsys):
    argv, source, names = CASES[case]
    path = made["dir"] / source[5:] if source.startswith("made:") else BAD / source
    if source[5:] in made:
        path = made[source[5:]]
    out = tmp_path / "out"
    fill = {"{in}": str(path), "{out}": str(out), "{model}": str(made["model"]), "{tok}": str(made["tokenizer"])}
    argv = [fill.get(a, a.replace("{out}", str(out))) for a in argv]
    before = digest(path)
    capsys.readouterr()
    try:
        code = main(argv)
    except BaseException as e:  # noqa: BLE001 (the point: nothing may escape as a traceback)
        pytest.fail(f"{case}: {type(e).__name__} escaped: {e}")
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("lmforge ")]
    assert code == 2, f"{case}: exit code {code}\n{captured.err[-2000:]}"
    assert len(errors) == 1 and "Traceback" not in captured.err + captured.out, captured.err[-2000:]
    print(f"{case} -> {errors[0]}")  # the line a user sees (pytest -s shows them all)
    assert names in errors[0], f"{case}: {errors[0]!r} does not name {names!r}"
    assert digest(path) == before, f"{case}: the input was modified"
    finished = [p for p in out.rglob("*") if p.name in COMPLETE_MARKERS] if out.exists() else []
    assert not finished, f"{case}: left output that looks complete: {finished}"
