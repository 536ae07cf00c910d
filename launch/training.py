"""The one place a Config becomes a Trainer: plain values, a step, an optimizer — nothing of the
config passes into engine/.

``build_trainer`` decides, from ``solver`` and ``runtime``: the device and memory format of the
module, the optimizer and its lr schedule, the precision (engine/precision.py), the DDP and
torch.compile wrappers, which step trains (engine/steps.py: SGD or DOT; clipped when
``solver.clip_grad_norm`` is set) and whether a CUDA graph replays it (engine/graphed.py). Which
of these options go together was checked before anything was built (launch/combination.py).
"""
from typing import Any, Dict, Optional

import torch
from torch.nn.parallel import DistributedDataParallel

from engine.distributed import DistInfo
from engine.graphed import CudaGraphs, GraphedStep
from engine.precision import Precision
from engine.steps import DotStep, SgdStep
from engine.trainer import Trainer
from launch.schedule import build_optimizer, build_scheduler


def build_trainer(cfg, module, loaders, device: torch.device, logger,
                  dist_info: DistInfo = DistInfo(), record: Optional[Dict[str, Any]] = None,
                  graphs=None, guard_validation: bool = True) -> Trainer:
    """The Trainer of ``module`` for ``cfg``. ``graphs``: what captures the step under
    ``runtime.cuda_graph`` (``CudaGraphs`` on the device by default; the tests' ``EagerReplay``
    without a GPU). ``guard_validation=False`` (``--smoke``): a non-finite validation does not
    stop the run, only non-finite weights do."""
    runtime = cfg.runtime
    module = module.to(device)
    if runtime.channels_last:
        module = module.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(module.parameters(), cfg.solver, fused=device.type == "cuda")
    scheduler = build_scheduler(optimizer, cfg.solver, len(loaders.train))
    # autocast's cast cache would hand a captured graph stale weight casts
    precision = Precision(device.type, runtime.amp, cache=not runtime.cuda_graph)
    scaler = precision.grad_scaler()
    ids = [device.index] if device.type == "cuda" else None
    ddp = DistributedDataParallel(module, device_ids=ids) if dist_info.enabled else None
    train_module = module if ddp is None else ddp
    if runtime.compile:
        train_module = torch.compile(train_module,
                                     mode=None if runtime.compile is True else runtime.compile)
    step = (DotStep(train_module, optimizer, scaler, precision, ddp) if cfg.solver.optimizer == "dot"
            else SgdStep(train_module, optimizer, scaler, precision, cfg.solver.clip_grad_norm))
    if runtime.cuda_graph:
        step = GraphedStep(step, optimizer, CudaGraphs(device) if graphs is None else graphs, device)
    return Trainer(module, train_module, step, loaders, optimizer=optimizer, scheduler=scheduler,
                   scaler=scaler, epochs=cfg.solver.epochs, device=device, run_dir=cfg.run_dir,
                   logger=logger, amp=runtime.amp, channels_last=runtime.channels_last,
                   print_freq=cfg.log.print_freq, guard_validation=guard_validation,
                   dist_info=dist_info, config=cfg.to_dict(), record=record)
