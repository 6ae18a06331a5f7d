"""DDP on 2 CPU processes (gloo) == one process on the concatenated batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lmforge.model.transformer import Transformer
from lmforge.runtime import Runtime
from lmforge.train.loop import LoopConfig, train
from lmforge.train.metrics import MetricsLog
from lmforge.train.objectives.lm import lm_objective
from lmforge.train.optim import OptimConfig, build_optimizer
from lmforge.train.parallel import wrap_model
from tests.conftest import ToyBatches, tiny_config

STEPS = 4


def _halves(rank: int, world: int):
    for batch in ToyBatches(batch_size=8):
        yield {k: v.chunk(world)[rank] for k, v in batch.items()}


def _run(rank: int, world: int, out_dir: str, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    rt = Runtime.setup("cpu", "float32", seed=0)
    torch.manual_seed(rank)  # different init per rank: DDP must broadcast rank 0's weights
    model = Transformer(tiny_config())
    wrapped = wrap_model(model, rt)
    optim = OptimConfig(lr=3e-3, warmup_steps=1)
    opt = build_optimizer(model, optim, rt.device)
    train(wrapped, lm_objective, _halves(rank, world), opt,
          loop=LoopConfig(max_steps=STEPS, progress=False), optim=optim, runtime=rt,
          log=MetricsLog(out_dir, enabled=False))
    torch.save(model.state_dict(), f"{out_dir}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(tmp_path):
    mp.spawn(_run, args=(2, str(tmp_path), 29511), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    for k in rank0:
        assert torch.equal(rank0[k], rank1[k]), k

    torch.set_num_threads(1)
    rt = Runtime.setup("cpu", "float32", seed=0)
    torch.manual_seed(0)
    model = Transformer(tiny_config())
    optim = OptimConfig(lr=3e-3, warmup_steps=1)
    train(model, lm_objective, ToyBatches(batch_size=8), build_optimizer(model, optim, rt.device),
          loop=LoopConfig(max_steps=STEPS, progress=False), optim=optim, runtime=rt,
          log=MetricsLog(tmp_path, enabled=False))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(rank0[k], v, atol=2e-5, rtol=1e-4)
