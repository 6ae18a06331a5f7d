"""Multiple-choice evaluation by log-likelihood, scored the way lm-evaluation-harness scores it.

    rows = score_multiple_choice(model, tok, [{"context": "The sky is", "choices": ["blue.", "loud."],
                                               "gold": 0}], batch_size=8)
    rows[0]["loglikelihoods"], rows[0]["pred"], rows[0]["acc"], rows[0]["acc_norm"]
    multiple_choice_metrics(rows)   # {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n"}

Choice i is the continuation `target_delimiter + choices[i]` (lm-eval's default delimiter is
" "), and its log-likelihood is the sum of log p(token) over its tokens given the context.
`acc` takes the argmax of those sums; `acc_norm` the argmax of sum / len(choices[i]), the
length in characters of the choice without the delimiter (lm-eval 0.4's
`ConfigurableTask.process_results`); ties go to the first choice, as `np.argmax` does.

Tokenization is lm-eval's HF backend (`lm_eval/api/model.py`, `_encode_pair` and
`loglikelihood`), so the numbers agree with it to float rounding (bench/eval_harness.py):
- trailing whitespace of the context moves to the front of the continuation;
- the context is encoded alone, context + continuation encoded whole, and the continuation's
  tokens are the whole's tokens after the first len(context tokens) (a merge across the
  boundary is split the way lm-eval splits it);
- both go through the tokenizer's own special-token handling: the HF tokenizer turns
  special-token strings in the text into special tokens (`allow_special=True` here; task
  text is trusted), and adds what its post-processor adds (SmolLM2: nothing, so no BOS);
- an empty context becomes the BOS token (EOS when there is none);
- the last context token predicts the first continuation token.

Speed (the context is computed once per example, not once per choice as in lm-eval): each
example is one packed row `[context | choice 1 | choice 2 | ...]` (each choice without its
last token, which predicts nothing that is scored). An attention mask lets a choice's tokens
see the context and their own choice only, and RoPE positions restart after the context for
every choice, so each choice is computed exactly as if it followed the context alone. The
output head runs only on the positions that predict a choice token (in chunks of rows),
never on the context. Rows are sorted by length, longest first, and batched.
Measured on SmolLM2-135M, fp32, 2-core CPU (2026-12-01): the packed row took 20.4 s where
prefilling the contexts once and copying their KV cache to one row per choice took 38.6 s
(16 examples, batch 8, same scores to 5e-5), and the whole 300-example bundled task takes
60 s against lm-eval's 195 s (bench/eval_harness.py). Small batches are faster on a CPU
(padding and the T x T mask grow with the batch): 4-8 examples per forward beat 32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.eval.accuracy import mean, stderr
from lmforge.train.head_loss import LOGITS_PER_CHUNK, head_weight
from lmforge.train.objectives.lm import shared_prefix_attention


@dataclass
class Packed:
    """One example as one row: its token ids, RoPE positions, segment of each token (0 =
    context, i + 1 = choice i), and for every scored token the row index that predicts it."""
    ids: list[int]
    positions: list[int]
    segments: list[int]
    predictors: list[list[int]]  # per choice: row index predicting each of its tokens
    targets: list[list[int]]  # per choice: its token ids


def encode_pair(tok, context: str, continuation: str, prefix: list[int]) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's HF backend encodes them."""
    if context == "":
        continuation_ids = tok.encode(continuation, allow_special=True)  # no special prefix
        start = _start_token(tok)
        if continuation_ids[:1] == [start]:
            return continuation_ids[:1], continuation_ids[1:]
        return [start], continuation_ids
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    context_ids = _encode(tok, context, prefix)
    whole = _encode(tok, context + continuation, prefix)
    return context_ids, whole[len(context_ids):]


def special_prefix(tok) -> list[int]:
    """The ids the tokenizer's post-processor puts before any text (a BOS for Llama-3-style
    tokenizer.json files, nothing for SmolLM2's or ours): HF's `encode` adds them, and so
    lm-eval's contexts start with them."""
    backend = getattr(tok, "backend", None)
    if backend is None:
        return []
    with_specials = backend.encode("a", add_special_tokens=True).ids
    plain = backend.encode("a", add_special_tokens=False).ids
    return with_specials[:with_specials.index(plain[0])] if plain and plain[0] in with_specials else []


def _encode(tok, text: str, prefix: list[int]) -> list[int]:
    ids = tok.encode(text, allow_special=True)
    # HF skips its prefix when the text already starts with it (lm-eval's has_bos_prefix).
    return ids if not prefix or ids[:len(prefix)] == prefix else prefix + ids


def _start_token(tok) -> int:
    start = tok.bos_id if tok.bos_id is not None else tok.eos_id
    if start is None:
        raise ValueError("an empty context needs a BOS or EOS token to condition on")
    return start


def pack_example(context_ids: list[int], choice_ids: list[list[int]]) -> Packed:
    if not context_ids:
        raise ValueError("the context encodes to no tokens (a whitespace-only context?)")
    ids, positions, segments = list(context_ids), list(range(len(context_ids))), [0] * len(context_ids)
    predictors = []
    for i, choice in enumerate(choice_ids):
        if not choice:
            raise ValueError(f"choice {i} encodes to no tokens")
        start = len(ids)
        inputs = choice[:-1]  # the last token is only predicted
        ids += inputs
        positions += range(len(context_ids), len(context_ids) + len(inputs))
        segments += [i + 1] * len(inputs)
        predictors.append([len(context_ids) - 1] + list(range(start, start + len(inputs))))
    return Packed(ids, positions, segments, predictors, [list(c) for c in choice_ids])


