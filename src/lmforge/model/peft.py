"""Parameter-efficient fine-tuning, attached to an unmodified Transformer from outside.

    model = apply_peft(model, "lora", lora=LoRAConfig(r=8))   # base frozen, LoRA trainable
    save_adapter(model, "runs/sft/model")     # adapter_config.json + adapter_model.safetensors
    with disable_adapters(model): ...         # the base model (DPO's reference, for free)
    plain = merge_and_unload(model)           # a Transformer again, the update folded in

Three methods, one rule: the base weights are frozen and never change; only the new
parameters train. The model code knows nothing of this:
- LoRA (Hu et al. 2021) replaces chosen nn.Linear modules by `LoRALinear`, which keeps the
  frozen weight under its original name (so `model.layers.0.self_attn.q_proj.weight` is
  still an HF name) and adds `lora_A` (r×in) and `lora_B` (out×r, zero-initialised, so
  training starts at the base model): y = W x + b + (alpha/r)·B A dropout(x).
- Adapters (Houlsby et al. 2019): a bottleneck MLP h + up(gelu(down(h))) after the
  attention and after the MLP of every layer, added by forward hooks; `up` is zero-init.
- Prompt Tuning (Lester et al. 2021): `PromptTuned` wraps the model and prepends learned
  "virtual token" embeddings to the input embeddings, dropping their logits again so the
  objective sees (B, T, V) as usual; generation prefills them into the KV cache once.

Files follow PEFT's format (`base_model.model.<HF module path>.lora_A.weight`,
`prompt_embeddings`), so `peft.PeftModel.from_pretrained(transformers_model, dir)` loads
our LoRA and prompt-tuning adapters. PEFT has no Houlsby adapter, so those files use our
own `peft_type` ("LMFORGE_BOTTLENECK") and load only here.
"""

from __future__ import annotations

import contextlib
import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from lmforge.errors import InputError
from lmforge.model.quantize import QuantizedLinear

PeftMethod = Literal["none", "lora", "adapter", "prompt"]
PEFT_PREFIX = "base_model.model."  # PEFT's name for the wrapped transformers model
CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
ADAPTER_PARTS = {"lora_A", "lora_B", "attn_adapter", "mlp_adapter"}  # names of added modules
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoRAConfig:
    r: int = 8  # rank of the update B·A
    alpha: float = 16.0  # the update is scaled by alpha / r
    dropout: float = 0.0  # dropout on the LoRA branch's input
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))  # Linear names to adapt


@dataclass
class AdapterConfig:
    bottleneck_size: int = 64  # hidden width of each Houlsby adapter


@dataclass
class PromptTuningConfig:
    num_virtual_tokens: int = 16  # learned embeddings prepended to every input
    init_text: str = ""  # initialise from this text's token embeddings (else random vocab rows)


