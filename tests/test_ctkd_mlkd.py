"""The ctkd and mlkd methods beyond what every method is checked for (tests/test_distillers.py
and its neighbours): CTKD's temperature is a learnable, reversed, checkpointed part of the
method; MLKD reads two different views; the loaders draw the strong view only when asked, as a
function of (seed, epoch, index) (the GPU loader's, the torch loader's pixels: tests/test_cuda.py),
and image folders are refused."""
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

import datasets
from datasets import build_loaders
from datasets.sources import build_source
from datasets.strong_augment import draw_strong_plan, strong_view
from distillers.losses import kd_loss
from distillers.mlkd_losses import mlkd_loss_terms
from tests import datagen
from tests.test_distillers import batch, build
from utils.errors import UserError


def test_ctkd_temperature_is_optimised_checkpointed_and_its_gradient_reversed_by_the_curriculum():
    distiller = build("ctkd", kd_weight=1.0, ce_weight=0.0).train()
    theta = distiller.global_temperature.theta
    assert any(p is theta for p in distiller.parameters())
    assert list(distiller.checkpoint_state()["distiller"]) == ["global_temperature.theta"]
    assert distiller.strength(0) == 0.0 and distiller.strength(10) == distiller.strength(50) == 1.0
    data, epoch = batch(), 4
    logits, losses = distiller(data, epoch)
    losses["loss_kd"].backward()
    free = theta.detach().clone().requires_grad_(True)     # the same loss, no reversal
    with torch.no_grad():
        teacher = distiller.teacher.model(data.images)
    plain = kd_loss(logits.detach(), teacher, 1.0 + 20.0 * torch.sigmoid(free))
    (expected,) = torch.autograd.grad(plain, free)
    torch.testing.assert_close(theta.grad, -distiller.strength(epoch) * expected)
    assert 0 < distiller.strength(epoch) < 1 and theta.grad.abs() > 0


def test_mlkd_reads_the_strong_view_and_refuses_a_batch_without_one():
    distiller = build("mlkd").train()
    data = batch()
    data = data.replace(strong_images=data.images.flip(-1) + 0.5)
    _, losses = distiller(data, 1)
    with torch.no_grad():
        student = distiller.student
        teacher = distiller.teacher.model
        terms = mlkd_loss_terms(student(data.images), student(data.strong_images),
                                teacher(data.images), teacher(data.strong_images), data.targets, 4.0)
    for name, weight in (("ce", 0.1), ("kd", 0.9), ("cc", 0.9), ("bc", 0.9)):
        torch.testing.assert_close(losses[f"loss_{name}"].detach(), weight * terms[name])
    with pytest.raises(UserError, match="strong view"):
        distiller(data.replace(strong_images=None), 1)


def synthetic_cfg(**overrides):
    values = dict(dataset="synthetic", root="data", download=False, batch_size=8,
                  val_batch_size=None, num_workers=0, loader="torch", num_classes=4,
                  image_size=32, train_size=12, val_size=4, mean=None, std=None)
    return SimpleNamespace(**{**values, **overrides})


def assert_strong_views_are_their_plans(loaders, source, seed, epoch):
    loaders.set_epoch(epoch)
    first = next(iter(loaders.train))
    assert first.strong_images.shape == first.images.shape
    for row, strong in zip(first.indices.tolist(), first.strong_images):
        image = Image.fromarray(source.arrays[0].images[row])
        expected = strong_view(image, draw_strong_plan(seed, epoch, row), source.mean, source.std)
        assert torch.equal(strong, expected)


def test_strong_view_is_drawn_only_when_asked_and_is_a_function_of_seed_epoch_and_index():
    cfg = synthetic_cfg()
    assert next(iter(build_loaders(cfg, seed=3).train)).strong_images is None
    source = build_source(cfg)
    for world_size in (1, 2):
        for rank in range(world_size):
            loaders = build_loaders(cfg, seed=3, rank=rank, world_size=world_size, strong_view=True)
            assert_strong_views_are_their_plans(loaders, source, seed=3, epoch=2)
    # a persistent worker keeps its dataset: the epoch reaches it with each item
    in_worker = build_loaders(synthetic_cfg(num_workers=1), seed=3, strong_view=True)
    for epoch in (2, 3):
        assert_strong_views_are_their_plans(in_worker, source, seed=3, epoch=epoch)


def test_auto_keeps_the_torch_loader_for_the_strong_view_and_image_folders_refuse_it(tmp_path):
    # on CUDA "auto" would pick the GPU loader, but not for the strong view (CPU work that the
    # torch loader's workers parallelise); an explicit data.loader=gpu draws it
    cfg, cuda = synthetic_cfg(loader="auto"), torch.device("cuda")
    source = build_source(cfg)
    assert datasets._use_gpu_loader(cfg, source, cuda, strong_view=False)
    assert not datasets._use_gpu_loader(cfg, source, cuda, strong_view=True)
    assert datasets._use_gpu_loader(synthetic_cfg(loader="gpu"), source, cuda, strong_view=True)
    datagen.write_image_folder(tmp_path, classes=2, per_class=1, size=(40, 30), seed=0)
    for loader in ("torch", "gpu"):
        folders = synthetic_cfg(dataset="imagefolder", root=str(tmp_path), loader=loader,
                                num_classes=None)
        with pytest.raises(UserError, match="strong view") as error:
            build_loaders(folders, seed=0, strong_view=True)
        assert "\n" not in str(error.value)
