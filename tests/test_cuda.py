"""The CUDA paths, each held against the CPU / eager path it replaces.

Marked ``cuda`` and skipped, with the reason printed, where no CUDA device is present; tests
parametrised over ``device`` run their CPU case everywhere, so CI proves the comparison itself.
``python tools/gpu_check.py`` runs this file first on a GPU machine. TF32 is switched off where
a comparison is to float32 rounding (it rounds convolutions to 10 mantissa bits)."""
import contextlib
import io
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import models
from datasets import build_loaders
from datasets import jpeg_loader
from datasets.gpu_loader import GpuCifarLoader, augment_batch
from datasets.synthetic import generate
from datasets.transforms import IMAGENET_STD
from distillers import build_distiller
from distillers import teacher_cache as cache_module
from distillers.teacher_cache import TeacherCache, all_views, weights_sha256
from launch.schedule import build_optimizer
from engine.precision import Precision
from engine.steps import SgdStep
from launch.build import load_run_config
from launch.run import run_training
from tests import datagen
from tests.methods import METHODS
from tests.runs import load, read_metrics, write_config
from tests.test_distillers import batch as method_batch, build as build_method
from tests.test_precision import AMP_IDS, AMPS, check_losses_in_full_precision
from utils.batch import Batch, BatchViews
from utils.errors import UserError

HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False): the CUDA paths are not tested here"
cuda = pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)
pytestmark = pytest.mark.cuda
DEVICES = [pytest.param("cpu"), pytest.param("cuda", marks=cuda)]


@contextlib.contextmanager
def exact_float32_context():
    """Plain float32 kernels (no TF32) inside the block."""
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.benchmark)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


@pytest.fixture
def exact_float32():
    with exact_float32_context():
        yield


@pytest.fixture
def restore_determinism():
    yield
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic = False


def data_cfg(**overrides):
    values = dict(dataset="synthetic", root="data", download=False, batch_size=16,
                  val_batch_size=None, num_workers=0, loader="torch", num_classes=10,
                  image_size=32, train_size=100, val_size=20, mean=None, std=None)
    return SimpleNamespace(**{**values, **overrides})


# --- the GPU CIFAR loader against the torch loader ----------------------------------------------

def images_by_index(loaders):
    """{dataset row: image on the CPU} of one epoch of a train loader, and the rows in order."""
    seen, order = {}, []
    for batch in loaders.train:
        rows = batch.indices.tolist()
        order += rows
        seen.update(zip(rows, batch.images.cpu()))
    return seen, order


@pytest.mark.parametrize("device", DEVICES)
def test_gpu_cifar_loader_gives_the_torch_loaders_strong_views_pixel_exact_only_when_asked(device):
    """MLKD's strong view (``strong_view=True``): each batch of the GPU loader holds the torch
    loader's rows, weak views and strong views, bit for bit, for two epochs and on every rank;
    a method that needs no strong view gets none from it."""
    small = dict(train_size=12, val_size=4, batch_size=8)
    for world_size in (1, 2):
        for rank in range(world_size):
            shard = dict(seed=5, rank=rank, world_size=world_size, strong_view=True)
            gpu = build_loaders(data_cfg(loader="gpu", **small), device=device, **shard)
            reference = build_loaders(data_cfg(loader="torch", **small), device="cpu", **shard)
            assert isinstance(gpu.train, GpuCifarLoader)
            for epoch in (0, 1):
                gpu.set_epoch(epoch)
                reference.set_epoch(epoch)
                ours, theirs = list(gpu.train), list(reference.train)
                assert len(ours) == len(theirs) == len(gpu.train)
                for our, their in zip(ours, theirs):
                    assert our.strong_images.device.type == device
                    assert torch.equal(our.indices.cpu(), their.indices)
                    assert torch.equal(our.images.cpu(), their.images)
                    assert torch.equal(our.strong_images.cpu(), their.strong_images)
    plain = build_loaders(data_cfg(loader="gpu", **small), device=device, seed=5)
    assert all(batch.strong_images is None for batch in plain.train)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("world_size", [1, 2])