# --- LoRA -------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update; names stay the Linear's.

    On a quantized base (QLoRA, Dettmers et al. 2023) the frozen layer is a QuantizedLinear
    kept as `quantized`; the update trains in float and is saved exactly as on a float base.
    """

    def __init__(self, base: nn.Linear | QuantizedLinear, r: int, alpha: float, dropout: float):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        if isinstance(base, QuantizedLinear):
            self.quantized, self.weight, self.bias = base, None, None
            device, dtype = base.scales.device, torch.get_default_dtype()
        else:
            self.quantized = None
            self.weight = base.weight  # the same Parameter objects: no copy, names unchanged
            self.bias = base.bias
            self.weight.requires_grad_(False)
            if self.bias is not None:
                self.bias.requires_grad_(False)
            device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=device, dtype=dtype)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=5 ** 0.5)  # PEFT's default init
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias) if self.quantized is None else self.quantized(x)
        if self.merged or self.disabled:
            return y
        # Scale the rank-r intermediate, not the (tokens × out) update, and let the GEMM add
        # the update into y (addmm): two fewer full-size elementwise passes than y + s·B(A x).
        a = self.lora_A(self.dropout(x)) * self.scaling
        return torch.addmm(y.flatten(0, -2), a.flatten(0, -2), self.lora_B.weight.T).view_as(y)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if self.quantized is not None:
            raise ValueError("cannot merge LoRA into a quantized base: merge into the float base "
                             "(load it unquantized with the adapter) or keep the adapter separate")
        if not self.merged:
            self.weight.add_(self.delta_weight().to(self.weight.dtype))
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight.sub_(self.delta_weight().to(self.weight.dtype))
            self.merged = False


def attach_lora(model: nn.Module, cfg: LoRAConfig) -> nn.Module:
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, (nn.Linear, QuantizedLinear)) and name.rsplit(".", 1)[-1] in cfg.target_modules
               and name != "lm_head"]
    if not targets:
        raise ValueError(f"no nn.Linear named {cfg.target_modules} in the model")
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child,
                LoRALinear(module, cfg.r, cfg.alpha, cfg.dropout))
    model.peft_config = _lora_peft_config(cfg)
    return model


def _lora_peft_config(cfg: LoRAConfig) -> dict:
    return {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": cfg.r, "lora_alpha": cfg.alpha,
            "lora_dropout": cfg.dropout, "target_modules": sorted(cfg.target_modules),
            "bias": "none", "fan_in_fan_out": False, "init_lora_weights": True,
            "use_rslora": False, "use_dora": False, "modules_to_save": None,
            "inference_mode": True}


def lora_modules(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> None:
    """Fold every B·A into its frozen weight (inference at base speed; `unmerge_lora` undoes)."""
    for m in lora_modules(model):
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    for m in lora_modules(model):
        m.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge LoRA and put plain nn.Linear modules back: an ordinary Transformer to export."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            module.merge()
            plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                              device="meta")
            plain.weight, plain.bias = module.weight, module.bias
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, plain)
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


# --- Adapters ---------------------------------------------------------------------------
class BottleneckAdapter(nn.Module):
    """h + up(gelu(down(h))); `up` starts at zero so the adapted model starts as the base."""

    def __init__(self, dim: int, bottleneck: int, device=None, dtype=None):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck, device=device, dtype=dtype)
        self.up = nn.Linear(bottleneck, dim, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.disabled = False

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.disabled:
            return h
        return h + self.up(F.gelu(self.down(h)))


def _run_adapter(adapter: BottleneckAdapter, _module, _args, out: torch.Tensor) -> torch.Tensor:
    return adapter(out)


def attach_adapters(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """An adapter after each layer's attention and MLP (the sublayer output, before the
    residual add, as in Houlsby et al.), inserted by forward hooks."""
    for layer in model.model.layers:
        ref = layer.input_layernorm.weight
        for sublayer, name in ((layer.self_attn, "attn_adapter"), (layer.mlp, "mlp_adapter")):
            adapter = BottleneckAdapter(ref.shape[0], cfg.bottleneck_size, ref.device, ref.dtype)
            layer.add_module(name, adapter)
            # A partial, not a lambda: copy.deepcopy copies its adapter along with the
            # model (a lambda would keep calling the original model's adapter).
            sublayer.register_forward_hook(functools.partial(_run_adapter, adapter))
    model.peft_config = {"peft_type": "LMFORGE_BOTTLENECK", "task_type": "CAUSAL_LM",
                         "bottleneck_size": cfg.bottleneck_size, "non_linearity": "gelu",
                         "placement": ["self_attn", "mlp"]}
    return model


# --- Prompt Tuning ----------------------------------------------------------------------
class PromptTuned(nn.Module):
    """The model with `num_virtual_tokens` learned embeddings in front of every input.

    The virtual tokens take positions 0..n-1, as in PEFT, and their logits are dropped so
    callers see (B, T, V). Decoding does not come through here: `infer.engine` takes the
    embeddings from `split_virtual_tokens` and prefills them into its KV cache once.
    """

    def __init__(self, model: nn.Module, prompt_embeddings: torch.Tensor):
        super().__init__()
        self.base_model = model
        self.prompt_embeddings = nn.Parameter(prompt_embeddings.clone())
        self.disabled = False

    @property
    def config(self):
        return self.base_model.config

    def forward(self, input_ids: torch.Tensor, return_hidden: bool = False) -> torch.Tensor:
        if self.disabled:
            return self.base_model(input_ids, return_hidden=return_hidden)
        embeds = self.base_model.model.embed_tokens(input_ids)
        B, n = input_ids.shape[0], self.prompt_embeddings.shape[0]
        prompt = self.prompt_embeddings.to(embeds.dtype).expand(B, -1, -1)
        out = self.base_model(None, inputs_embeds=torch.cat([prompt, embeds], 1),
                              return_hidden=return_hidden)
        return out[:, n:]


def attach_prompt(model: nn.Module, cfg: PromptTuningConfig,
                  init_ids: list[int] | None = None, seed: int = 0) -> PromptTuned:
    """init_ids: token ids of `cfg.init_text` (repeated or cut to n); else random vocab rows
    (Lester et al. found sampled vocabulary embeddings train better than random vectors)."""
    table = model.model.embed_tokens.weight.detach()
    n = cfg.num_virtual_tokens
    if init_ids:
        ids = torch.tensor((list(init_ids) * n)[:n])
    else:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, min(5000, table.shape[0]), (n,), generator=g)
    wrapped = PromptTuned(model, table[ids.to(table.device)])
    wrapped.peft_config = {
        "peft_type": "PROMPT_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": n,
        "token_dim": table.shape[1], "num_transformer_submodules": 1,
        "num_attention_heads": model.config.num_attention_heads,
        "num_layers": model.config.num_hidden_layers,
        "prompt_tuning_init": "TEXT" if init_ids else "RANDOM",
        "prompt_tuning_init_text": cfg.init_text or None, "inference_mode": True}
    return wrapped


# --- Common -----------------------------------------------------------------------------
def apply_peft(model: nn.Module, method: PeftMethod, lora: LoRAConfig | None = None,
               adapter: AdapterConfig | None = None, prompt: PromptTuningConfig | None = None,
               init_ids: list[int] | None = None) -> nn.Module:
    """Freeze the base and attach one method's parameters ("none" returns model unchanged)."""
    if method == "none":
        return model
    model.requires_grad_(False)
    if method == "lora":
        return attach_lora(model, lora or LoRAConfig())
    if method == "adapter":
        return attach_adapters(model, adapter or AdapterConfig())
    if method == "prompt":
        return attach_prompt(model, prompt or PromptTuningConfig(), init_ids)
    raise ValueError(f"unknown PEFT method {method!r} (none | lora | adapter | prompt)")


