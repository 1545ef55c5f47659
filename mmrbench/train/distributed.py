"""Data parallelism with torch.distributed, nothing home-made.

Launch with ``torchrun --nproc_per_node N -m mmrbench train ...`` (or ``accelerate launch``): each
rank reads RANK / WORLD_SIZE / LOCAL_RANK from the environment, takes a strided share of every
batch (SFT examples, GRPO prompts: a group never straddles ranks, so group advantages stay local),
and after backward the LoRA gradients are summed with ``all_reduce``. Losses are divided by the
*global* token count of the batch (also all-reduced), so the summed gradient is exactly the
gradient of the whole batch on one rank: same update, whatever the world size.
Only the LoRA weights are trainable, so reducing their gradients by hand is cheaper than wrapping
the whole model in DDP and gives the same result. For models that do not fit one GPU, shard with
FSDP (see docs/training.md).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence, TypeVar

import torch

T = TypeVar("T")


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "cpu") -> Dist:
    """Join the process group when launched by torchrun/accelerate (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shard(items: Sequence[T], d: Dist) -> list[T]:
    """This rank's strided share (rank, rank + world, ...) of a global batch."""
    return list(items[d.rank::d.world_size])


def all_reduce_sum(value: float, d: Dist, device: torch.device | str = "cpu") -> float:
    if not d.enabled:
        return float(value)
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def all_reduce_grads(params: Iterable[torch.nn.Parameter], d: Dist) -> None:
    """Sum the gradients of ``params`` over ranks (one flat buffer: one collective call)."""
    if not d.enabled:
        return
    import torch.distributed as dist

    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    off = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[off:off + n].view_as(p).clone()
        off += n


def broadcast_params(params: Iterable[torch.nn.Parameter], d: Dist) -> None:
    """Start every rank from rank 0's trainable weights (a fresh LoRA is randomly initialised)."""
    if not d.enabled:
        return
    import torch.distributed as dist

    for p in params:
        if p.requires_grad:
            dist.broadcast(p.data, src=0)


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()