def test_gpu_cifar_loader_gives_the_torch_loaders_views_pixel_exact(device, world_size):
    """For the same (seed, epoch, index): the same crop offsets and flip, so the same pixels,
    bit for bit; and the same shard of the same order on every rank."""
    for rank in range(world_size):
        shard = dict(seed=7, rank=rank, world_size=world_size)
        gpu = build_loaders(data_cfg(loader="gpu"), device=device, **shard)
        reference = build_loaders(data_cfg(loader="torch"), device="cpu", **shard)
        assert isinstance(gpu.train, GpuCifarLoader)
        for epoch in (0, 3):
            gpu.set_epoch(epoch)
            reference.set_epoch(epoch)
            ours, our_order = images_by_index(gpu)
            theirs, their_order = images_by_index(reference)
            assert our_order == their_order
            assert ours.keys() == theirs.keys()
            for index in ours:
                gap = (ours[index] - theirs[index]).abs().max().item()
                assert torch.equal(ours[index], theirs[index]), f"sample {index}, epoch {epoch}: {gap}"


# --- JPEG decoding on the device ------------------------------------------------------------------

@pytest.fixture(scope="module")
def photo_root(tmp_path_factory):
    """Noise JPEGs, one CMYK among them, saved twice: with 4:4:4 chroma (``full/``), where the
    decoders may differ only by IDCT rounding, and with libjpeg's default 4:2:0 (``subsampled/``),
    where nvJPEG's chroma upsampling differs from libjpeg's smoothing upsampler."""
    root = tmp_path_factory.mktemp("photos")
    datagen.write_image_folder(root / "subsampled", classes=3, per_class=4, size=(160, 120), seed=3)
    cmyk = Image.fromarray(np.random.default_rng(4).integers(0, 256, (90, 110, 3), np.uint8)).convert("CMYK")
    cmyk.save(root / "subsampled" / "train" / "class_000" / "cmyk.jpg", quality=95)
    for path in sorted((root / "subsampled").rglob("*.*")):
        target = root / "full" / path.relative_to(root / "subsampled")
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.save(target, quality=95, subsampling=0)
    return root


def first_batches(root, loader, device, epoch=1):
    loaders = build_loaders(data_cfg(dataset="imagefolder", root=str(root), image_size=96,
                                     loader=loader, batch_size=13, val_batch_size=12,
                                     num_classes=None, train_size=None, val_size=None),
                            seed=5, device=device)
    loaders.set_epoch(epoch)
    train, val = next(iter(loaders.train)), next(iter(loaders.val))
    return train.images.cpu(), train.targets.cpu(), val.images.cpu(), val.targets.cpu()


def levels_apart(root):
    """Per split, |device-decode batch - PIL batch| in 8-bit levels; targets must agree."""
    train, train_targets, val, val_targets = first_batches(root, "gpu", "cuda")
    ref_train, ref_targets, ref_val, ref_val_targets = first_batches(root, "torch", "cpu")
    assert torch.equal(train_targets, ref_targets) and torch.equal(val_targets, ref_val_targets)
    level = 1 / 255 / min(IMAGENET_STD)
    return {"train": (train - ref_train).abs() / level, "val": (val - ref_val).abs() / level}


def per_image(gap):
    return [(round(g.max().item(), 2), round(g.mean().item(), 3)) for g in gap]


@cuda
def test_device_jpeg_decode_takes_the_pil_windows_within_one_level(photo_root):
    """Same RandomResizedCrop windows and flips, same resize: with 4:4:4 chroma the pixels are
    those of the PIL pipeline up to resampling rounding (the CMYK file included, wherever it
    decodes): mostly within one 8-bit level, rarely two (the CPU tensor resize gives the same)."""
    for split, gap in levels_apart(photo_root / "full").items():
        assert gap.max() <= 2.01 and gap.mean() < 0.3, f"{split}: (max, mean) per image {per_image(gap)}"


