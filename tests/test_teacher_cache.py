"""The exact teacher-logit cache: lookups equal the teacher on the same views, KD's loss is
unchanged by it, and its file is rebuilt exactly when the teacher's weights change."""
import pytest
import torch

import models
from datasets.gpu_loader import augment_batch
from datasets.synthetic import generate
from distillers import build_distiller
from distillers.teacher_cache import TeacherCache, weights_sha256
from launch.build import build_run, load_run_config
from tests.runs import write_config
from utils.batch import Batch, BatchViews

CLASSES, IMAGES, PADDING = 10, 16, 4
MEAN, STD = torch.tensor([0.5, 0.48, 0.44]), torch.tensor([0.27, 0.26, 0.28])


@pytest.fixture(scope="module")
def images():
    train, _ = generate(CLASSES, 32, IMAGES, 2)
    return torch.as_tensor(train.images).permute(0, 3, 1, 2).contiguous()


def make_teacher(seed: int = 0):
    torch.manual_seed(seed)
    return models.build_model("resnet8", num_classes=CLASSES, dataset="cifar100").eval()


def build(teacher, images, directory, dtype="fp32", checkpoint=None):
    return TeacherCache.load_or_build(teacher, images, MEAN, STD, padding=PADDING,
                                      augment=augment_batch, directory=str(directory),
                                      teacher_sha256=weights_sha256(teacher, checkpoint),
                                      dtype=dtype, batch_size=512)


def random_views(batch: int = 24, seed: int = 1) -> BatchViews:
    generator = torch.Generator().manual_seed(seed)
    return BatchViews(torch.randint(0, IMAGES, (batch,), generator=generator),
                      torch.randint(0, 2 * PADDING + 1, (batch, 2), generator=generator),
                      torch.rand(batch, generator=generator) < 0.5)


def teacher_on_views(teacher, images, views):
    with torch.no_grad():
        return teacher(augment_batch(images[views.indices], views.offsets, views.flips, MEAN, STD))


@pytest.fixture(scope="module")
def fp32_cache(images, tmp_path_factory):
    return build(make_teacher(), images, tmp_path_factory.mktemp("cache"), "fp32")


def test_fp32_lookup_equals_the_teacher_on_the_same_views(images, fp32_cache):
    views = random_views()
    torch.testing.assert_close(fp32_cache(views), teacher_on_views(make_teacher(), images, views),
                               rtol=1e-5, atol=1e-5)


def test_fp16_lookup_equals_the_teacher_within_fp16_rounding(images, tmp_path):
    teacher = make_teacher()
    cache = build(teacher, images, tmp_path, "fp16")
    assert cache.logits.dtype == torch.float16
    views = random_views(seed=2)
    torch.testing.assert_close(cache(views), teacher_on_views(teacher, images, views),
                               rtol=2 ** -10, atol=1e-4)


def test_kd_loss_with_the_cache_equals_kd_without_it(images, fp32_cache):
    torch.manual_seed(3)
    student = models.build_model("resnet8", num_classes=CLASSES, dataset="cifar100")
    kd = build_distiller({"name": "kd"}, student, make_teacher()).train()
    views = random_views(seed=4)
    augmented = augment_batch(images[views.indices], views.offsets, views.flips, MEAN, STD)
    batch = Batch(augmented, torch.randint(0, CLASSES, (len(augmented),)), views.indices, views)
    _, without = kd(batch.replace(views=None), 1)
    kd.teacher.cache = fp32_cache
    kd.teacher.model.register_forward_pre_hook(lambda *_: pytest.fail("the teacher ran despite the cache"))
    _, with_cache = kd(batch, 1)
    for name in without:
        torch.testing.assert_close(with_cache[name], without[name], rtol=1e-5, atol=1e-6)


