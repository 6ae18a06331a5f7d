import json

import pytest
import torch

from lmforge.data.chat import ChatReadStats, read_conversations
from lmforge.data.sft import ChatBatches, collate, pack_examples, tokenize_conversations
from lmforge.errors import InputError
from lmforge.tokenizer.chat import render_with_mask

RECORDS = [
    {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"},
                  {"role": "assistant", "content": "A1"}]},
    {"conversations": [{"from": "human", "value": "Q2"}, {"from": "gpt", "value": "A2"}]},
    {"instruction": "Add", "input": "3 and 4", "output": "7", "system": "S"},
    {"messages": [{"role": "user", "content": "Q"},
                  {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]},
                  {"role": "tool", "content": "42", "tool_call_id": "c1"},
                  {"role": "assistant", "content": "42."}]},
]


def write_jsonl(path, records, raw_lines=()):
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return path


def test_reads_openai_sharegpt_alpaca_and_tool_turns(tmp_path):
    convs = read_conversations(write_jsonl(tmp_path / "c.jsonl", RECORDS))
    assert convs[0] == RECORDS[0]["messages"]
    assert convs[1] == [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]
    assert convs[2] == [{"role": "system", "content": "S"},
                        {"role": "user", "content": "Add\n\n3 and 4"},
                        {"role": "assistant", "content": "7"}]
    assert [m["role"] for m in convs[3]] == ["user", "assistant", "tool", "assistant"]
    assert convs[3][1]["tool_calls"] == [{"id": "c1"}] and convs[3][2]["tool_call_id"] == "c1"


def test_errors_name_file_line_and_field_or_are_counted(tmp_path):
    bad = {"messages": [{"role": "user", "content": "Q"}, {"role": "bot", "content": "A"}]}
    path = write_jsonl(tmp_path / "bad.jsonl", [RECORDS[0], bad], raw_lines=["{not json"])
    with pytest.raises(InputError, match=r"bad.jsonl:2: field 'messages\[1\].role'"):
        read_conversations(path)
    stats = ChatReadStats()
    convs = read_conversations(path, on_error="skip", stats=stats)
    assert len(convs) == 1 and stats.read == 1 and stats.skipped == 2
    assert "bad.jsonl:3: invalid JSON" in stats.errors[1]
    no_answer = write_jsonl(tmp_path / "q.jsonl", [{"messages": [{"role": "user", "content": "Q"}]}])
    with pytest.raises(InputError, match="no assistant message"):
        read_conversations(no_answer)


def test_labels_are_assistant_tokens_shifted(tok):
    messages = RECORDS[0]["messages"]
    ids, mask = render_with_mask(tok, messages)
    batch = collate([(ids, mask)], pad_id=tok.pad_id)
    labels = batch["labels"][0]
    assert torch.equal(batch["input_ids"][0], torch.tensor(ids[:-1]))
    trained = [t for t, m in zip(ids[1:], mask[1:]) if m]
    assert labels[labels != -100].tolist() == trained
    assert tok.decode(trained) == "A1<|im_end|>"


def test_truncation_is_counted_and_empty_targets_dropped(tok):
    long_answer = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]
    short = RECORDS[0]["messages"]
    examples, stats = tokenize_conversations(tok, [short, long_answer], seq_len=64)
    assert stats.truncated == 1 and stats.dropped_no_target == 1 and len(examples) == 1
    assert stats.conversations == 2 and stats.examples == 1


def test_chat_batches_resume_exactly_and_pad_right(tok):
    convs = [[{"role": "user", "content": f"What is {i} + 1?"},
              {"role": "assistant", "content": f"{i} + 1 = {i + 1}."}] for i in range(20)]
    examples, _ = tokenize_conversations(tok, convs, seq_len=64)
    batches = ChatBatches(examples, batch_size=3, seq_len=64, pad_id=tok.pad_id, seed=5)
    for _ in range(4):
        next(batches)
    state = batches.state_dict()
    expected = [next(batches) for _ in range(5)]  # crosses an epoch boundary (6 per epoch)
    resumed = ChatBatches(examples, batch_size=3, seq_len=64, pad_id=tok.pad_id, seed=5)
    resumed.load_state_dict(state)
    for a, b in zip(expected, (next(resumed) for _ in range(5))):
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    batch = expected[0]
    pad_columns = batch["input_ids"] == tok.pad_id
    assert (batch["labels"][pad_columns] == -100).all()


def test_packing_fills_rows_without_exceeding_seq_len(tok):
    convs = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]] * 10
    examples, _ = tokenize_conversations(tok, convs, seq_len=64)
    rows = pack_examples(examples, seq_len=64)
    assert len(rows) < len(examples) and all(len(ids) <= 65 for ids, _, _ in rows)
    assert sum(len(ids) for ids, _, _ in rows) == sum(len(ids) for ids, _ in examples)
    batches = ChatBatches(examples, batch_size=2, seq_len=64, pad_id=tok.pad_id, pack=True,
                          fixed_shape=True)
    assert next(batches)["input_ids"].shape == (2, 64)


def test_packed_conversations_compute_exactly_what_they_compute_alone(tok):
    from lmforge.model.transformer import Transformer
    from lmforge.train.objectives.lm import lm_objective, segment_attention
    from tests.conftest import tiny_config

    convs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
             for q, a in [("Hi", "Hello there."), ("What is 3 + 4?", "7."), ("Bye", "See you!")]]
    examples, _ = tokenize_conversations(tok, convs, seq_len=128)
    packed = collate(pack_examples(examples, seq_len=128), tok.pad_id, width=100)
    assert packed["segments"].shape == (1, 100) and packed["segments"].max().item() == 2
    assert (packed["segments"][0, sum(len(ids) for ids, _ in examples) - 1:] == -1).all()  # padding
    torch.manual_seed(0)
    model = Transformer(tiny_config(vocab_size=tok.vocab_size, initializer_range=0.2))
    logits = model(packed["input_ids"], **segment_attention(packed["segments"]))
    start = 0
    for ids, _ in examples:
        alone = model(torch.tensor([ids[:-1]]))
        torch.testing.assert_close(logits[:, start:start + len(ids) - 1], alone, atol=1e-5, rtol=1e-5)
        start += len(ids)
    # The loss over the packed row equals the token-weighted loss of the conversations alone.
    alone = [collate([e], tok.pad_id) for e in examples]
    n = [int((b["labels"] != -100).sum()) for b in alone]
    expected = sum(k * lm_objective(model, b)[0].item() for k, b in zip(n, alone)) / sum(n)
    loss, metrics = lm_objective(model, packed)
    assert loss.item() == pytest.approx(expected, rel=1e-5) and int(metrics["tokens"]) == sum(n)