@cuda
def test_device_jpeg_decode_of_subsampled_chroma_stays_close(photo_root):
    """4:2:0 files (most of ImageNet): nvJPEG upsamples chroma without libjpeg's smoothing, so
    on these noise images pixels differ by up to ~25 levels (mean 2.6, measured on an H200);
    the windows are the same, so the mean stays a few levels, never a different crop."""
    for split, gap in levels_apart(photo_root / "subsampled").items():
        assert gap.mean() < 4, f"{split}: (max, mean) per image {per_image(gap)}"


@pytest.mark.parametrize("device", DEVICES)
def test_refused_jpegs_fall_back_to_the_cpu_and_say_so_once(photo_root, device, monkeypatch):
    photo_root = photo_root / "full"
    expected = first_batches(photo_root, "gpu", device)

    def refuse(*args, **kwargs):
        raise RuntimeError("simulated: the device decoder refuses this batch")

    monkeypatch.setattr(jpeg_loader, "decode_jpeg", refuse)
    loaders = build_loaders(data_cfg(dataset="imagefolder", root=str(photo_root), image_size=96,
                                     loader="gpu", batch_size=4, num_classes=None,
                                     train_size=None, val_size=None), seed=5, device=device)
    loaders.set_epoch(1)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        batches = [batch.images.cpu() for batch in loaders.train]
    assert len(batches) > 1
    assert stderr.getvalue().count("decoded on the CPU") == 1   # said once
    assert (torch.cat(batches)[:13] - expected[0]).abs().max() == 0


# --- the teacher cache ----------------------------------------------------------------------------

CLASSES, IMAGES, PADDING = 10, 12, 4
MEAN, STD = torch.tensor([0.5, 0.48, 0.44]), torch.tensor([0.27, 0.26, 0.28])


def cache_images(device):
    train, _ = generate(CLASSES, 32, IMAGES, 2)
    return torch.as_tensor(train.images).permute(0, 3, 1, 2).contiguous().to(device)


def cache_teacher(device):
    torch.manual_seed(0)
    teacher = models.build_model("resnet8", num_classes=CLASSES, dataset="cifar100")
    return teacher.to(device).eval()


def build_cache(teacher, images, directory, dtype):
    return TeacherCache.load_or_build(teacher, images, MEAN, STD, padding=PADDING,
                                      augment=augment_batch, directory=str(directory),
                                      teacher_sha256=weights_sha256(teacher), dtype=dtype,
                                      batch_size=2 * 162)


