"""Which options go together: every rule between options, checked once before anything is built
(``launch.build.load_run_config``). A value alone is checked where it is declared (utils/config.py,
a method's constructor); what is left are mixes that each value allows but a run cannot honour
together. A run that breaks several hears of all of them in one line, each naming where its keys
were set.
"""
from typing import Callable, List, Optional

from utils.errors import UserError

Where = Callable[[str], str]


def dot_conflicts(cfg, method: type, where: Where) -> List[str]:
    """DOT with what it cannot honour; ``method``: the distiller's class. Its two momenta,
    momentum -/+ dot_delta, must both be momenta, in [0, 1)."""
    solver = cfg.solver
    if solver.optimizer != "dot":
        return []
    momentum = f"solver.momentum={solver.momentum:g} (in {where('solver.momentum')})"
    delta = f"solver.dot_delta={solver.dot_delta:g} (in {where('solver.dot_delta')})"
    momenta = [(solver.dot_delta > solver.momentum, f"{delta} must be at most {momentum}: the task "
                "momentum is momentum - dot_delta"),
               (solver.momentum + solver.dot_delta >= 1, f"{momentum} + {delta} must stay below 1: "
                "the distillation momentum is momentum + dot_delta")]
    refused = [("runtime.compile", cfg.runtime.compile is not False,
                "compiled, the backward hands every parameter a gradient in both passes (zeros "
                "where a loss does not reach it), and DOT would take those parameters as reached "
                "by both losses: set runtime.compile=false"),
               ("solver.nesterov", cfg.solver.nesterov, "DOT has no Nesterov variant: set "
                "solver.nesterov=false"),
               ("solver.clip_grad_norm", cfg.solver.clip_grad_norm is not None,
                "DOT's two passes step with two momenta, so there is no one gradient norm to "
                "clip: set solver.clip_grad_norm=null"),
               ("distiller.name", not getattr(method, "separates_task_loss", True),
                f"{method.__name__} does not return the task loss 'loss_ce' and a distillation "
                "loss apart, the two DOT steps with different momenta: use solver.optimizer=sgd")]
    return [text for bad, text in momenta if bad] + [
        f"'{name}' in {where(name)} does not go with solver.optimizer=dot "
        f"(in {where('solver.optimizer')}): {reason}" for name, bad, reason in refused if bad]


def cuda_graph_refusals(cfg, method: type, device_type: Optional[str],
                        world_size: Optional[int]) -> List[str]:
    """Why ``runtime.cuda_graph`` cannot run this training (empty: it can); ``None`` for the
    device or the process count: not judged (a config read on one machine to run on another)."""
    reasons = []
    if device_type is not None and device_type != "cuda":
        reasons.append(f"it needs a CUDA device; this run is on {device_type}")
    if world_size is not None and world_size > 1:
        reasons.append("DDP's gradient all-reduce is not captured; use it on one process")
    if cfg.runtime.amp == "fp16":
        reasons.append("the fp16 GradScaler decides on the host whether to step; use runtime.amp=bf16")
    if cfg.solver.optimizer != "sgd":
        reasons.append("DOT's two passes are not captured; use solver.optimizer=sgd")
    if cfg.runtime.compile not in (False, True):
        reasons.append(f"runtime.compile={cfg.runtime.compile} makes CUDA graphs of its own; "
                       "use runtime.compile=true (or false) with runtime.cuda_graph")
    if not getattr(method, "captures_in_cuda_graph", True):
        reasons.append(f"{method.__name__} {method.cuda_graph_refusal}")
    if getattr(method, "needs_strong_view", False):
        reasons.append(f"{method.__name__} reads a second (strong) view of each sample, which the "
                       "captured step's input buffers do not hold (engine/graphed.py copies the weak one)")
    return reasons


def check_combination(cfg, method: type, device_type: Optional[str] = None,
                      world_size: Optional[int] = None,
                      where: Where = lambda key: "the config") -> None:
    """One ``UserError`` line naming every conflict of ``cfg`` run with ``method`` (the
    distiller's class) on ``device_type`` over ``world_size`` processes, before anything is built."""
    found = dot_conflicts(cfg, method, where)
    reasons = cuda_graph_refusals(cfg, method, device_type, world_size) if cfg.runtime.cuda_graph else []
    if reasons:
        found.append(f"runtime.cuda_graph=true cannot run here: {'; '.join(reasons)}; "
                     "set runtime.cuda_graph=false")
    if len(found) == 1:
        raise UserError(found[0])
    if found:
        raise UserError(f"{len(found)} options conflict: "
                        + " ".join(f"({i}) {text}." for i, text in enumerate(found, 1)))