def test_cache_is_reused_for_the_same_teacher_file_and_rebuilt_when_it_changes(
        images, tmp_path, monkeypatch):
    few = images[:2]
    checkpoint = tmp_path / "teacher.pth"
    teacher = make_teacher(0)
    torch.save(teacher.state_dict(), checkpoint)
    first = build(teacher, few, tmp_path / "cache", checkpoint=str(checkpoint))

    def no_build(*args, **kwargs):
        raise AssertionError("the cache was rebuilt for an unchanged teacher")
    with monkeypatch.context() as patch:
        patch.setattr("distillers.teacher_cache.compute_view_logits", no_build)
        again = build(teacher, few, tmp_path / "cache", checkpoint=str(checkpoint))
    assert again.path == first.path
    changed = make_teacher(1)
    torch.save(changed.state_dict(), checkpoint)
    rebuilt = build(changed, few, tmp_path / "cache", checkpoint=str(checkpoint))
    assert rebuilt.path != first.path
    views = random_views(batch=8, seed=5)._replace(indices=torch.randint(0, 2, (8,)))
    torch.testing.assert_close(rebuilt(views), teacher_on_views(changed, few, views),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method, loader, used", [
    ("kd", "gpu", True), ("kd", "torch", False), ("fitnet", "gpu", False)])
def test_auto_cache_serves_logit_distillers_whose_loader_reports_views(tmp_path, method, loader, used):
    """The cache is attached only where it serves: a logit method, and the GPU loader, which holds
    the uint8 images the cache is built from (both CIFAR loaders report each batch's views)."""
    config = write_config(tmp_path, f"{method}_{loader}", distiller={"name": method},
                          teacher={"arch": "resnet8", "allow_random": True, "cache": "auto"},
                          extra={"data": {"train_size": 4, "loader": loader}})
    loaders, distiller = build_run(load_run_config(str(config)))
    assert (distiller.teacher.cache is not None) == used
    assert next(iter(loaders.train)).views is not None


@pytest.mark.parametrize("setting, dtype", [("auto", torch.float16), ("fp16", torch.float16),
                                            ("fp32", torch.float32)])
def test_cache_storage_precision_is_chosen_by_the_config(tmp_path, setting, dtype):
    """``teacher.cache: fp32`` stores exact float32 logits (twice the size of auto/fp16)."""
    config = write_config(tmp_path, f"kd_{setting}", distiller={"name": "kd"},
                          teacher={"arch": "resnet8", "allow_random": True, "cache": setting},
                          extra={"data": {"train_size": 2, "loader": "gpu"}})
    _, distiller = build_run(load_run_config(str(config)))
    assert distiller.teacher.cache.logits.dtype == dtype
    assert distiller.teacher.cache.logits.shape == (2, 162, 10)


def test_a_damaged_teacher_cache_is_rebuilt_with_one_line(images, tmp_path, capsys):
    teacher = make_teacher(0)

    def build_small():   # one image, padding 1: 18 views, a cheap build
        return TeacherCache.load_or_build(teacher, images[:1], MEAN, STD, padding=1,
                                          augment=augment_batch, directory=str(tmp_path),
                                          teacher_sha256=weights_sha256(teacher), dtype="fp32")
    first = build_small()
    for damage in ("a flipped logit", "no checksum"):
        state = torch.load(first.path, weights_only=True)
        if damage == "a flipped logit":
            state["logits"][0, 0, 0] += 1.0   # the checksum written with it no longer matches
        else:
            del state["checksum"]             # a file of an earlier version: nothing to verify by
        torch.save(state, first.path)
        capsys.readouterr()
        rebuilt = build_small()
        lines = capsys.readouterr().out.strip().splitlines()
        warning = "\n".join(line for line in lines if not line.startswith("teacher cache ["))  # progress
        assert len(warning.splitlines()) == 1, damage
        assert warning.startswith(f"WARNING: teacher cache: {first.path} ")
        assert warning.endswith("; rebuilding it")
        assert torch.equal(rebuilt.logits, first.logits)
        assert torch.equal(torch.load(first.path, weights_only=True)["logits"], first.logits)
