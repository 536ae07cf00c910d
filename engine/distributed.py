"""torch.distributed set-up for ``torchrun`` launches (one process per device, one or more machines).

torchrun exports RANK / WORLD_SIZE / LOCAL_RANK; under ``srun`` without torchrun they are taken
from SLURM's variables (``adopt_slurm_environment``); without either the run is a single process
and nothing here touches torch.distributed. NCCL on GPUs, gloo on CPU. A finite timeout makes a
failed or hung rank end the whole job instead of blocking the others for hours: 600 s by default,
``DISTILLERY_DIST_TIMEOUT_S`` overrides it (raise it when rank 0 has long work of its own, such as
building a teacher cache on a slow file system). When one rank exits non-zero, torchrun stops the
others and reports the failure.

``runtime.sync_bn`` uses torch's ``SyncBatchNorm`` on GPUs and ``CpuSyncBatchNorm`` (below) on CPU,
where torch's kernel and DDP refuse it: the same global-batch statistics from autograd-aware
sums over processes, so a CPU run checks what a GPU run computes.
"""
import datetime
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from utils.collectives import sum_over_processes
from utils.errors import UserError

TIMEOUT_ENV = "DISTILLERY_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 600.0


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


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV) or str(DEFAULT_TIMEOUT_S)
    try:
        if float(value) > 0:
            return float(value)
    except ValueError:
        pass
    raise UserError(f"{TIMEOUT_ENV}={value!r}: give a positive number of seconds")


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list in its compact form: ``gpu[07-09,12],cpu1`` -> gpu07."""
    head = re.match(r"([^,\[]*)(\[([^\],-]*))?", nodelist.strip())
    return head.group(1) + (head.group(3) or "")


def adopt_slurm_environment(env=os.environ) -> bool:
    """Under ``srun`` (one task per GPU, any number of nodes) and not under torchrun: set the
    variables torchrun would (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) from
    SLURM's, so ``srun python train.py ...`` needs no launcher. The first node of the step is the
    master; the port is MASTER_PORT if set, else derived from the job id (two jobs sharing a node
    do not collide). Only a job step has SLURM_STEP_NUM_TASKS, so a plain ``python train.py`` in
    an sbatch script stays one process. Returns whether it did."""
    tasks = env.get("SLURM_STEP_NUM_TASKS")
    if "RANK" in env or not tasks or int(tasks) <= 1:
        return False
    env["RANK"], env["WORLD_SIZE"] = env["SLURM_PROCID"], tasks
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
    env.setdefault("MASTER_ADDR", first_host(nodes))
    env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0") or 0) % 20000))
    return True


def cuda_index(local_rank: int) -> int:
    """The GPU of this process: its local rank among the node's visible GPUs (torchrun, or srun
    with every GPU visible), or the one GPU SLURM bound to the task (``--gpus-per-task 1``)."""
    count = torch.cuda.device_count()
    if local_rank < count:
        return local_rank
    if count == 1:
        return 0
    raise UserError(f"local rank {local_rank} has no GPU: {count} visible on this node; start "
                    "one process per GPU")


def launched_processes(env=os.environ) -> int:
    """How many processes torchrun or srun started for this job (1: a single process); read
    only, before or after ``adopt_slurm_environment``."""
    if "RANK" in env:
        return int(env.get("WORLD_SIZE", "1"))
    return int(env.get("SLURM_STEP_NUM_TASKS") or 1)


def init_distributed(device_type: str) -> DistInfo:
    """This process's place in a torchrun or srun job (``DistInfo()`` for a single process);
    initialises the default process group once (later calls reuse it)."""
    adopt_slurm_environment()
    if launched_processes() <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                    int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(cuda_index(info.local_rank))
    if not is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_seconds()))
    return info


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes in place (no-op in a single process)."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def average_gradients(params) -> None:
    """Each ``p.grad`` replaced by its mean over processes (no-op in one process), in one flat
    all-reduce: what DDP's reducer does for the one backward it allows per forward, for a step
    that takes more than one (DOT). Every process must hold gradients for the same parameters
    (the same module and losses on every rank)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not is_initialized() or dist.get_world_size() < 2 or not grads:
        return
    flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads])) / dist.get_world_size()
    for grad, mean in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(mean.view_as(grad))


def broadcast_floats(values, device: torch.device, src: int = 0) -> list:
    """Rank ``src``'s list of numbers on every process (itself in one process): for decisions
    one process takes (e.g. from a file) that all must follow, or their collectives diverge."""
    if not is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src)
    return tensor.tolist()


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Give every process rank ``src``'s buffers (BatchNorm running statistics).

    DDP broadcasts buffers at the start of each training forward, so after the last step each
    rank holds statistics updated by its own shard; evaluating with them would not score the
    checkpoint rank 0 saves. After this call all ranks evaluate exactly that checkpoint.
    """
    if not is_initialized():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src)


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def cleanup(failed: bool = False) -> None:
    """Destroy the default process group. After a failure other ranks may be blocked in a
    collective, which a graceful NCCL shutdown would wait on: abort it instead."""
    if not is_initialized():
        return
    abort = getattr(dist.distributed_c10d, "_abort_process_group", None)
    if failed and abort is not None and dist.get_backend() == "nccl":
        abort()
    else:
        dist.destroy_process_group()


# --- SyncBatchNorm, also on CPU / gloo ------------------------------------------------------------
class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, over all processes, for
    CPU tensors (torch's ``SyncBatchNorm`` kernel and DDP accept only GPU ones). Parameters,
    buffers and state-dict keys are BatchNorm's; in eval mode, or in a single process, it is plain
    BatchNorm. Mean and variance come from two sums over processes with a gradient (float64,
    ``utils.collectives.sum_over_processes``), so the backward pass is synchronised as well."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or not is_initialized() or dist.get_world_size() < 2:
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        x = input.double()
        local = torch.cat([x.sum(dims), x.new_tensor([input.numel() // input.size(1)])])
        total = sum_over_processes(local)
        count = total[-1].detach()
        mean = total[:-1] / count
        centred = x - mean.view(shape)
        var = sum_over_processes((centred * centred).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                unbiased = var * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1 - factor).add_(factor * mean.to(self.running_mean.dtype))
                self.running_var.mul_(1 - factor).add_(factor * unbiased.to(self.running_var.dtype))
        out = (centred * torch.rsqrt(var + self.eps).view(shape)).to(input.dtype)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


SYNC_BATCHNORM_TYPES = (nn.SyncBatchNorm, CpuSyncBatchNorm)


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Every ``BatchNorm*d`` under ``module`` made synchronised: torch's ``SyncBatchNorm`` on
    GPUs, ``CpuSyncBatchNorm`` on CPU; same parameters, buffers and state-dict keys. Only
    registered submodules are visited, so a frozen teacher held outside the module tree keeps
    its plain BatchNorm."""
    if device_type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if (isinstance(module, nn.modules.batchnorm._BatchNorm)
            and not isinstance(module, SYNC_BATCHNORM_TYPES)):
        sync = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            sync.weight, sync.bias = module.weight, module.bias
        sync.running_mean, sync.running_var = module.running_mean, module.running_var
        sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in list(module.named_children()):
        setattr(module, name, convert_sync_batchnorm(child, device_type))
    return module
