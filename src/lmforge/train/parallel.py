"""Wrap an unmodified model for speed and scale: torch.compile, DDP, FSDP2.

    train_model = wrap_model(model, runtime, compile=True, parallel="fsdp")
    optimizer = build_optimizer(model, ...)      # after wrapping: FSDP2 shards in place

The model file knows none of this (torchtitan's rule); the raw model stays the one that
is saved and sampled from, the wrapper is what the objective calls. Under DDP every rank
holds the whole model, its gradients and optimizer state; under FSDP2 (`fully_shard`, one
group per decoder layer plus a root per model) each rank holds 1/world of each, gathering a
layer's weights just before it runs. The sharded model needs every rank in every forward
(samples and evaluations included) and in every save; `full_state_dict` and
`load_full_state_dict` turn it into and back from a plain state dict, so checkpoints stay
Hugging Face model dirs.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
import torch.utils.checkpoint
from torch import nn

from lmforge.config import require
from lmforge.runtime import Runtime

Parallel = Literal["ddp", "fsdp"]


def check_parallel(cfg) -> None:
    """For a stage config's __post_init__: what FSDP2 is wired for so far is full fine-tuning
    with AdamW (Muon orthogonalises whole matrices; each rank holds a slice of one)."""
    if cfg.parallel == "fsdp":
        require(getattr(cfg, "peft", "none") == "none", "peft", "none under parallel=fsdp", getattr(cfg, "peft", None))
        require(cfg.optim.name == "adamw", "optim.name", "adamw under parallel=fsdp", cfg.optim.name)


def wrap_model(model: nn.Module, runtime: Runtime, compile: bool = False, parallel: Parallel = "ddp") -> nn.Module:
    if runtime.world_size > 1 and parallel == "fsdp":
        shard_model(model, runtime)
    if compile:
        model = torch.compile(model)
    if runtime.world_size > 1 and parallel == "ddp":
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    return model


def shard_model(model: nn.Module, runtime: Runtime) -> None:
    """FSDP2 in place: each decoder layer its own group; each Transformer (a policy, a critic's
    or reward model's trunk) a root over the rest of its weights (embeddings, head, final
    norm: a tied head stays one tensor); any module holding weights outside a Transformer (a
    score head) a root of its own. Under bf16 the gathered weights are bf16 and gradients are
    reduced in fp32. Rank 0's weights are broadcast first, as DDP does; a model on the meta
    device instead has each rank draw its own shards' initial values."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from lmforge.model.transformer import DecoderLayer

    policy = MixedPrecisionPolicy()
    if runtime.dtype != torch.float32:
        policy = MixedPrecisionPolicy(param_dtype=runtime.dtype, reduce_dtype=torch.float32)
    layers = [m for m in model.modules() if isinstance(m, DecoderLayer)]
    if not layers:
        raise ValueError(f"parallel=fsdp: no decoder layers to shard in {type(model).__name__}")
    meta = any(p.is_meta for p in model.parameters())
    if not meta:  # a head drawn from each rank's own seed (PPO's value head) would differ
        with torch.no_grad():
            for p in model.parameters():
                dist.broadcast(p, src=0)
    for layer in layers:
        fully_shard(layer, mp_policy=policy)
    # Separate roots rather than one over the whole: PPO samples from the policy and asks the
    # critic for values outside the actor-critic's forward, FSDP2 gathers a group's weights
    # only in its own module's forward, and a root must run before anything nested in it.
    # Roots reshard after forward too (FSDP2 keeps them gathered by default): otherwise a
    # forward outside training (samples, evaluation) would leave full tensors registered as
    # their parameters, which the optimizer and the checkpoint do not know.
    for root in _roots(model):
        fully_shard(root, mp_policy=policy, reshard_after_forward=True)
    if meta:
        # Built on the meta device (pretraining from scratch): memory for this rank's shards
        # only, each initialised in place, so no rank ever holds the whole model.
        model.to_empty(device=runtime.device)
        model.reset_parameters()


def _roots(model: nn.Module) -> list[nn.Module]:
    """Every Transformer in `model`, then every module with weights of its own outside them."""
    from lmforge.model.transformer import Transformer

    trunks = [m for m in model.modules() if isinstance(m, Transformer)]
    inside = {id(p) for t in trunks for p in t.parameters()}
    heads = [m for m in model.modules() if any(id(p) not in inside for p in m.parameters(recurse=False))]
    return trunks + heads


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return dist.is_initialized() and any(isinstance(m, FSDPModule) for m in model.modules())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's tensors on the CPU. Sharded: a collective (every rank calls it),
    rank 0 gets the tensors and the others an empty dict."""
    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_tensors(named: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """These tensors whole, on the CPU (some of a model's, where `full_state_dict` would
    gather all of it). A sharded one is gathered: a collective, every rank calls it."""
    from torch.distributed.tensor import DTensor

    return {n: (t.full_tensor() if isinstance(t, DTensor) else t).detach().contiguous().cpu()
            for n, t in named.items()}


def writes_files(model: nn.Module) -> bool:
    """Whether this rank writes what it gathered of `model`: rank 0 when sharded (every rank
    gathers), any rank otherwise (the stages save from the main rank only)."""
    return not is_sharded(model) or dist.get_rank() == 0


def load_full_state_dict(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> None:
    """Load a whole-model state dict (every rank passes the same one) into a plain or sharded
    model; strict=False: some of its tensors, the rest kept."""
    if not is_sharded(model):
        with torch.no_grad():
            model.load_state_dict(state, strict=strict)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=strict))


def checkpoint_activations(model) -> None:
    """Recompute each decoder layer's activations in backward instead of storing them.
    Done by replacing the layers' forward from outside (names and state dicts unchanged)."""
    for layer in model.model.layers:
        forward = layer.forward
        layer.forward = lambda *args, _f=forward: torch.utils.checkpoint.checkpoint(
            _f, *args, use_reentrant=False)
