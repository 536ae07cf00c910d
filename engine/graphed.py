"""``runtime.cuda_graph``: the whole training step as one CUDA graph, replayed for each batch.

At batch 64 a CIFAR step is bound by launching its kernels, not by running them (an H200 spends
~2 ms of a 15 ms eager KD step computing; docs/benchmarks.md). ``runtime.compile=reduce-overhead``
graphs the module's forward and backward but leaves the optimizer, the loss sum and the glue
around them eager. Here the step as the trainer runs it — forward of both networks under the
step's autocast, every loss, backward, fused SGD — is captured once and replayed, so each batch
costs the copy of its tensors into the graph's input buffers, one lr fill and one launch.

What keeps a replay equal to the eager step:
- the learning rate is read from a device tensor filled before every replay (the schedule still
  sets ``param_groups[i]["lr"]`` as a float, which is what checkpoints hold);
- Python numbers baked into the graph at capture must not change between replays: the epoch
  (warm-up factors of DKD, ReviewKD, ONE) changes once an epoch, so the step is captured again
  at the start of each epoch, after one eager step of that epoch (which recompiles a compiled
  module for the new epoch outside the capture); a method that changes Python state per step
  (CRD's draw count) or reads the device inside its step (KDSVD's SVD) says so by
  ``captures_in_cuda_graph = False`` and is refused;
- the optimizer's first step (momentum buffers created) and cuDNN's algorithm search run eager,
  before any capture, on a side stream, as CUDA graph capture requires;
- a batch of another shape (the epoch's last, smaller one) runs eager;
- autocast's weight-cast cache is off inside the step (a cached cast would be a stale tensor).

Refused before the run, with the other conflicts, in one line (launch/combination.py): DDP (its
reducer's collectives), fp16 (the GradScaler decides on the host whether to step), DOT,
CUDA-graph compile modes (graphs inside a graph), non-CUDA devices, a method that says it cannot
be captured.
A capture that fails all the same (an operation of a user's method that a graph cannot hold)
is said in one line and the run goes on eager: nothing has run in a failed capture, so the
weights are untouched and the results are the eager run's.

The orchestration (which step is eager, when to capture, what is copied where) is the same
without a GPU: ``EagerReplay`` stands in for the CUDA graph by running the step function again
at each replay, which is how the CPU tests hold a graphed run equal to an ungraphed one bit for
bit; tests/test_cuda.py holds the real capture to the eager step on a GPU.
"""
import sys
from contextlib import contextmanager, nullcontext
from typing import Callable, List, Optional

import torch

from engine.steps import StepResult
from utils.batch import Batch, BatchViews

Step = Callable[[Batch, int], StepResult]
EAGER_STEPS_FIRST_EPOCH = 2     # momentum buffers, cuDNN's search, lazy initialisation
EAGER_STEPS_LATER_EPOCHS = 1    # a compiled module recompiles for the new epoch here


