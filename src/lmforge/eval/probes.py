"""Tools for looking inside a model: its hidden states and MLP activations at a prompt's last
token, each MLP neuron's input and output weights, and linear probes on the states. Used by
`lmforge experiment suppression` (Lee et al. 2024) and kept model-generic: any lmforge
Llama-family model (`model.model.layers[i].mlp.{gate,up,down}_proj`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def last_token_states(model, tok, texts: list[str]) -> dict[str, torch.Tensor]:
    """At each text's last token (after BOS): "probs" (B, V) of the next token, "hidden" (L, B, C)
    each layer's output, "mlp" (L, B, I) each layer's MLP activations (down_proj's input), read
    by hooks from outside the model."""
    start = tok.bos_id if tok.bos_id is not None else tok.eos_id
    ids = [[start, *tok.encode(t)] for t in texts]
    T = max(map(len, ids))
    batch = torch.tensor([row + [tok.pad_id or 0] * (T - len(row)) for row in ids])  # right-padded: causal
    last = torch.tensor([len(row) - 1 for row in ids])
    rows = torch.arange(len(ids))
    hidden, mlp = [], []
    hooks = []
    for layer in model.model.layers:
        hooks.append(layer.register_forward_hook(lambda m, i, o: hidden.append(o[rows, last])))
        hooks.append(layer.mlp.down_proj.register_forward_pre_hook(lambda m, i: mlp.append(i[0][rows, last])))
    try:
        logits = model(batch)[rows, last]
    finally:
        for h in hooks:
            h.remove()
    return {"probs": logits.float().softmax(-1), "hidden": torch.stack(hidden), "mlp": torch.stack(mlp)}


def value_vectors(model) -> torch.Tensor:
    """(L·I, C): each MLP neuron's output vector, layer after layer."""
    return torch.cat([layer.mlp.down_proj.weight.detach().T for layer in model.model.layers])


def input_rows(model) -> torch.Tensor:
    """(L·I, 2C): each neuron's gate and up rows side by side."""
    return torch.cat([torch.cat([layer.mlp.gate_proj.weight.detach(), layer.mlp.up_proj.weight.detach()], 1)
                      for layer in model.model.layers])


def row_cosine(a: torch.Tensor, b: torch.Tensor, idx: torch.Tensor | None = None) -> float:
    if idx is not None:
        a, b = a[idx], b[idx]
    return float(F.cosine_similarity(a, b, dim=-1).mean())


def fit_probe(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, steps: int = 200):
    """Logistic regression on standardised features (full-batch L-BFGS, deterministic):
    returns (mean, std, weights, bias)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return mu, sd, w.detach(), b.detach()


def probe_accuracy(probe, x: torch.Tensor, y: torch.Tensor) -> float:
    """Balanced accuracy: the mean of the accuracies on positives and on negatives."""
    mu, sd, w, b = probe
    right = (((x - mu) / sd @ w + b > 0).float() == y).float()
    return float((right[y == 1].mean() + right[y == 0].mean()) / 2)
