"""Devices, distributed set-up for torchrun, and the all-gather that keeps gradients.

One node, N GPUs:

    torchrun --nproc-per-node N -m s2r2lib.train --config run.yaml

Several nodes: the same command on every node, meeting at a rendezvous on one of them (c10d; ranks are
assigned as the nodes join):

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-id run1 --rdzv-backend c10d --rdzv-endpoint host0:29500 \
             -m s2r2lib.train --config run.yaml

(The static form names each node instead: ``--nnodes 2 --node-rank 0|1 --master-addr host0 --master-port
29500``.) Each process drives the GPU of its ``LOCAL_RANK``; NCCL joins CUDA processes, gloo CPU ones.
"""

from __future__ import annotations

import contextlib
import datetime
import os

import torch
import torch.distributed as dist


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device`` with its index, so that devices written differently compare equal:
    "cuda" -> cuda:<current device>, "cpu" and "cpu:0" -> cpu (what CPU tensors report), "mps" -> mps:0.
    ValueError, naming the device, for a name torch does not know or a device this machine lacks."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device name; use cpu, cuda, cuda:<index> or mps") from None
    if parsed.type == "cpu":
        if parsed.index not in (None, 0):
            raise ValueError(f"device {device!r}: there is one CPU device; use device=cpu")
        return torch.device("cpu")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device {device!r}: CUDA is not available here ({why}); use device=cpu")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if parsed.index is None else parsed.index
        if index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}; choose one of them")
        return torch.device("cuda", index)
    if parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r}: MPS (Apple GPU) is not available here; use device=cpu")
        return torch.device("mps", 0)
    raise ValueError(f"device {device!r}: training runs on cpu, cuda or mps")


def check_sync_bn(sync_bn: bool, world: int, device: str | torch.device) -> None:
    """Refuse ``sync_bn`` in a multi-process run off CUDA: SyncBatchNorm has no CPU kernel."""
    if sync_bn and world > 1 and torch.device(device).type != "cuda":
        raise ValueError(f"sync_bn=true needs CUDA devices (SyncBatchNorm has no CPU kernel); got device {device}: "
                         "set sync_bn=false")


def with_sync_bn(module: torch.nn.Module, sync_bn: bool, world: int) -> torch.nn.Module:
    """``module`` with SyncBatchNorm in place of its batch norms when ``sync_bn`` and more than one process
    (all K views of an image sit on one rank, so per-rank statistics would leak); else ``module`` itself."""
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module) if sync_bn and world > 1 else module


def ddp_device_ids(device: torch.device) -> list[torch.device] | None:
    """DistributedDataParallel's ``device_ids``: the process's own GPU on CUDA, None on the CPU (gloo)."""
    return [device] if device.type == "cuda" else None


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device: str | torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this process's device) from torchrun's environment; (0, 1, ``device``) without it.

    Under torchrun a CUDA process takes the GPU of its LOCAL_RANK and joins an NCCL group; a CPU one gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        device = resolve_device(device)
        if device.type == "cuda":
            torch.cuda.set_device(device)  # so that anything using the current device uses this one
        return 0, 1, device
    cuda = torch.device(device).type == "cuda"
    device = resolve_device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else device)
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), world, device


@contextlib.contextmanager
def rank_zero_first(timeout: datetime.timedelta = datetime.timedelta(hours=12)):
    """Run the block on rank 0 first and on the other ranks once it is done (e.g. building a data cache
    that the others then memory-map). The wait is a gloo barrier with its own ``timeout``, so a long first
    decode (COCO) does not trip NCCL's watchdog. No-op outside torchrun."""
    if not is_distributed():
        yield
        return
    group = dist.new_group(backend="gloo", timeout=timeout)
    if dist.get_rank() != 0:
        dist.barrier(group=group)
    yield
    if dist.get_rank() == 0:
        dist.barrier(group=group)
    dist.destroy_process_group(group)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient and returns this process's slice."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        # A copy: autograd may hand the same tensor to other consumers (or it is the caller's own
        # gradient), and all_reduce works in place.
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n, ...) of every process in rank order, keeping gradients; ``x`` alone when
    not distributed. Each process then computes the loss of the global batch; with DDP's averaging
    the parameters get exactly the global batch's gradient (not 1 / world of it)."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)