class CudaGraphs:
    """Capture and replay on CUDA; eager steps on a side stream, as capture requires."""

    def __init__(self, device: torch.device):
        self.device = device
        self.pool = torch.cuda.graph_pool_handle()   # every epoch's graph reuses one memory pool
        self.side = torch.cuda.Stream(device)

    @contextmanager
    def eager(self):
        self.side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(self.side):
                yield
        finally:
            torch.cuda.current_stream(self.device).wait_stream(self.side)

    def capture(self, step: Callable[[], object]) -> Callable[[], object]:
        """``step`` captured as a graph; returns its replay (which returns the step's outputs,
        refilled in place)."""
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (a DataLoader's pin-memory thread) may go on meanwhile
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            outputs = step()

        def replay():
            graph.replay()
            return outputs
        return replay


class EagerReplay:
    """``CudaGraphs`` without a GPU: capture records the step function, replay runs it."""

    eager = staticmethod(nullcontext)

    @staticmethod
    def capture(step: Callable[[], object]) -> Callable[[], object]:
        return step


def _inputs(batch: Batch) -> list:
    """What the captured step reads of a batch, views unpacked; None for a field it lacks."""
    views = batch.views if batch.views is not None else (None,) * len(BatchViews._fields)
    return [batch.images, batch.targets, batch.indices, *views]


def _copy_into(static: Batch, batch: Batch) -> None:
    for mine, theirs in zip(_inputs(static), _inputs(batch)):
        if mine is not None:
            mine.copy_(theirs, non_blocking=True)


def _same_layout(static: Batch, batch: Batch) -> bool:
    """Whether ``batch`` fits the graph's input buffers (shapes, dtypes, which fields exist)."""
    return all((mine is None) == (theirs is None) and
               (mine is None or (mine.shape == theirs.shape and mine.dtype == theirs.dtype))
               for mine, theirs in zip(_inputs(static), _inputs(batch)))


@contextmanager
def lr_from(optimizer: torch.optim.Optimizer, lrs: List[torch.Tensor]):
    """The optimizer's groups read their learning rate from device tensors inside the block
    (what the captured SGD kernel then reads at each replay); the floats come back after."""
    floats = [group["lr"] for group in optimizer.param_groups]
    for group, lr in zip(optimizer.param_groups, lrs):
        group["lr"] = lr
    try:
        yield
    finally:
        for group, lr in zip(optimizer.param_groups, floats):
            group["lr"] = lr


class GraphedStep:
    """An eager ``step(batch, epoch)`` (engine/steps.py, built with ``Precision(cache=False)``)
    captured and replayed as the module docstring says; called as the step itself."""

    def __init__(self, step: Step, optimizer: torch.optim.Optimizer, graphs, device: torch.device):
        self.step, self.optimizer, self.graphs = step, optimizer, graphs
        self.lrs = [torch.zeros((), dtype=torch.float32, device=device) for _ in optimizer.param_groups]
        self.captured = None
        self.static: Optional[Batch] = None
        self.epoch: Optional[int] = None
        self.eager_left = EAGER_STEPS_FIRST_EPOCH
        self.replays = 0   # for the tests and the benchmark: how many steps ran as a replay
        self.failed: Optional[str] = None   # why a capture failed: the run goes on eager

    def __call__(self, batch: Batch, epoch: int) -> StepResult:
        if self.failed is not None:
            return self.step(batch, epoch)
        if epoch != self.epoch:    # a new epoch: recapture after its eager step(s)
            self.captured, self.static, self.epoch = None, None, epoch
            self.eager_left = max(self.eager_left, EAGER_STEPS_LATER_EPOCHS)
        if self.eager_left > 0 or (self.static is not None and not _same_layout(self.static, batch)):
            self.eager_left = max(self.eager_left - 1, 0)
            with self.graphs.eager():
                return self.step(batch, epoch)
        if self.captured is None:
            try:
                self._capture(batch, epoch)
            except RuntimeError as err:   # nothing ran: the weights are as they were
                return self._give_up(err, batch, epoch)
        _copy_into(self.static, batch)
        for lr, group in zip(self.lrs, self.optimizer.param_groups):
            lr.fill_(group["lr"])
        self.replays += 1
        return self.captured()

    def _give_up(self, err: RuntimeError, batch: Batch, epoch: int):
        """A capture that fails (an operation CUDA graphs cannot hold) ends the graphs for the
        run, said in one line; this step and the following ones run eager (same results)."""
        self.captured, self.static = None, None
        self.failed = " ".join(str(err).split())[:300]
        print(f"runtime.cuda_graph: the step could not be captured ({self.failed}); the run goes "
              f"on without CUDA graphs (same results, slower)", file=sys.stderr, flush=True)
        return self.step(batch, epoch)

    def _capture(self, batch: Batch, epoch: int) -> None:
        # the graph's input buffers, holding this batch (a clone keeps channels-last images so)
        inputs = [None if t is None else t.clone() for t in _inputs(batch)]
        views = None if batch.views is None else BatchViews(*inputs[3:])
        static = self.static = Batch(*inputs[:3], views=views)

        def whole_step():
            with lr_from(self.optimizer, self.lrs):
                return self.step(static, epoch)
        self.captured = self.graphs.capture(whole_step)