def sampled_views(device, batch=40, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return BatchViews(torch.randint(0, IMAGES, (batch,), generator=generator).to(device),
                      torch.randint(0, 2 * PADDING + 1, (batch, 2), generator=generator).to(device),
                      (torch.rand(batch, generator=generator) < 0.5).to(device))


@torch.no_grad()
def teacher_on(teacher, images, views):
    batch = augment_batch(images[views.indices], views.offsets, views.flips, MEAN.to(images.device),
                          STD.to(images.device))
    return teacher(batch)


@pytest.mark.parametrize("device", DEVICES)
def test_fp32_cache_is_exactly_the_teachers_forward(device, tmp_path, exact_float32):
    """Exact where the forward is the same computation (the views of the same images in one
    batch, as the cache computes them); to float32 rounding for any other batch of views."""
    images, teacher = cache_images(device), cache_teacher(device)
    cache = build_cache(teacher, images, tmp_path, "fp32")
    offsets, flips = (t.to(device) for t in all_views(PADDING))
    every_view = BatchViews(torch.arange(2, device=device).repeat_interleave(len(flips)),
                            offsets.repeat(2, 1), flips.repeat(2))
    assert torch.equal(cache(every_view), teacher_on(teacher, images, every_view))
    views = sampled_views(device)
    torch.testing.assert_close(cache(views), teacher_on(teacher, images, views), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_fp16_cache_within_fp16_rounding_and_reused_without_rebuild(device, tmp_path, monkeypatch):
    images, teacher = cache_images(device), cache_teacher(device)
    cache = build_cache(teacher, images, tmp_path, "fp16")
    assert cache.logits.dtype == torch.float16
    views = sampled_views(device, seed=2)
    torch.testing.assert_close(cache(views), teacher_on(teacher, images, views).float(),
                               rtol=2 ** -10, atol=2e-3)
    monkeypatch.setattr(cache_module, "compute_view_logits",
                        lambda *a, **k: pytest.fail("the cache file was rebuilt, not reused"))
    again = build_cache(teacher, images, tmp_path, "fp16")
    assert again.path == cache.path and torch.equal(again(views), cache(views))


# --- reduced precision ----------------------------------------------------------------------------

@cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_kd_learns_without_a_nan(amp, tmp_path):
    teacher = str(tmp_path / "runs" / "teacher" / "best.pth")
    config = write_config(tmp_path, f"kd_{amp}", epochs=4, distiller={"name": "kd"},
                          teacher={"arch": "resnet20", "checkpoint": teacher, "train_epochs": 4},
                          extra={"data": {"train_size": 2000, "val_size": 500},
                                 "runtime": {"device": "cuda", "amp": amp},
                                 "log": {"tensorboard": False}})
    summary = run_training(load_run_config(str(config)))
    rows = read_metrics(tmp_path / "runs" / f"kd_{amp}")
    assert all(np.isfinite(row["train/loss"]) and np.isfinite(row["val/loss"]) for row in rows)
    assert summary["best_top1"] > 50, summary   # 10 classes: chance is 10



@cuda
@pytest.mark.parametrize("amp", AMPS, ids=AMP_IDS)
@pytest.mark.parametrize("name", METHODS)
def test_every_method_computes_its_losses_in_full_precision_on_the_gpu(name, amp, exact_float32):
    """Every registered method under CUDA autocast: float32, finite losses within the networks'
    rounding of the float32 forward, finite gradients (the CPU case: tests/test_precision.py)."""
    check_losses_in_full_precision(name, amp, "cuda")


# The methods whose step reads the device by design, and why.
READS_THE_DEVICE = {"kdsvd": "torch.linalg.svd reads its convergence flags on the host"}


@cuda
@pytest.mark.parametrize("name", METHODS)
def test_a_methods_training_step_reads_nothing_back_from_the_gpu(name):
    """After its first step (where CRD fixes its NCE constants), a method's forward, backward
    and fused SGD step queue work without waiting for the GPU: a host read in the step stalls
    the launch queue of a launch-bound step (torch.cuda.set_sync_debug_mode raises on one)."""
    if name in READS_THE_DEVICE:
        pytest.skip(READS_THE_DEVICE[name])
    distiller = build_method(name).cuda().train()
    solver = SimpleNamespace(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=False)
    step = SgdStep(distiller, build_optimizer(distiller.parameters(), solver, fused=True),
                   torch.amp.GradScaler("cuda", enabled=False), Precision("cuda"))
    data = method_batch().to("cuda")
    step(data, 5)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(2):
            step(data, 5)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@cuda
def test_the_trainers_epoch_reads_the_gpu_only_to_report():
    """A KD epoch on the GPU loader: 12 steps, progress every 4: the host reads the device at
    the 3 progress reports and for the epoch's totals, plus at most 3 copies from pageable host
    memory when the epoch starts (the sampler's order, the views' offsets and flips), never once
    per step (that would be 12 or more)."""
    from launch.training import build_trainer
    from utils.config import Config, SolverConfig, replace_section
    from utils.logger import RunLogger
    train, _ = generate(10, 32, 12 * 16, 2)
    loader = GpuCifarLoader(train, batch_size=16, mean=[0.5] * 3, std=[0.25] * 3, device="cuda")
    loaders = SimpleNamespace(train=loader, val=[], set_epoch=loader.set_epoch)
    cfg = Config(solver=SolverConfig(epochs=1, lr=0.05, milestones=[]))
    cfg = replace_section(replace_section(cfg, "runtime", device="cuda"), "log", print_freq=4)
    torch.manual_seed(0)
    module = build_distiller({"name": "kd"}, models.build_model("resnet8", 10),
                             models.build_model("resnet20", 10))
    trainer = build_trainer(cfg, module, loaders, torch.device("cuda"), RunLogger(None))
    trainer.train_epoch(1)   # the first epoch's kernels are chosen and compiled
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.train_epoch(2)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    reads = [w for w in caught if "synchroniz" in str(w.message)]
    assert len(reads) <= 3 + 1 + 3, [str(w.message) for w in reads]


@cuda
@pytest.mark.parametrize("variant", ["fp32", "bf16_channels_last", "compiled"])
def test_the_step_captured_as_one_cuda_graph_trains_as_the_eager_step(variant, exact_float32):
    """runtime.cuda_graph: three epochs of KD (a per-step lr warm-up, a smaller last batch, a
    new graph each epoch) against the eager trainer on the same data: epoch losses within
    1e-3, weights within 1e-3 of their norm, and most steps replayed (engine/graphed.py; its
    orchestration is held bit-exact on the CPU by tests/test_graphed_step.py)."""
    from launch.training import build_trainer
    from utils.config import Config, SolverConfig, replace_section
    from utils.logger import RunLogger
    runtime = {"fp32": {}, "bf16_channels_last": {"amp": "bf16", "channels_last": True},
               "compiled": {"compile": True}}[variant]
    train, _ = generate(10, 32, 6 * 32 + 16, 2)

    def trainer(cuda_graph):   # the eager reference is not compiled (one compilation only)
        loader = GpuCifarLoader(train, batch_size=32, mean=[0.5] * 3, std=[0.25] * 3, device="cuda")
        loaders = SimpleNamespace(train=loader, val=[], set_epoch=loader.set_epoch)
        cfg = Config(solver=SolverConfig(epochs=3, lr=0.05, milestones=[2], warmup_epochs=1))
        settings = runtime if cuda_graph else {k: v for k, v in runtime.items() if k != "compile"}
        cfg = replace_section(cfg, "runtime", device="cuda", cuda_graph=cuda_graph, **settings)
        torch.manual_seed(0)
        module = build_distiller({"name": "kd"}, models.build_model("resnet8", 10),
                                 models.build_model("resnet20", 10))
        return build_trainer(replace_section(cfg, "log", print_freq=100), module, loaders,
                             torch.device("cuda"), RunLogger(None))
    eager, graphed = trainer(False), trainer(True)
    for epoch in (1, 2, 3):
        expected, got = eager.train_epoch(epoch), graphed.train_epoch(epoch)
        assert abs(got["loss"] - expected["loss"]) <= 1e-3 * abs(expected["loss"]), (epoch, got, expected)
    assert graphed.train_step.replays == 4 + 5 + 5
    for (key, a), b in zip(eager.module.state_dict().items(), graphed.module.state_dict().values()):
        if a.is_floating_point():
            assert (a - b).norm() <= 1e-3 * a.norm() + 1e-6, key

# --- optimizer and memory layout ------------------------------------------------------------------

@cuda
def test_fused_sgd_equals_unfused_sgd_over_ten_steps():
    """Both optimizers get the same gradients each step (a backward through diverging weights
    would amplify rounding), so what is compared is the update rule itself."""
    solver = SimpleNamespace(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=False)
    torch.manual_seed(0)
    plain = models.build_model("resnet8", num_classes=10, dataset="cifar100").cuda()
    fused = models.build_model("resnet8", num_classes=10, dataset="cifar100").cuda()
    fused.load_state_dict(plain.state_dict())
    optimizers = [build_optimizer(plain.parameters(), solver, fused=False),
                  build_optimizer(fused.parameters(), solver, fused=True)]
    generator = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(10):
        grads = [torch.randn(p.shape, device="cuda", generator=generator) for p in plain.parameters()]
        for model, optimizer in zip((plain, fused), optimizers):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            optimizer.step()
    moved = [(a - b).abs().max().item() for a, b in zip(plain.parameters(),
             models.build_model("resnet8", num_classes=10, dataset="cifar100").cuda().parameters())]
    assert max(moved) > 0.1   # the steps did move the weights
    for (name, a), b in zip(plain.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7, msg=lambda m, name=name: f"{name}: {m}")


@cuda
def test_channels_last_equals_the_default_layout(exact_float32):
    torch.manual_seed(0)
    student = models.build_model("resnet8x4", num_classes=100, dataset="cifar100")
    teacher = models.build_model("resnet32x4", num_classes=100, dataset="cifar100")
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        kd = build_distiller({"name": "kd"}, student, teacher).cuda().train()
        kd = kd.to(memory_format=layout)
        images = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(1)).cuda()
        targets = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(2)).cuda()
        kd.zero_grad()
        _, losses = kd(Batch(images.contiguous(memory_format=layout), targets), 1)
        sum(losses.values()).backward()
        results.append((losses, {n: p.grad.clone() for n, p in kd.named_parameters()}))
    (losses_a, grads_a), (losses_b, grads_b) = results
    for name in losses_a:
        torch.testing.assert_close(losses_b[name], losses_a[name], rtol=1e-4, atol=1e-6)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


