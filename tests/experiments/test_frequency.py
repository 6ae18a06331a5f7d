"""`lmforge experiment frequency-imprint --quick` end to end: both arms are made with the
frequencies swapped, trained, decoded, and the report states the result."""

import json

import pytest

from lmforge.cli import main
from lmforge.experiments.frequency import cipher_line, rot


def test_rot_and_cipher_lines():
    assert rot("hello", 13) == "uryyb" and rot(rot("hello", 13), 13) == "hello"  # ROT13 is its own inverse
    assert rot(rot("hello", 8), 8) != "hello"
    assert cipher_line("hello", 8) == "rot8: p m t t w = h e l l o"


@pytest.mark.slow
def test_frequency_imprint_quick(tmp_path):
    out = tmp_path / "experiments" / "frequency-imprint"
    assert main(["experiment", "frequency-imprint", "--quick", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    pretrain_text = (out / "data" / "rot13_frequent.jsonl").read_text()
    swapped_text = (out / "data" / "rot8_frequent.jsonl").read_text()
    ciphered = {line.split(" = ")[1].replace(" ", "")
                for name in ("rot13_frequent", "rot8_frequent", "finetune")
                for doc in map(json.loads, (out / "data" / f"{name}.jsonl").read_text().splitlines())
                for line in doc["text"].split("\n") if line.startswith(("rot13: ", "rot8: "))}
    assert len(ciphered) > 100 and not ciphered & set(results["held_out_words"])  # test words never seen ciphered
    assert pretrain_text.count("rot13:") > 10 * pretrain_text.count("rot8:") > 0  # the frequencies ...
    assert swapped_text.count("rot8:") > 10 * swapped_text.count("rot13:") > 0  # ... swapped between arms
    for phase in ("pretrained", "finetuned"):
        for arm in ("rot13 frequent", "rot8 frequent"):
            for cipher in ("rot13", "rot8"):
                accuracy, _ = results[phase]["accuracy"][arm][cipher]
                assert 0.0 <= accuracy <= 1.0
    report = (out / "report.md").read_text()
    assert "**imprint of frequency**" in report and "no verdict" in report
    assert (out / "accuracy.png").stat().st_size > 0
