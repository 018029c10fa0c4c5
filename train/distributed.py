"""Training on several processes (GPUs, or machines) with torch.distributed, as torchrun starts them.

Every process draws the same seeded order and augmentation and trains on its own slice of each
batch, so N processes see the images one process sees; only rank 0 validates and writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# How long a process waits in a collective for the others. Rank 0 alone validates each network
# (the robustness suite included), fits the SVM (about an hour on a CPU) and the committee, while
# the others go on to the next network and wait for it in DistributedDataParallel's first
# broadcast: the default 10 to 30 minutes would time them out there. A process that dies is not
# waited for: torchrun stops the others.
COLLECTIVE_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in the run: rank ``rank`` of ``world``."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Whether this process prints, validates and writes files."""
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a batch: consecutive, sizes differing by at most one."""
        return batch.tensor_split(self.world)[self.rank] if self.world > 1 else batch

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Each value summed over every process (an all-reduce; NCCL needs ``device`` to be the GPU)."""
        if self.world == 1:
            return values
        total = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return total.tolist()


def current() -> Ranks:
    return Ranks(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else Ranks()


def start(device: str | None) -> str | None:
    """Join the process group when torchrun started this process (``WORLD_SIZE`` over 1); return
    the device this process trains on (its own GPU under torchrun, else ``device`` unchanged)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    on_gpu = torch.cuda.is_available() and device != "cpu"
    if on_gpu:
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    dist.init_process_group("nccl" if on_gpu else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