def collate(packed: list[Packed], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids (B, T), positions (B, T) and the "may attend" mask (B, 1, T, T):
    causal, and a choice token sees only the context and its own choice. Padding (segment
    -1) is never seen by real tokens; a pad query still sees the context, so no softmax row
    is empty."""
    T = max(len(p.ids) for p in packed)
    ids = torch.zeros((len(packed), T), dtype=torch.long)
    positions = torch.zeros((len(packed), T), dtype=torch.long)
    segments = torch.full((len(packed), T), -1, dtype=torch.long)
    for b, p in enumerate(packed):
        n = len(p.ids)
        ids[b, :n], positions[b, :n], segments[b, :n] = (
            torch.tensor(p.ids), torch.tensor(p.positions), torch.tensor(p.segments))
    return ids.to(device), positions.to(device), shared_prefix_attention(segments).to(device)


def choice_logliks(model, packed: list[Packed], device) -> list[list[float]]:
    """Summed log-probability of every choice of every packed example, one forward pass."""
    ids, positions, mask = collate(packed, device)
    hidden = model(ids, positions=positions, attn_mask=mask, return_hidden=True)  # (B, T, C)
    rows, index, targets, owner = [], [], [], []
    for b, p in enumerate(packed):
        for i, (pred, tgt) in enumerate(zip(p.predictors, p.targets)):
            rows += [b] * len(pred)
            index += pred
            targets += tgt
            owner += [(b, i)] * len(tgt)
    picked = hidden[torch.tensor(rows, device=device), torch.tensor(index, device=device)]  # (N, C)
    logps = token_logprobs_like_lm_eval(picked, head_weight(model), torch.tensor(targets, device=device))
    sums = [[0.0] * len(p.targets) for p in packed]
    for (b, i), lp in zip(owner, logps.tolist()):
        sums[b][i] += lp
    return sums


def token_logprobs_like_lm_eval(hidden: torch.Tensor, weight: torch.Tensor,
                                targets: torch.Tensor) -> torch.Tensor:
    """log p(target) for hidden rows (N, C), through the head in chunks of rows, as
    `log_softmax(logits)` in the logits' dtype (fp32 at least), which is what lm-eval computes.

    Not `head_loss.linear_token_logprobs`: its `logsumexp` is the more accurate of the two
    (SmolLM2, fp32: 6e-5 from the fp64 value per choice vs 2.4e-4), but fp32 `log_softmax`
    over 49k logits rounds differently by up to ~2.5e-4 per 25-token choice, more than the
    1e-4 we promise to agree with lm-eval by; computed the same way the two agree to 7e-5."""
    rows = max(1, LOGITS_PER_CHUNK // weight.shape[0])
    dtype = torch.promote_types(hidden.dtype, torch.float32)
    return torch.cat([torch.log_softmax(hidden[i:i + rows] @ weight.T, -1, dtype=dtype)
                      .gather(-1, targets[i:i + rows, None])[:, 0] for i in range(0, hidden.shape[0], rows)])


def first_argmax(values: list[float]) -> int:
    """Index of the largest value, the first on ties (as np.argmax)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def score_example(logliks: list[float], choices: list[str], gold: int) -> dict:
    lengths = [len(c) for c in choices]  # characters, as lm-eval's completion_len
    pred = first_argmax(logliks)
    pred_norm = first_argmax([ll / max(1, n) for ll, n in zip(logliks, lengths)])
    return {"loglikelihoods": logliks, "choice_lengths": lengths, "gold": gold, "pred": pred,
            "pred_norm": pred_norm, "acc": float(pred == gold), "acc_norm": float(pred_norm == gold)}


def score_multiple_choice(model, tok, examples: list[dict], batch_size: int = 8, device=None,
                          target_delimiter: str = " ") -> list[dict]:
    """Per example (in input order): the choices' summed log-likelihoods, their lengths in
    characters, pred / pred_norm and acc / acc_norm. batch_size = examples per forward pass."""
    device = device or next(model.parameters()).device
    prefix = special_prefix(tok)
    packed = []
    for n, ex in enumerate(examples):
        pairs = [encode_pair(tok, ex["context"], target_delimiter + c, prefix) for c in ex["choices"]]
        p = pack_example(pairs[0][0], [cont for _, cont in pairs])
        longest = max(p.positions) + 1
        if longest > model.config.max_position_embeddings:
            raise ValueError(f"example {n}: context + choice need {longest} positions, the model "
                             f"has {model.config.max_position_embeddings}")
        packed.append(p)
    # Longest first (as lm-eval): rows in a batch have similar lengths, little padding.
    order = sorted(range(len(packed)), key=lambda n: -len(packed[n].ids))
    logliks: list[list[float] | None] = [None] * len(packed)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                for n, sums in zip(batch, choice_logliks(model, [packed[n] for n in batch], device)):
                    logliks[n] = sums
    finally:
        model.train(was_training)
    return [score_example(ll, ex["choices"], int(ex["gold"])) for ll, ex in zip(logliks, examples)]


def multiple_choice_metrics(rows: list[dict]) -> dict:
    """Mean acc / acc_norm with lm-eval's standard errors (sample std / sqrt(n))."""
    acc, acc_norm = [r["acc"] for r in rows], [r["acc_norm"] for r in rows]
    return {"acc": mean(acc), "acc_stderr": stderr(acc), "acc_norm": mean(acc_norm),
            "acc_norm_stderr": stderr(acc_norm), "n": len(rows)}