# --- determinism ----------------------------------------------------------------------------------

@cuda
def test_deterministic_runs_give_bit_identical_weights(tmp_path, restore_determinism):
    weights = []
    for name in ("first", "second"):
        config = kd_config(tmp_path, name, "cuda", epochs=1, train_size=320, deterministic=True)
        run_training(load_run_config(str(config)))
        weights.append(load(tmp_path / "runs" / name / "last.pth")["model"])
    assert weights[0].keys() == weights[1].keys()
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


NONDETERMINISTIC_CANDIDATES = {   # PyTorch's documented list: no deterministic CUDA kernel
    "histc": lambda x: torch.histc(x, bins=8),
    "kthvalue": lambda x: torch.kthvalue(x.flatten(), 3),
    "bincount": lambda x: torch.bincount((x.flatten() > 0).long(), weights=x.flatten()),
    "median": lambda x: torch.median(x.flatten(), 0),
}


def nondeterministic_operation():
    """(name, function, torch's own message) of the first candidate this build refuses."""
    torch.use_deterministic_algorithms(True)
    try:
        for name, function in NONDETERMINISTIC_CANDIDATES.items():
            try:
                function(torch.randn(4, 3, 8, 8, device="cuda"))
            except RuntimeError as err:
                return name, function, str(err)
    finally:
        torch.use_deterministic_algorithms(False)
    pytest.skip(f"none of {list(NONDETERMINISTIC_CANDIDATES)} lacks a deterministic CUDA kernel")


