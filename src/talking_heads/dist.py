"""torchrun + DistributedDataParallel helpers: one code path from a laptop to a cluster (architecture.md 6).

A process started by `torchrun` finds RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT in its
environment and joins the process group (nccl on CUDA, gloo on CPU). A process started any other way is a
world of size 1: no process group is created, `wrap_ddp` returns the module unchanged, and every collective
below is a no-op. The training loop never branches on "distributed or not" beyond these helpers.

Episode order (`EpisodeSampler`): the global batch of step s is the same whatever the world size. Episodes
are a per-epoch permutation of the dataset (seeded by `seed + epoch`); global batch s is the slice
[s*B*world, (s+1)*B*world) of that stream, and rank r takes its B episodes strided by the world size, the
way `DistributedSampler` does. So 1 process with batch 2 and 2 processes with batch 1 see the same 2 episodes
at every step (the DDP-equality test relies on it), and a resumed run can start in the middle of an epoch.
Indices are yielded as `epoch * len(dataset) + i`, so a dataset that seeds its random draws by the index
(EpisodeDataset does) gives fresh episodes every epoch, identical on any rank, worker or resume.

Launch (see the README): one node, 8 GPUs
    torchrun --standalone --nproc-per-node=8 --no-python talking-heads train --preset paper --data DIR --out RUN
several nodes (the same command on every node; HOST = one of them, e.g. the first of $SLURM_JOB_NODELIST)
    torchrun --nnodes=4 --nproc-per-node=8 --rdzv-id=$SLURM_JOB_ID --rdzv-backend=c10d \
        --rdzv-endpoint=HOST:29500 --no-python talking-heads train --preset paper --data DIR --out RUN
cfg.train.batch_size is per process: the global batch is batch_size x world size.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as tdist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the world."""

    rank: int = 0  # global rank
    local_rank: int = 0  # rank on this node (picks the CUDA device)
    world_size: int = 1  # number of processes
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device: str | None = None, timeout_s: float = 1800) -> DistInfo:
    """Join the process group described by the environment, or return a world of size 1.

    `device`: "cpu", "cuda" or None (CUDA when available). On CUDA each process uses cuda:LOCAL_RANK.
    Calling it again when the group already exists returns the same info.
    """
    want_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if want_cuda and not torch.cuda.is_available():
        raise RuntimeError("CUDA requested but torch.cuda.is_available() is False")
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        dev = torch.device("cuda", torch.cuda.current_device()) if want_cuda else torch.device("cpu")
        if device and ":" in device:
            dev = torch.device(device)
        return DistInfo(device=dev)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if want_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if want_cuda else "gloo", rank=rank, world_size=world,
                                 timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=dev)


def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        tdist.barrier()


def cleanup() -> None:
    """Leave the process group (safe to call in a world of size 1)."""
    if is_initialized():
        tdist.destroy_process_group()


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """DistributedDataParallel around `module` in a world > 1, the module itself otherwise.

    find_unused_parameters stays False: every step uses every parameter it trains (see train/steps.py).
    """
    if not info.distributed:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers (what checkpoints store)."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):  # torch.compile's OptimizedModule
            module = module._orig_mod
        else:
            return module


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Mean of scalar logs over ranks (identity in a world of size 1)."""
    if not is_initialized() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    tdist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.tolist()))


def any_true_each(flags: Sequence[bool], device: torch.device) -> list[bool]:
    """For each flag: true on every rank when it is true on any rank (so all ranks stop at the same step). One
    collective for all the flags (one host-device round trip per step, not one per flag)."""
    if not is_initialized():
        return [bool(f) for f in flags]
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return [bool(v > 0) for v in t.tolist()]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order ([obj] in a world of size 1)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


class EpisodeSampler(torch.utils.data.Sampler[int]):
    """Dataset indices for this rank, in an order that is independent of the world size (module docstring).

    Yields `batch_size` indices per step, forever, epoch after epoch, starting at (`epoch`, `position`);
    `state_after(steps)` / `load_state()` give the point to resume from, stored in the training state.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if num_items < 1:
            raise ValueError("the dataset is empty")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0  # position: global episodes consumed in this epoch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def _epoch_order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed + epoch)
        order = torch.randperm(self.num_items, generator=g).tolist()
        # pad to a multiple of the global batch (as DistributedSampler does) so every step is full
        while len(order) % self.global_batch:
            order += order[: self.global_batch - len(order) % self.global_batch]
        return order

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.num_items // self.global_batch)

    def state(self) -> dict[str, int]:
        """Where the next iteration starts (epoch, global episodes already consumed in it)."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def state_after(self, steps: int) -> dict[str, int]:
        """The state once `steps` global batches have been consumed from the current start.

        DataLoader workers prefetch ahead of the loop, so the training loop records what it has *used*,
        computed here, never where the iterator happens to be.
        """
        done = self.position // self.global_batch + steps
        return {"epoch": self.epoch + done // self.steps_per_epoch,
                "position": (done % self.steps_per_epoch) * self.global_batch}

    def __iter__(self) -> Iterator[int]:
        epoch, position = self.epoch, self.position
        while True:
            order = self._epoch_order(epoch)
            while position < len(order):
                chunk = order[position: position + self.global_batch]
                position += self.global_batch
                # index + epoch * N: the dataset derives the epoch from it (EpisodeDataset takes any
                # index modulo its length and seeds its draws by (seed, epoch, video))
                yield from (i + epoch * self.num_items for i in chunk[self.rank:: self.world_size])
            epoch, position = epoch + 1, 0

    def __len__(self) -> int:  # one epoch's share of this rank (the iterator itself never ends)
        return self.steps_per_epoch * self.batch_size