def unwrap(model: nn.Module) -> nn.Module:
    """The Transformer inside a PromptTuned wrapper (the model itself otherwise)."""
    return model.base_model if isinstance(model, PromptTuned) else model


def split_virtual_tokens(model: nn.Module) -> tuple[nn.Module, torch.Tensor | None]:
    """(the Transformer, the virtual-token embeddings (n, C) in front of every input, or
    None: no prompt tuning, or switched off by `disable_adapters`), for KV-cache decoding."""
    if isinstance(model, PromptTuned) and not model.disabled:
        return model.base_model, model.prompt_embeddings
    return unwrap(model), None


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total), counting a tied embedding once."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@contextlib.contextmanager
def disable_adapters(model: nn.Module):
    """Run the base model: LoRA unmerged and bypassed, adapters and virtual tokens off."""
    switches = [m for m in model.modules()
                if isinstance(m, (LoRALinear, BottleneckAdapter, PromptTuned))]
    merged = [m for m in switches if isinstance(m, LoRALinear) and m.merged]
    for m in merged:
        m.unmerge()
    for m in switches:
        m.disabled = True
    try:
        yield model
    finally:
        for m in switches:
            m.disabled = False
        for m in merged:
            m.merge()


def peft_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (adapter) tensors under PEFT's names."""
    if isinstance(model, PromptTuned):
        return {"prompt_embeddings": model.prompt_embeddings.detach()}
    return {PEFT_PREFIX + name: p.detach() for name, p in model.named_parameters()
            if any(part in ADAPTER_PARTS for part in name.split("."))}


def save_adapter(model: nn.Module, out_dir: str | Path, base_model_name_or_path: str = "") -> None:
    if not hasattr(model, "peft_config"):
        raise ValueError("the model has no PEFT adapter attached")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(model.peft_config, base_model_name_or_path=base_model_name_or_path or None)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    state = {k: v.contiguous().cpu() for k, v in peft_state_dict(model).items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"format": "pt"})


def read_adapter_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise InputError(f"no {CONFIG_FILE}: not an adapter directory", directory)
    return json.loads(path.read_text())


def load_adapter(model: nn.Module, directory: str | Path) -> nn.Module:
    """Attach the adapter saved in `directory` (ours or PEFT's LoRA/prompt) and load it."""
    cfg = read_adapter_config(directory)
    kind = cfg.get("peft_type")
    if kind == "LORA":
        lora = LoRAConfig(r=cfg["r"], alpha=cfg["lora_alpha"], dropout=cfg.get("lora_dropout", 0.0),
                          target_modules=list(cfg["target_modules"]))
        model = apply_peft(model, "lora", lora=lora)
    elif kind == "LMFORGE_BOTTLENECK":
        model = apply_peft(model, "adapter", adapter=AdapterConfig(cfg["bottleneck_size"]))
    elif kind == "PROMPT_TUNING":
        model = apply_peft(model, "prompt", prompt=PromptTuningConfig(cfg["num_virtual_tokens"]))
    else:
        raise InputError(f"unsupported peft_type {kind!r} (LORA, PROMPT_TUNING, "
                         "LMFORGE_BOTTLENECK)", Path(directory) / CONFIG_FILE)
    load_adapter_weights(model, directory)
    return model


@torch.no_grad()
def load_adapter_weights(model: nn.Module, directory: str | Path) -> None:
    """Copy saved adapter tensors into an already attached adapter (checkpoint restore)."""
    saved = load_file(str(Path(directory) / WEIGHTS_FILE))
    # PEFT itself may save with or without the ".default" adapter name.
    saved = {k.replace(".default.", "."): v for k, v in saved.items()}
    live = peft_state_dict(model)
    missing = sorted(set(live) - set(saved))
    if missing or set(saved) - set(live):
        raise InputError(f"adapter weights do not match the model: missing {missing[:3]}, "
                         f"unexpected {sorted(set(saved) - set(live))[:3]}", directory)
    for name, tensor in live.items():
        tensor.copy_(saved[name])


def peft_config_dict(method: PeftMethod, lora: LoRAConfig, adapter: AdapterConfig,
                     prompt: PromptTuningConfig) -> dict:
    """The chosen method's settings, for run records and reports."""
    return {"method": method, **({"lora": asdict(lora), "adapter": asdict(adapter),
                                  "prompt": asdict(prompt)}.get(method, {}))}
