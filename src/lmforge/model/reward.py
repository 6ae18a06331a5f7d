"""A transformer that scores a whole conversation: reward models and PPO's value model.

    rm = RewardModel(trunk, heads=1, pad_id=tok.pad_id)    # a new score head on a trunk
    scores = rm(input_ids)                       # (B, heads): one score per head at the last token
    save_reward_model(rm, "runs/rm/model")       # == transformers' LlamaForSequenceClassification
    rm = load_reward_model("runs/rm/model")
    values = rm.token_scores(input_ids)          # (B, T, heads): a score at every position (critic)

The layout is transformers' `*ForSequenceClassification`: the decoder's weights under
`model.*` and one `score` matrix (heads × hidden, no bias), read at the last token that is
not padding (the rightmost id != pad_token_id, exactly the rule transformers applies, so both
give the same score to the same ids). An ensemble of k heads on one trunk is simply
`num_labels = k`: the mean over heads is the reward, their spread the model's uncertainty.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from lmforge.errors import InputError
from lmforge.model.hub import model_config_from_hf, model_config_to_hf, model_from_state, read_safetensors
from lmforge.model.transformer import Transformer

SEQUENCE_CLASSIFIERS = {"llama": "LlamaForSequenceClassification", "qwen2": "Qwen2ForSequenceClassification",
                        "qwen3": "Qwen3ForSequenceClassification"}


class RewardModel(nn.Module):
    def __init__(self, trunk: Transformer, heads: int = 1, pad_id: int = 0):
        super().__init__()
        self.trunk, self.pad_id = trunk, pad_id
        self.score = nn.Linear(trunk.config.hidden_size, heads, bias=False)
        nn.init.normal_(self.score.weight, std=trunk.config.initializer_range)
        self.score.to(trunk.model.embed_tokens.weight.device)

    @property
    def config(self):
        return self.trunk.config

    @property
    def heads(self) -> int:
        return self.score.out_features

    def token_scores(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, heads) in fp32: the score after every prefix (a critic's values)."""
        return self.score(self.trunk(input_ids, return_hidden=True)).float()

    def forward(self, input_ids: torch.Tensor, score_index: torch.Tensor | None = None,
                **model_kwargs) -> torch.Tensor:
        """(B, T) right-padded ids -> (B, heads) scores at each row's last non-pad token; or,
        given score_index (B, k), (B, k, heads) scores at those positions (several sequences
        packed in a row: model_kwargs carry its positions and attn_mask to the trunk)."""
        hidden = self.trunk(input_ids, return_hidden=True, **model_kwargs)
        rows = torch.arange(len(input_ids), device=hidden.device)
        if score_index is None:
            return self.score(hidden[rows, last_token_index(input_ids, self.pad_id)]).float()
        return self.score(hidden[rows[:, None], score_index.to(hidden.device)]).float()


def last_token_index(input_ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """(B,) index of the rightmost token that is not `pad_id` (0 for an all-pad row): the
    position transformers' sequence classifiers read."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return (positions * (input_ids != pad_id)).argmax(-1)


def save_reward_model(rm: RewardModel, out_dir: str | os.PathLike, tok=None,
                      state: dict[str, torch.Tensor] | None = None) -> None:
    """A transformers `*ForSequenceClassification` directory (+ the tokenizer when given); the
    weights are `state` when given (`rm.state_dict()`'s names: a sharded model's gathered
    tensors), else the model's."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = model_config_to_hf(rm.config)
    hf["architectures"] = [SEQUENCE_CLASSIFIERS[hf["model_type"]]]
    hf.update(num_labels=rm.heads, id2label={str(i): f"LABEL_{i}" for i in range(rm.heads)},
              label2id={f"LABEL_{i}": i for i in range(rm.heads)}, pad_token_id=rm.pad_id,
              problem_type="regression")
    (out / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    state = rm.state_dict() if state is None else state
    tensors = {k.removeprefix("trunk."): v.detach().contiguous().cpu() for k, v in state.items()
               if k.startswith("trunk.model.") or k == "score.weight"}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if tok is not None:
        tok.save(out)


def is_reward_model(path: str | os.PathLike) -> bool:
    config = Path(path) / "config.json"
    return config.exists() and any(a.endswith("ForSequenceClassification")
                                   for a in json.loads(config.read_text()).get("architectures", []))


def load_reward_model(path: str | os.PathLike, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32) -> RewardModel:
    """A `*ForSequenceClassification` directory (ours or transformers') -> RewardModel."""
    path = Path(path)
    if not is_reward_model(path):
        raise InputError("not a reward model directory (config.json names no *ForSequenceClassification)", path)
    hf = json.loads((path / "config.json").read_text())
    cfg = model_config_from_hf(hf, path / "config.json")
    state = read_safetensors(path)
    if "score.weight" not in state:
        raise InputError("no score.weight in the weights", path)
    score = state.pop("score.weight")
    if not cfg.tie_word_embeddings:  # a classifier has no LM head; the trunk's stays unused
        state["lm_head.weight"] = torch.zeros(cfg.vocab_size, cfg.hidden_size)
    pad_id = hf.get("pad_token_id")
    rm = RewardModel(model_from_state(cfg, state, path, device), heads=score.shape[0],
                     pad_id=0 if pad_id is None else int(pad_id))
    with torch.no_grad():
        rm.score.weight.copy_(score)
    return rm.to(dtype)
