"""`lmforge data idk`: SFT data that teaches a model to abstain on what it does not know.

    lmforge analyze knowledge runs/base --qa data/qa.jsonl --output runs/knowledge
    lmforge data idk --knowledge runs/knowledge/knowledge.jsonl --output data/idk_sft.jsonl

Fine-tuning on facts a model does not know teaches it to make things up (Gekhman et al.
2024): Unknown examples are learned late and raise hallucination on everything else. So the
questions `analyze knowledge` labels Unknown (by default; `abstain_on` picks the categories)
get the refusal as their target, and the questions the model knows keep their answer.
`drop` leaves categories out instead (e.g. WeaklyKnown, which the paper found least useful).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lmforge.errors import InputError
from lmforge.eval.knowledge import CATEGORIES
from lmforge.eval.tasks import read_records
from lmforge.synth.stage import Manifest, write_jsonl


@dataclass
class IDKConfig:
    knowledge: str = ""  # knowledge.jsonl from `lmforge analyze knowledge` (question, answer, category)
    output: str = "data/idk.jsonl"  # chat JSONL; OUT.manifest.json beside it
    abstain_on: list[str] = field(default_factory=lambda: ["Unknown"])  # categories answered with the refusal
    drop: list[str] = field(default_factory=list)  # categories left out of the data
    refusal: str = "I don't know."  # the target for questions in `abstain_on`
    system_prompt: str = ""  # written before every question when set


def idk(cfg: IDKConfig) -> dict:
    for name in [*cfg.abstain_on, *cfg.drop]:
        if name not in CATEGORIES:
            raise InputError(f"unknown knowledge category {name!r}; one of {', '.join(CATEGORIES)}")
    if not Path(cfg.knowledge).is_file():
        raise InputError("no such file (run `lmforge analyze knowledge` first)", cfg.knowledge)
    rows, counts = [], Counter()
    for line, record in read_records(Path(cfg.knowledge)):
        answer = record.get("answer")
        answer = answer[0] if isinstance(answer, list) and answer else answer
        if (record.get("category") not in CATEGORIES or not isinstance(record.get("question"), str)
                or not isinstance(answer, str)):
            raise InputError("a record needs 'question', 'answer' and a knowledge 'category'", cfg.knowledge, line)
        category = record["category"]
        if category in cfg.drop:
            counts[f"dropped:{category}"] += 1
            continue
        abstain = category in cfg.abstain_on
        counts[f"{'refusal' if abstain else 'answer'}:{category}"] += 1
        rows.append({"messages": [*([{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt else []),
                                  {"role": "user", "content": record["question"]},
                                  {"role": "assistant", "content": cfg.refusal if abstain else answer}]})
    write_jsonl(Path(cfg.output), rows)
    summary = {"rows": len(rows), "refusals": sum(v for k, v in counts.items() if k.startswith("refusal:")),
               "dropped": {k.partition(":")[2]: v for k, v in counts.items() if k.startswith("dropped:")},
               "by_category": dict(sorted(counts.items()))}
    Manifest("data idk", cfg, [Path(cfg.knowledge)], {}).write(Path(cfg.output), summary, "complete")
    print(f"data idk: {summary['rows']} questions, {summary['refusals']} answered with {cfg.refusal!r} -> "
          f"{cfg.output}")
    return summary