class OperationFirst(torch.nn.Module):
    """A student whose forward first runs ``operation`` (one without a deterministic kernel)."""

    def __init__(self, model, operation):
        super().__init__()
        self.model, self.operation = model, operation

    def forward(self, images):
        self.operation(images)
        return self.model(images)


@cuda
def test_an_operation_without_a_deterministic_kernel_is_one_line(tmp_path, monkeypatch,
                                                                  restore_determinism):
    import launch.build
    name, operation, torch_message = nondeterministic_operation()
    build_student = launch.build.build_student
    monkeypatch.setattr(launch.build, "build_student",
                        lambda cfg, classes: OperationFirst(build_student(cfg, classes), operation))
    config = write_config(tmp_path, "nondeterministic", epochs=1,
                          extra={"runtime": {"device": "cuda", "deterministic": True},
                                 "log": {"tensorboard": False}})
    with pytest.raises(UserError) as error:
        run_training(load_run_config(str(config)))
    message = str(error.value)
    operation_name = torch_message.split(" does not have")[0].split()[0]    # e.g. _histc_cuda
    assert "\n" not in message and operation_name in message and name in message, \
        f"{message!r} from torch's {torch_message!r}"
    assert "runtime.deterministic" in message


# --- DDP with NCCL --------------------------------------------------------------------------------

