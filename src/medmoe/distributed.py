"""Data-parallel training on PyTorch's own engine: torchrun environment, gathering with gradients,
and batch norm over the global batch.

    torchrun --nproc_per_node 2 -m medmoe train ...

Contrastive losses live on negatives, so the global loss gathers every rank's embeddings
(``all_gather_with_grad``) and each rank scores its own samples against all of them; the
gradient flows back to the rank that produced each embedding. ``SyncBatchNorm2d`` normalises
the experts' features with statistics of the whole global batch, on CPU (gloo) as on GPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .errors import ConfigError
from .precision import upcast


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes logs and checkpoints and shows progress."""
        return self.rank == 0


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def setup(device: str = "auto") -> Process:
    """Join the process group that torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*):
    nccl on GPU, gloo on CPU. Without torchrun, a single process. ``device``: auto, cpu or cuda."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    dev = torch.device(device, local_rank) if device == "cuda" else torch.device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return Process(dist.get_rank() if world > 1 else 0, world, local_rank, dev)


def teardown(ok: bool = True) -> None:
    """Leave the process group. After a run that ended normally (``ok``) the ranks first meet at a
    barrier, so no rank closes its connections while a peer still talks to it."""
    if dist.is_available() and dist.is_initialized():
        if ok and dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, whether or not DistributedDataParallel wraps it."""
    return getattr(model, "module", model)


def all_min(value: int, device: torch.device) -> int:
    """The smallest ``value`` over all ranks (for decisions every rank must take alike)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def all_true(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` holds on every rank."""
    return bool(all_min(int(flag), device))


class _AllGather(torch.autograd.Function):
    """All-gather with autograd on the public ``dist.all_gather``: [b, ...] -> [world, b, ...]. The
    gradient of this rank's input is the sum over ranks of the gradients of its gathered copy."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[dist.get_rank()]


class _AllReduce(torch.autograd.Function):
    """Sum over ranks with autograd on the public ``dist.all_reduce`` (its gradient is the sum too)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def broadcast_object(value):
    """Rank 0's ``value`` on every rank (``value`` as it is outside distributed training)."""
    if not is_distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_lists(items: list) -> list:
    """Every rank's list, concatenated in rank order (on every rank)."""
    if not is_distributed():
        return items
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def all_gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` [b_r, ...] of every rank along dim 0; returns (gathered, offset of this
    rank's rows). Ranks may hold different b_r and different sizes of the other dims (padded with
    zeros to the largest). The gradient of each row flows back to the rank that made it."""
    if not is_distributed():
        return x, 0
    shape = torch.tensor(x.shape, device=x.device)
    shapes = [torch.empty_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    shapes = [s.tolist() for s in shapes]
    big = [max(s[d] for s in shapes) for d in range(x.dim())]
    pad = [p for d in reversed(range(x.dim())) for p in (0, big[d] - x.shape[d])]
    parts = _AllGather.apply(nn.functional.pad(x, pad))
    rows = [s[0] for s in shapes]
    offset = sum(rows[: dist.get_rank()])
    return torch.cat([part[:n] for part, n in zip(parts, rows)]), offset


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch over all ranks.

    torch's ``nn.SyncBatchNorm`` refuses CPU tensors, and our gloo tests run on CPU, so this one
    all-reduces (sum, sum of squares, count) with autograd: one code path on CPU and GPU. It also
    accepts an empty batch (an expert no sample of this rank was routed to), which must still
    join the collective. Outside distributed training it is plain BatchNorm2d.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        return batch_norm_together([(self, x)])[0]

    def local_stats(self, x: torch.Tensor) -> torch.Tensor:
        """[sum over (B, H, W) per channel, sum of squares per channel, count] of this rank."""
        x = upcast(x)  # statistics in >= fp32
        return torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), x.new_full((1,), x.numel() / x.shape[1])])

    def normalise(self, x: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` with the global statistics ``total`` (local_stats summed over ranks)."""
        c = x.shape[1]
        count = total[-1].clamp(min=1)
        mean = total[:c] / count
        var = (total[c : 2 * c] / count - mean * mean).clamp(min=0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1 / float(self.num_batches_tracked)
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), m)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale + (self.bias if self.affine else 0)
        return (x * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


def batch_norm_together(pairs: list[tuple[nn.BatchNorm2d, torch.Tensor]]) -> list[torch.Tensor]:
    """``bn(x)`` for each pair; the SyncBatchNorm2d layers training under DDP share one all-reduce,
    so a stage of several batch norms (every expert's, every scale's) costs one collective."""
    synced = [isinstance(bn, SyncBatchNorm2d) and bn.training and is_distributed() for bn, _ in pairs]
    out = [None if sync else bn(x) for (bn, x), sync in zip(pairs, synced)]
    if any(synced):
        stats = [bn.local_stats(x) for (bn, x), sync in zip(pairs, synced) if sync]
        totals = iter(_AllReduce.apply(torch.cat(stats)).split([len(s) for s in stats]))
        out = [bn.normalise(x, next(totals)) if sync else y for (bn, x), sync, y in zip(pairs, synced, out)]
    return out


def syncs_batchnorm(module: nn.Module) -> bool:
    """True when ``module``'s batch norms synchronise across ranks (SyncBatchNorm2d under DDP)."""
    return is_distributed() and any(isinstance(m, SyncBatchNorm2d) for m in module.modules())


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d under ``module`` by a SyncBatchNorm2d with the same state (in place)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            like = child.weight if child.affine else child.running_mean
            where = {} if like is None else {"device": like.device, "dtype": like.dtype}
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                   child.track_running_stats, **where)
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module
