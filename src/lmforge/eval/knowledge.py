"""Knowledge categories (Gekhman et al. 2024, "Does Fine-Tuning LLMs on New Knowledge
Encourage Hallucinations?"): what does a model already know?

    summary, rows = knowledge_categories(model, tok, qa, exemplar_sets=4, shots=4, samples=4)

Each closed-book question is asked with several different sets of few-shot exemplars (other
question-answer pairs from the same file), greedily and by sampling at temperature 0.5.
P_greedy is the share of exemplar sets under which the greedy answer is right, P_sample
the share of all samples that are. Then:
    HighlyKnown  P_greedy = 1          MaybeKnown   0 < P_greedy < 1
    WeaklyKnown  P_greedy = 0 < P_sample          Unknown      P_greedy = P_sample = 0
The paper's finding: fine-tuning on Unknown facts is learned slowly and makes the model
hallucinate more; the "I don't know" data builder reads these labels. Answers are judged
by exact match after normalisation (case, punctuation, articles), against any alias.
"""

from __future__ import annotations

import random
import string
from collections import Counter

import torch

from lmforge.infer.engine import Sampling, generate
from lmforge.stages.common import stop_ids

CATEGORIES = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")


def normalise_answer(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def is_correct(prediction: str, answers: list[str]) -> bool:
    return normalise_answer(prediction) in {normalise_answer(a) for a in answers}


def category(p_greedy: float, p_sample: float) -> str:
    if p_greedy == 1:
        return "HighlyKnown"
    if p_greedy > 0:
        return "MaybeKnown"
    return "WeaklyKnown" if p_sample > 0 else "Unknown"


def few_shot_prompt(exemplars: list[dict], question: str) -> str:
    shots = "".join(f"Q: {e['question']}\nA: {_aliases(e)[0]}\n\n" for e in exemplars)
    return f"{shots}Q: {question}\nA:"


@torch.no_grad()
def knowledge_categories(model, tok, qa: list[dict], exemplar_sets: int = 4, shots: int = 4,
                         samples: int = 4, temperature: float = 0.5, max_new_tokens: int = 24,
                         batch_size: int = 32, seed: int = 0) -> tuple[dict, list[dict]]:
    """qa: [{"question": str, "answer": str | [aliases]}]. Returns a summary and, per question,
    P_greedy, P_sample, its category and the greedy answers."""
    if len(qa) <= shots:
        raise ValueError(f"need more than {shots} question-answer pairs to draw {shots} exemplars from")
    rng = random.Random(seed)
    bos = [tok.bos_id] if tok.bos_id is not None else []
    # exemplar sets per question, drawn from the other questions
    prompts = []
    for i, item in enumerate(qa):
        others = [j for j in range(len(qa)) if j != i]
        for _ in range(exemplar_sets):
            prompts.append(bos + tok.encode(few_shot_prompt([qa[j] for j in rng.sample(others, shots)],
                                                            item["question"])))
    greedy = _answers(model, tok, prompts, Sampling(temperature=0.0), max_new_tokens, batch_size, seed)
    sampled = _answers(model, tok, [p for p in prompts for _ in range(samples)],
                       Sampling(temperature=temperature), max_new_tokens, batch_size, seed)
    rows = []
    for i, item in enumerate(qa):
        g = greedy[i * exemplar_sets:(i + 1) * exemplar_sets]
        s = sampled[i * exemplar_sets * samples:(i + 1) * exemplar_sets * samples]
        p_greedy = sum(is_correct(a, _aliases(item)) for a in g) / len(g)
        p_sample = sum(is_correct(a, _aliases(item)) for a in s) / len(s)
        rows.append({**item, "p_greedy": p_greedy, "p_sample": p_sample,
                     "category": category(p_greedy, p_sample), "greedy_answers": g})
    counts = Counter(r["category"] for r in rows)
    summary = {"questions": len(rows), **{c: counts[c] for c in CATEGORIES},
               **{f"{c}_share": counts[c] / len(rows) for c in CATEGORIES},
               "exemplar_sets": exemplar_sets, "shots": shots, "samples": samples, "temperature": temperature}
    return summary, rows


def _answers(model, tok, prompts, sampling, max_new_tokens, batch_size, seed) -> list[str]:
    """Completions cut at the first line break: the answer to "A:"."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    # Stop at any token holding a line break (the answer is one line) or ending the text.
    stops = {i for i in range(tok.vocab_size) if "\n" in tok.decode([i])} | set(stop_ids(tok))
    out = []
    model.eval()
    for s in range(0, len(prompts), batch_size):
        gen = generate(model, prompts[s:s + batch_size], max_new_tokens, sampling, stop_ids=stops,
                       pad_id=tok.pad_id or 0, generator=generator)
        out += [tok.decode(t, skip_special=True).lstrip().split("\n", 1)[0].strip() for t in gen.tokens]
    return out


def _aliases(item: dict) -> list[str]:
    answer = item["answer"]
    return [answer] if isinstance(answer, str) else list(answer)
