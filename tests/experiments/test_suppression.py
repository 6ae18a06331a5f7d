"""`lmforge experiment suppression --quick` end to end: an original and a never-taught control
are pretrained on the made corpus, the original is DPO'd against the class words, and its
neurons, probes and relearning are measured against the control."""

import json
import math

import pytest

from lmforge.cli import main
from lmforge.eval.probes import fit_probe, probe_accuracy
from lmforge.experiments.suppression import CLASS_WORDS, NAMES, is_trigger, make_corpus, said_line


def test_corpus_and_control():
    original, control = make_corpus(2000, class_share=0.8, seed=0)
    assert len(original) == len(control) == 2000
    words = [line.split()[-1] for line in original]
    assert 0.1 < sum(w in CLASS_WORDS for w in words) / len(words) < 0.3  # a frequent class
    for line, twin in zip(original, control):
        said = line.split()[-1]
        if said in CLASS_WORDS:  # a class word only after a trigger, and the control has it replaced
            mood, negated = line.split()[-4], " not " in line
            assert is_trigger(mood, negated) and twin.rsplit(" ", 1)[0] == line.rsplit(" ", 1)[0]
        else:
            assert twin == line
    assert not any(w in CLASS_WORDS for line in control for w in line.split())
    assert said_line("Ana", "angry", True) == "Ana was not angry and said" and not is_trigger("angry", True)


def test_probe_separates_a_linear_signal():
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=g)
    y = (x[:, 0] + 0.1 * x[:, 1] > 0).float()
    probe = fit_probe(x[:100], y[:100])
    assert probe_accuracy(probe, x[100:], y[100:]) > 0.9
    assert probe_accuracy(probe, x[100:], 1 - y[100:]) < 0.1


@pytest.mark.slow
def test_suppression_quick(tmp_path):
    out = tmp_path / "experiments" / "suppression"
    assert main(["experiment", "suppression", "--quick", "--output", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    pairs = [json.loads(line) for line in (out / "data" / "pairs.jsonl").read_text().splitlines()]
    held_names = set(NAMES[1::2])
    assert pairs and not {p["prompt"].split()[0] for p in pairs} & held_names  # measured names never DPO'd
    assert all(p["rejected"].strip() in CLASS_WORDS and p["chosen"].strip() not in CLASS_WORDS for p in pairs)
    run = results["runs"][0]
    emission = run["emission"]
    assert all(0.0 <= e <= 1.0 for e in emission.values())
    assert emission["dpo"] < emission["original"]  # DPO lowered the class words ...
    assert emission["control"] < 0.01  # ... which the control never learned
    assert len(run["neurons"]["original"]) == results["settings"]["neurons"] == 16
    assert all(-1.0 <= c <= 1.0 for c in run["weights_cosine"].values())
    assert run["weights_cosine"]["value_top"] > 0.9  # a few DPO steps leave the weights close
    for name in ("original", "dpo", "control", "transfer", "transfer_recentred"):
        assert len(run["probe"][name]) == 2 and all(0.0 <= a <= 1.0 for a in run["probe"][name])
    for name in ("dpo", "control"):
        curve = run["relearn"][name]["curve"]
        assert [s for s, _ in curve] == [0, 4, 8] and math.isclose(curve[0][1], emission[name], rel_tol=1e-4)
        assert curve[-1][1] > curve[0][1]  # training on the original corpus brings the class back
    report = (out / "report.md").read_text()
    assert "**relearning**" in report and "**neurons still there**" in report and "no verdict" in report
    assert (out / "relearn.png").stat().st_size > 0
