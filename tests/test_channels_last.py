"""``runtime.channels_last`` changes the memory layout only: every method's losses and
gradients on channels-last images and weights equal those of the default layout, up to float32
sums taken in another order. A method that reshapes a map with ``view`` (which needs contiguous
strides) would fail here, on the CPU, before it fails a GPU run; one that mixes up the layout's
axes would be off by far more than the tolerance.

Tolerance: rounding differences of ~1e-7 are amplified by the ill-conditioned losses of random
networks (PKT's cosine affinities of near-zero pooled rows: 1.3e-3 measured), so losses are held
to 1e-2 and each gradient to 1e-2 of its own norm (or of a thousandth of the whole gradient's,
for a bias before BatchNorm, whose gradient is zero up to rounding).
"""
import copy

import pytest
import torch

from tests.methods import METHODS
from tests.test_distillers import batch, build


@pytest.mark.parametrize("name", METHODS)
def test_every_method_computes_the_same_losses_channels_last(name):
    distiller = build(name).train()
    channels_last = copy.deepcopy(distiller).to(memory_format=torch.channels_last)
    data = batch()
    _, expected = distiller(data, 5)
    _, losses = channels_last(data.map_images(
        lambda images: images.contiguous(memory_format=torch.channels_last)), 5)
    assert losses.keys() == expected.keys()
    for key in losses:
        torch.testing.assert_close(losses[key], expected[key], rtol=1e-2, atol=1e-6)
    sum(expected.values()).backward()
    sum(losses.values()).backward()
    pairs = [(key, p.grad, q.grad) for (key, p), q in
             zip(distiller.named_parameters(), channels_last.parameters()) if p.grad is not None]
    whole = torch.stack([g.norm() for _, g, _ in pairs]).norm()
    for key, grad, grad_channels_last in pairs:
        error = (grad_channels_last - grad).norm() / torch.maximum(grad.norm(), 1e-3 * whole)
        assert error < 1e-2, f"{key}: relative gradient error {error:.2e}"