@pytest.mark.skipif(not HAS_CUDA or torch.cuda.device_count() < 2,
                    reason="DDP with NCCL needs 2 CUDA devices")
def test_nccl_two_gpus_equal_one_gpu_with_the_same_global_batch(tmp_path):
    from tests.test_distributed import assert_close, ok, single, single_node
    config = kd_config(tmp_path, "nccl", "cuda", epochs=1, train_size=256, sync_bn=True)
    ok(single("train.py", "--config", str(config), "experiment.name=nccl_single"))
    ok(single_node("--config", str(config)))
    one = load(tmp_path / "runs" / "nccl_single" / "last.pth")
    two = load(tmp_path / "runs" / "nccl" / "last.pth")
    assert one["step"] == two["step"] == 4
    assert_close(two["model"], one["model"], atol=1e-4)


# --- compiled steps against eager (last: compiling is the slow part) ----------------------------

def kd_config(directory, name, device, epochs=2, train_size=616, **runtime):
    """KD resnet20 -> resnet8 on synthetic data: 616 = 9 x 64 + 40, so each epoch ends with a
    smaller batch (its own graph under CUDA graphs)."""
    return write_config(directory, name, epochs=epochs, distiller={"name": "kd"},
                        teacher={"arch": "resnet20", "allow_random": True},
                        extra={"data": {"train_size": train_size, "batch_size": 64,
                                        "val_size": 128, "val_batch_size": 64,
                                        "loader": "gpu" if device == "cuda" else "torch"},
                               "runtime": {"device": device, **runtime},
                               "log": {"tensorboard": False}})


def step_losses(config, monkeypatch, check_eager: bool = False):
    """Every optimizer step's losses of one in-process run, read as the step returns them; with
    ``check_eager``, also the eager module's losses on the same weights and batch, computed just
    before the (compiled) step: each compiled step is held against eager without the drift that
    two diverging trajectories accumulate."""
    from engine.trainer import Trainer
    recorded, step = [], Trainer.step

    def recording(self, *args, **kwargs):
        eager = None
        if check_eager:
            with torch.no_grad():
                eager = {k: float(v) for k, v in self.module(*args, **kwargs)[1].items()}
        result = step(self, *args, **kwargs)
        recorded.append(({name: float(value.detach()) for name, value in result.losses.items()}, eager))
        return result

    monkeypatch.setattr(Trainer, "step", recording)
    run_training(load_run_config(str(config)))
    monkeypatch.setattr(Trainer, "step", step)
    return recorded


@pytest.fixture(scope="module")
def eager_losses(tmp_path_factory):
    """The eager run the compiled runs are compared with (computed once)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        with exact_float32_context():
            return step_losses(kd_config(tmp_path_factory.mktemp("eager"), "eager", "cuda"), monkeypatch)


@cuda
@pytest.mark.parametrize("mode", [True, "reduce-overhead"])
def test_compiled_kd_steps_equal_eager(mode, tmp_path, monkeypatch, exact_float32, eager_losses):
    """Each of 20 compiled steps (two epochs of 9 full batches and a batch of 40) gives the eager
    losses at the same weights within 1e-4; the whole trajectory stays within 5e-2 of an eager
    run's (float rounding grows over steps, a wrong computation does not stay that close)."""
    compiled = step_losses(kd_config(tmp_path, f"compiled_{mode}", "cuda", compile=mode),
                           monkeypatch, check_eager=True)
    assert len(eager_losses) == len(compiled) == 20
    gaps = [max(abs(ours[k] - eager[k]) / abs(eager[k]) for k in ours) for ours, eager in compiled]
    drift = [max(abs(ours[k] - run[k]) / abs(run[k]) for k in ours)
             for (ours, _), (run, _) in zip(compiled, eager_losses)]
    assert max(gaps) <= 1e-4, f"relative gap per step: {[f'{g:.1e}' for g in gaps]}"
    assert max(drift) <= 5e-2, f"drift from the eager run per step: {[f'{d:.1e}' for d in drift]}"
