"""Data-parallel training over ``world_size`` processes, arranged to equal one process exactly.

Every rank reads the same global batch (the shuffle is a function of seed and epoch) and takes a
contiguous share of its rows. The local loss is weighted by ``n_local · world_size / n_global``,
so DistributedDataParallel's gradient average is the gradient of the global batch mean; InfoNCE
sees the other ranks' targets as negatives (targets are payload vectors, data every rank can
read), so each row's loss is the one it has in single-process training. Validation is split
by batch over the ranks and its sums are all-reduced (:func:`validation.evaluate_val`), so
every rank gets the one-process figures and takes the same early-stopping decision. What is
left between a 2-process and a 1-process run is float summation order.

:data:`SINGLE` is the one-process case: it changes nothing, so the plain path stays bit-exact.
Launch: ``torchrun`` sets RANK/WORLD_SIZE/LOCAL_RANK; :func:`init_from_env` joins the group
(NCCL on CUDA, Gloo on CPU). See :mod:`lvm_pipeline.training.worker`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Distributed:
    """This process's place in the group: ``rank`` of ``world_size`` (0 of 1: no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 reports progress and publishes the checkpoint, once."""
        return self.rank == 0

    def share(self, n: int) -> slice:
        """This rank's contiguous rows of a global batch of ``n`` (sizes differ by at most 1)."""
        base, extra = divmod(n, self.world_size)
        lo = self.rank * base + min(self.rank, extra)
        return slice(lo, lo + base + (1 if self.rank < extra else 0))

    def local_batch(self, context: torch.Tensor, target: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
        """This rank's part of a global batch: context (b, L, D), target (b, D), the other
        ranks' targets (n - b, D) as extra InfoNCE negatives, and the loss weight
        b·world_size/n that turns DDP's gradient average into the global batch mean."""
        n = len(target)
        if self.world_size == 1:
            return context, target, None, 1.0
        rows = self.share(n)
        negatives = torch.cat([target[:rows.start], target[rows.stop:]])  # (n - b, D)
        weight = (rows.stop - rows.start) * self.world_size / n
        return context[rows], target[rows], negatives, weight

    def sum(self, values: list[float], device: str) -> list[float]:
        """Element-wise sum of ``values`` over all ranks (float64, identical on every rank)."""
        if self.world_size == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()


SINGLE = Distributed()


def backend_for(device: str) -> str:
    """NCCL between GPUs, Gloo between CPU processes."""
    return "nccl" if device.startswith("cuda") else "gloo"


def init_from_env(device: str) -> Distributed:
    """Join the process group that ``torchrun`` describes in the environment.

    Without torchrun's variables this is a single process and nothing is initialised.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return SINGLE
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"rank {rank}: world_size {world_size} on device 'cuda' needs one "
                             f"GPU per process, but torch sees {torch.cuda.device_count()}")
        torch.cuda.set_device(local_rank)  # "cuda" then means this rank's GPU
    dist.init_process_group(backend=backend_for(device), rank=rank, world_size=world_size)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown(group: Distributed) -> None:
    if group.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()
