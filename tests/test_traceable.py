"""Every method's training forward traces into one graph: no graph break under ``torch.compile``
and, with it, no read of the device that a break usually marks (a boolean selection, ``.item()``,
a Python branch on a tensor), which would stall a GPU step and cannot be captured by
``runtime.cuda_graph``. Tracing only (``torch._dynamo.explain``): nothing is compiled. The
teacher is a resnet8 (resnet20's stages and widths, one block each): a break is in the method's
code, not in the depth of the teacher, and tracing time grows with every module inlined."""
import pytest
import torch

from tests.methods import METHODS
from tests.test_distillers import batch, build

# methods that break the graph by design, and why
BREAKS = {"crd": "draws its negatives from a generator made per step; fixes its NCE constants on "
                 "the host at the first batch"}


@pytest.mark.parametrize("name", METHODS)
def test_every_training_forward_traces_into_one_graph(name):
    if name in BREAKS:
        pytest.skip(BREAKS[name])
    torch._dynamo.reset()
    distiller = build(name, teacher_arch="resnet8").train()
    explained = torch._dynamo.explain(distiller)(batch(), 5)
    assert explained.graph_break_count == 0, [str(r.reason).splitlines()[0] for r in explained.break_reasons]
