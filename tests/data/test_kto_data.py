"""KTO data: records, their errors, pairs as examples, the held-out split, mismatched
sequences and resumable batches."""

import json

import pytest
import torch

from lmforge.data.kto import (KTOBatches, KTOExample, RenderedExample, collate_examples, hold_out_examples,
                              pairs_to_kto, read_examples, read_kto, with_mismatched)
from lmforge.data.preference import read_preferences
from lmforge.errors import InputError

PAIRS = "data/preference/arithmetic_pairs.jsonl"


def _write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_read_kto_formats(tmp_path):
    path = _write(tmp_path / "kto.jsonl", [
        {"prompt": "Q", "completion": "good", "label": True},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}],
         "completion": {"role": "assistant", "content": "bad"}, "label": False}])
    good, bad = read_kto(path)
    assert good == KTOExample([{"role": "user", "content": "Q"}], {"role": "assistant", "content": "good"}, True)
    assert bad.prompt[0]["role"] == "system" and bad.completion["content"] == "bad" and not bad.desirable


@pytest.mark.parametrize("record, message", [
    ({"prompt": "Q", "label": True}, "missing field 'completion'"),
    ({"prompt": "Q", "completion": "a"}, "missing field 'label'"),
    ({"completion": "a", "label": True}, "missing field 'prompt'"),
    ({"prompt": "Q", "completion": "  ", "label": True}, "field 'completion' is empty"),
    ({"prompt": "Q", "completion": "a", "label": "yes"}, "field 'label' must be true or false"),
    ({"prompt": "Q", "completion": "a", "label": 1}, "field 'label' must be true or false"),
    ({"prompt": 3, "completion": "a", "label": True}, "field 'prompt' must be a string"),
    ({"prompt": "Q", "completion": {"role": "user", "content": "a"}, "label": True},
     "field 'completion' must be a string or an assistant message"),
    ({"messages": [{"role": "bot", "content": "Q"}], "completion": "a", "label": True}, r"field 'messages\[0\]'"),
    ({"messages": [{"role": "system", "content": "S"}], "completion": "a", "label": True},
     "field 'messages': roles out of order"),
    ({"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "a"}],
      "completion": "b", "label": True}, "field 'messages': roles out of order"),
    ({"messages": [{"role": "user", "content": "Q"}, {"role": "system", "content": "S"}],
      "completion": "b", "label": True}, "field 'messages': a system message may only come first"),
    ("{oops", "Expecting property name"),
])
def test_bad_record_names_file_line_and_field(tmp_path, record, message):
    path = _write(tmp_path / "kto.jsonl", [{"prompt": "Q", "completion": "a", "label": True}, record])
    with pytest.raises(InputError, match=rf"kto\.jsonl:2: .*{message}"):
        read_kto(path)


def test_skip_mode_counts_and_keeps_the_good_records(tmp_path, capsys):
    path = _write(tmp_path / "kto.jsonl", [{"prompt": "Q", "completion": "a", "label": True},
                                           {"prompt": "Q", "completion": "", "label": False},
                                           {"prompt": "R", "completion": "b", "label": "no"},
                                           {"prompt": "R", "completion": "c", "label": False}])
    kept = read_kto(path, on_error="skip")
    assert [e.completion["content"] for e in kept] == ["a", "c"]
    assert "skipped 2 malformed KTO records" in capsys.readouterr().out


def test_pairs_become_one_desirable_and_one_undesirable_example(tmp_path):
    pairs = read_preferences(PAIRS)[:3]
    examples = pairs_to_kto(pairs)
    assert [e.desirable for e in examples] == [True, False] * 3
    assert [e.completion for e in examples[:2]] == [pairs[0].chosen, pairs[0].rejected]
    kto_file = _write(tmp_path / "kto.jsonl", [{"prompt": "Q", "completion": "a", "label": True}])
    assert len(read_examples([str(kto_file)], [PAIRS])) == 1 + 2 * len(read_preferences(PAIRS))


def test_held_out_split_keeps_a_prompt_on_one_side():
    examples = pairs_to_kto(read_preferences(PAIRS))
    train, held = hold_out_examples(examples + examples[:4], None, eval_percent=20)
    prompts = lambda xs: {e.prompt[0]["content"] for e in xs}  # noqa: E731
    assert held and not prompts(train) & prompts(held)
    identities = {(e.prompt[0]["content"], e.completion["content"], e.desirable) for e in train}
    assert len(identities) == len(train)  # repeats are dropped from train


def _rendered(n=6):
    """Prompt [10+i, 20+i], completion [5, 40+i] (desirable) or [9, 40+i, 9], end token 1."""
    return [RenderedExample([10 + i, 20 + i] + ([5, 40 + i] if i % 2 == 0 else [9, 40 + i, 9]) + [1],
                            [False, False] + [True] * (2 if i % 2 == 0 else 3) + [False], i % 2 == 0)
            for i in range(n)]


def test_each_example_gets_another_completion_after_its_own_prompt():
    examples = with_mismatched(_rendered(), max_len=64, seed=0)
    partners = []
    for i, e in enumerate(examples):
        assert e.kl_ids[:2] == e.ids[:2] and e.kl_mask[:2] == [False, False]
        partner = next(j for j, other in enumerate(examples) if other.ids[2:] == e.kl_ids[2:])
        assert e.kl_mask[2:] == examples[partner].mask[2:]
        partners.append(partner)
    assert sorted(partners) == list(range(6)) and all(p != i for i, p in enumerate(partners))  # one cycle


def test_collate_examples_and_resumable_batches():
    examples = with_mismatched(_rendered(), max_len=64, seed=0)
    batch = collate_examples(examples[:2], pad_id=0)
    assert batch["desirable"].tolist() == [True, False]
    assert batch["input_ids"].tolist() == [[10, 20, 5, 40, 0], [11, 21, 9, 41, 9]]
    assert batch["labels"].tolist() == [[-100, 5, 40, -100, -100], [-100, 9, 41, 9, -100]]
    assert batch["kl_input_ids"].shape[0] == 2

    full = KTOBatches(examples, batch_size=4, seed=3)
    expected = [next(full)["input_ids"] for _ in range(5)]
    part = KTOBatches(examples, batch_size=4, seed=3)
    [next(part) for _ in range(2)]
    resumed = KTOBatches(examples, batch_size=4, seed=3)
    resumed.load_state_dict(part.state_dict())
    for want in expected[2:]:
        assert torch.equal(next(resumed)["input_ids"], want)


def test_precomputed_reference_has_both_sequences(tiny_model):
    batches = KTOBatches(with_mismatched(_rendered(), max_len=64, seed=0), batch_size=4)
    batches.precompute_reference(tiny_model)
    assert batches.ref_logps.shape == (6, 2)
    batch = next(batches)
    assert set(batch) >= {"ref_logps", "ref_kl_logps", "example_index"}
    assert torch.equal(batch["ref_logps"], batches.ref_logps[batch["example_index"], 0])
