"""`lmforge analyze ...`: the recipe's own analyses of what training did to a model.

    lmforge analyze token-shift runs/demo/pretrain/model runs/demo/sft/model --prompts prompts.jsonl
    lmforge analyze knowledge runs/smollm2 --qa data/eval/capitals_qa.jsonl --output runs/knowledge

token-shift (URIAL): which of the aligned model's greedy tokens the base model would have
chosen itself; writes token_shift.json, token_shift.jsonl (every token's base rank),
report.md and token_shift.png. knowledge (Gekhman et al. 2024): labels each closed-book
question HighlyKnown / MaybeKnown / WeaklyKnown / Unknown for the model; writes
knowledge.jsonl (the labelled questions, which `lmforge data idk` reads) and
knowledge.json. Prompts are a JSONL file ("prompt" or "messages" per line) or a text file
with one prompt a line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import InputError
from lmforge.eval.knowledge import knowledge_categories
from lmforge.eval.tasks import read_records
from lmforge.eval.token_shift import plot_by_position, token_shift
from lmforge.model.load import load_pretrained
from lmforge.report import write_report
from lmforge.runtime import Runtime


@dataclass
class TokenShiftConfig:
    base: str = ""  # the base (pretrained) model
    aligned: str = ""  # the aligned model (SFT / DPO / GRPO ...), same tokenizer
    prompts: str = ""  # JSONL ("prompt" or "messages") or text, one prompt a line
    output: str = "runs/token_shift"
    max_new_tokens: int = 128  # longest greedy answer
    limit: int = 0  # only the first N prompts (0 = all)
    batch_size: int = 16
    device: str = "auto"


@dataclass
class KnowledgeConfig:
    model: str = ""  # the model whose knowledge is probed (base-model style few-shot prompts)
    qa: str = ""  # JSONL: {"question": str, "answer": str | [aliases]}
    output: str = "runs/knowledge"
    exemplar_sets: int = 4  # different few-shot contexts per question
    shots: int = 4  # exemplars per context
    samples: int = 4  # sampled answers per context (temperature below)
    temperature: float = 0.5
    limit: int = 0  # only the first N questions (0 = all)
    seed: int = 0
    device: str = "auto"


def analyze_token_shift(cfg: TokenShiftConfig) -> dict:
    prompts = read_prompts(Path(cfg.prompts))[:cfg.limit or None]
    rt = Runtime.setup(cfg.device, "float32", 0)
    base, base_tok = load_pretrained(cfg.base, rt.device)
    aligned, tok = load_pretrained(cfg.aligned, rt.device)
    probe = "Call me Ishmael. 床前明月光 <|im_start|>"
    if base_tok.vocab_size != tok.vocab_size or base_tok.encode(probe) != tok.encode(probe):
        raise InputError("token shift compares token ids: the two models need the same tokenizer", cfg.aligned)
    summary, rows = token_shift(base, aligned, tok, prompts, cfg.max_new_tokens, cfg.batch_size)
    summary.update(base=cfg.base, aligned=cfg.aligned)
    out = Path(cfg.output)
    _write(out, "token_shift", summary, rows)
    write_report(out, "Token shift", [
        f"- base {cfg.base}, aligned {cfg.aligned}: {summary['tokens']} greedy answer tokens "
        f"over {summary['answers']} prompts",
        f"- unshifted (the base's own top choice) {summary['unshifted_share']:.1%}, marginal (its 2nd or "
        f"3rd) {summary['marginal_share']:.1%}, shifted {summary['shifted_share']:.1%}",
        "- most frequent shifted tokens: " + ", ".join(f"{t!r} ×{n}" for t, n in summary["top_shifted_tokens"][:10])],
        {"token_shift.png": plot_by_position(summary)})
    rt.print(f"token shift: unshifted {summary['unshifted_share']:.1%}, marginal {summary['marginal_share']:.1%}, "
             f"shifted {summary['shifted_share']:.1%} of {summary['tokens']} tokens -> {out / 'report.md'}")
    return summary


def analyze_knowledge(cfg: KnowledgeConfig) -> dict:
    qa = [r for _, r in read_records(Path(cfg.qa), {})][:cfg.limit or None]
    for i, r in enumerate(qa, 1):
        if not isinstance(r.get("question"), str) or not isinstance(r.get("answer"), (str, list)):
            raise InputError("each record needs 'question' (str) and 'answer' (str or list of aliases)", cfg.qa, i)
    rt = Runtime.setup(cfg.device, "float32", cfg.seed)
    model, tok = load_pretrained(cfg.model, rt.device)
    summary, rows = knowledge_categories(model, tok, qa, cfg.exemplar_sets, cfg.shots, cfg.samples,
                                         cfg.temperature, seed=cfg.seed)
    summary["model"] = cfg.model
    _write(Path(cfg.output), "knowledge", summary, rows)
    rt.print("knowledge: " + ", ".join(f"{c} {summary[c]}" for c in ("HighlyKnown", "MaybeKnown",
                                                                       "WeaklyKnown", "Unknown"))
             + f" of {summary['questions']} -> {Path(cfg.output) / 'knowledge.jsonl'}")
    return summary


def read_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise InputError("no such prompts file", path)
    if path.suffix != ".jsonl":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = []
    for line_no, r in read_records(path, {}):
        text = r.get("prompt") or next((m.get("content") for m in r.get("messages", []) if m.get("role") == "user"), None)
        if not isinstance(text, str):
            raise InputError("a prompt record needs 'prompt' or a user turn in 'messages'", path, line_no)
        prompts.append(text)
    return prompts


def _write(out: Path, name: str, summary: dict, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
