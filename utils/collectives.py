"""Collectives with gradients that losses need under torch.distributed (no-ops in one process).

Lives in utils/ because distillers may import only models/ and utils/ (README, Layout).
"""
import torch
import torch.distributed as dist


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def process_rank() -> int:
    """This process's rank (0 in one process): where its rows sit in a ``gather_batch``-ed batch."""
    return dist.get_rank() if _world_size() > 1 else 0


class _GatherOverProcesses(torch.autograd.Function):
    """Concatenate every process's equally sized batch along dim 0, in rank order, with a
    gradient: the gathered tensor's gradient is summed over processes (each one may compute a
    different loss from it) and each process keeps the rows it contributed."""

    @staticmethod
    def forward(ctx, tensor):
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows, ctx.rank = tensor.shape[0], dist.get_rank()
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_batch(tensor: torch.Tensor) -> torch.Tensor:
    """The global batch of ``tensor`` (rows of every process, rank order; itself in one process).

    For losses that couple the samples of a batch (DIST's per-class correlation over the batch):
    computing them on the gathered batch makes N processes x B/N equal one process x B, which a
    per-process loss does not. Every process must pass the same number of rows (the training
    sampler pads shards to equal length). Gradients flow back to each process's own rows;
    with DDP averaging parameter gradients over processes the result is the one-process gradient.
    """
    return tensor if _world_size() == 1 else _GatherOverProcesses.apply(tensor)


def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over processes (itself in one process), with a gradient: each
    process's input feeds every process's output, so an input's gradient is the sum of the
    output gradients over processes (what the gathered rows' backward computes)."""
    return gather_batch(tensor[None]).sum(0)
