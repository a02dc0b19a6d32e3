"""torchrun / DistributedDataParallel plumbing. Plain `python train.py` runs as a world of one."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a tensor over all ranks in place (no-op in a world of one)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise max over all ranks in place (no-op in a world of one)."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


class ShardSampler(torch.utils.data.Sampler[int]):
    """Evaluation sampler: rank r takes indices r, r + W, r + 2W, ... of ``indices``; no padding,
    so no sample is seen twice and gathered predictions need no de-duplication."""

    def __init__(self, indices: list[int], info: DistInfo):
        self.indices = list(indices)[info.rank::info.world_size]

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


class EpochShuffleSampler(torch.utils.data.Sampler[int]):
    """Training sampler whose order depends only on (seed, epoch): rank r of W takes every W-th item of
    a permutation of ``indices`` seeded by seed + epoch, padded by wrap-around so all ranks get the same
    count (as DistributedSampler). Resuming at epoch e therefore replays exactly the same order."""

    def __init__(self, indices: list[int], info: DistInfo, seed: int):
        self.indices = list(indices)
        self.info = info
        self.seed = seed
        self.epoch = 0
        self.per_rank = -(-len(self.indices) // info.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.indices), generator=g).tolist()
        total = self.per_rank * self.info.world_size
        order += order[: total - len(order)]
        return iter([self.indices[i] for i in order[self.info.rank:total:self.info.world_size]])

    def __len__(self) -> int:
        return self.per_rank


def log(info: DistInfo, *msg) -> None:
    """print on the main process only (flushed)."""
    if info.is_main:
        print(*msg, flush=True)
