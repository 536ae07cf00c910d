"""The model zoo against the reference data (tests/reference/MODELS.md).

Every model of models.json must have the reference's state-dict table, parameter count and
MACs, and, under the deterministic weights of tests/deterministic.py, its logits and feature
fingerprints (float64, to 1e-9 of the largest value; two correct implementations agree to
~1e-15 and the least visible tensor of the zoo moves the logits by 6e-6). Then the contract of
every registered name, the SRRL paper's parameter counts, and checkpoint loading.
"""
import copy
import json
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

import models
import models.__main__ as models_main
from models.profile import count_macs, count_params
from tests.deterministic import fill_, make_input
from utils.errors import UserError

REF = Path(__file__).parent / "reference"
SPECS = json.loads((REF / "models.json").read_text())["models"]
META = json.loads((REF / "models.json").read_text())["meta"]
OUTPUTS = torch.load(REF / "model_outputs.pt", weights_only=True)
FEATURES = torch.load(REF / "model_features.pt", weights_only=True)
ZOO_KEYS = [key for key in SPECS if not key.startswith("one/")]
ONE_KEYS = [key for key in SPECS if key.startswith("one/")]
MAP_SUMMARIES = {"chan_mean": (2, 3), "row_mean": (1, 3), "col_mean": (1, 2)}


def dataset_of(key: str) -> str:
    return "imagenet" if key.startswith("imagenet/") else "cifar100"


def build(key: str, device: str = "cpu"):
    with torch.device(device):
        return models.build_model(key.split("/")[1], SPECS[key]["num_classes"], dataset_of(key))


def table(model) -> list:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]


def assert_matches(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * want.abs().max().item())


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One intra-op thread for this module: its float64 forwards are many small ops (grouped
    convolutions run group by group), where a second thread gains little and, when other
    processes share the cores, OpenMP's waiting makes them up to 50× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference_run():
    """``key -> (model, logits, features)``: the float64 model filled by the recipe, run once on
    the reference input and shared by the tests of this module."""
    cache = {}

    def run(key):
        if key not in cache:
            model = fill_(build(key).double()).eval()
            spec = SPECS[key]["outputs"]["input"]
            images = make_input(spec["shape"], spec["seed"])
            with torch.no_grad():
                cache[key] = model, model(images), model.forward_features(images)
        return cache[key]

    yield run
    cache.clear()


# --- the reference data, model by model --------------------------------------------------------

@pytest.mark.parametrize("key", SPECS)
def test_state_dict_table_params_and_macs_match_reference(key):
    model = build(key, device="meta")
    spec = SPECS[key]
    assert table(model) == spec["state_dict"]
    assert count_params(model) == spec["params"]
    assert count_macs(model, spec["input_chw"][1]) == spec["macs_per_image"]


@pytest.mark.parametrize("key", ["cifar100/resnet8", "imagenet/MobileNetV1", "one/one_resnet32"])
def test_recipe_reproduces_reference_fill_and_input_fingerprints(key):
    values = [v for v in fill_(build(key).double()).state_dict().values() if v.is_floating_point()]
    want = SPECS[key]["fill_fingerprint"]
    assert sum(v.sum().item() for v in values) == pytest.approx(want["sum"], rel=1e-12)
    assert sum(v.square().sum().item() for v in values) == pytest.approx(want["sum_of_squares"], rel=1e-12)
    probe = META["inputs"]["cifar_visible"]
    images = make_input(probe["shape"], probe["seed"])
    assert images.flatten()[:6].tolist() == probe["fingerprint"]["first"]
    assert images.sum().item() == pytest.approx(probe["fingerprint"]["sum"], rel=1e-12)


@pytest.mark.parametrize("key", ZOO_KEYS)
def test_logits_match_reference(key, reference_run):
    _, logits, features = reference_run(key)
    assert_matches(logits, OUTPUTS[key])
    assert torch.equal(features["logits"], logits)


# models whose reference reports no pre-activation maps and ours fill the gap for the methods
# that distil them (tests/test_feature_taps.py checks what they hold)
PREACT_FILLED = {"cifar100/MobileNetV2"}


@pytest.mark.parametrize("key", ZOO_KEYS)
def test_feature_fingerprints_match_reference(key, reference_run):
    _, _, features = reference_run(key)
    for group in ("feats", "preact_feats"):
        has_group = f"{key}/{group}/0/chan_mean" in FEATURES
        if group == "preact_feats" and key in PREACT_FILLED:
            assert not has_group and features[group] is not None
            continue
        assert (features[group] is not None) == has_group, group
        for i, feature_map in enumerate(features[group] or []):
            for summary, dims in MAP_SUMMARIES.items():
                assert_matches(feature_map.mean(dims), FEATURES[f"{key}/{group}/{i}/{summary}"])
    assert_matches(features["pooled_feat"], FEATURES[f"{key}/pooled_feat"])


@pytest.mark.parametrize("key", ZOO_KEYS)
def test_forward_shapes_and_stage_channels_match_reference(key, reference_run):
    model, _, features = reference_run(key)
    shapes = SPECS[key]["forward_shapes"]
    assert [list(f.shape[1:]) for f in features["feats"]] == [s[1:] for s in shapes["feats"]]
    if shapes["preact_feats"] is not None:
        assert [list(f.shape[1:]) for f in features["preact_feats"]] == [s[1:] for s in shapes["preact_feats"]]
    assert list(features["pooled_feat"].shape[1:]) == shapes["pooled_feat"][1:]
    assert set(shapes["feats_dict_keys"]) <= set(features)
    # stage_channels are the widths of feats, stem included; the reference's CIFAR-v2 and
    # ImageNet ResNets report [256, 512, 1024, 2048] for every depth, which is wrong for 18/34
    assert model.stage_channels == [s[1] for s in shapes["feats"]]


@pytest.mark.parametrize("key", SPECS)
def test_forward_head_maps_last_feature_map_to_logits(key, reference_run):
    model, _, features = reference_run(key)
    with torch.no_grad():
        assert_matches(model.forward_head(features["feats"][-1]), features["logits"])
        assert_matches(model.forward_head(features["feats"][-1], pre_logits=True), features["pooled_feat"])


# --- ONE -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ONE_KEYS)
def test_one_branches_gate_and_ensemble_match_reference(key, reference_run):
    _, logits, out = reference_run(key)
    for b in range(3):
        assert_matches(out["branch_logits"][b], OUTPUTS[f"{key}/out{b + 1}"])
    for name in ("ensemble", "gate", "gate_preact"):
        assert_matches(out["ensemble_logits" if name == "ensemble" else name], OUTPUTS[f"{key}/{name}"])
    assert torch.equal(logits, out["logits"]) and torch.equal(out["logits"], out["branch_logits"][0])


@pytest.mark.parametrize("key", ONE_KEYS)
def test_one_trunk_and_branch_features_match_reference(key, reference_run):
    _, _, out = reference_run(key)
    named = {"trunk": out["feats"][2], **{f"branch{b + 1}": f for b, f in enumerate(out["branch_feats"])}}
    assert out["feats"][-1] is out["branch_feats"][0]
    for name, feature_map in named.items():
        for summary, dims in MAP_SUMMARIES.items():
            assert_matches(feature_map.mean(dims), FEATURES[f"{key}/{name}/{summary}"])


def test_one_output_switches_between_branch_and_ensemble(reference_run):
    model, _, out = reference_run("one/one_resnet32")
    images = make_input((4, 3, 32, 32), 0)
    with torch.no_grad():
        assert torch.equal(model(images), out["branch_logits"][0])
        model.output = "ensemble"
        try:
            assert_matches(model(images), out["ensemble_logits"])
        finally:
            model.output = "branch"
    with pytest.raises(ValueError):
        model.output = "mean"
    assert models.build_model("one_resnet110").layer1[0].conv3.out_channels == 64  # Bottleneck ≥ 44


# --- the contract of every registered name -----------------------------------------------------

CONTRACT = [(dataset, name) for dataset in ("cifar100", "imagenet") for name in models.list_models(dataset)]


@pytest.mark.parametrize("dataset,name", CONTRACT)
def test_every_registered_model_gives_logits_and_features(dataset, name):
    model = models.build_model(name, num_classes=10, dataset=dataset).eval()
    size = models.input_size(dataset)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
        out = model.forward_features(torch.randn(2, 3, size, size))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 10) and model.num_classes == 10
    assert {"logits", "feats", "preact_feats", "pooled_feat"} <= set(out)
    assert all(f.dim() == 4 for f in out["feats"]) and out["pooled_feat"].shape[0] == 2
    assert model.stage_channels == [f.shape[1] for f in out["feats"]]
    torch.testing.assert_close(model.forward_head(out["feats"][-1]), out["logits"])


@pytest.mark.parametrize("name", [n for n in models.list_models("cifar100") if not n.startswith("one_")])
def test_reading_features_moves_batchnorm_statistics_as_the_plain_forward_does(name):
    """(ONE is left out: its plain forward runs branch 1 only, by design.)"""
    torch.manual_seed(0)
    plain = models.build_model(name).train()
    featured = copy.deepcopy(plain)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain(images)
        featured.forward_features(images)
    for (key, value), other in zip(plain.state_dict().items(), featured.state_dict().values()):
        assert torch.equal(value, other), key


@pytest.mark.parametrize("name,paper_millions,decimals", [
    ("wrn_40_4", 8.97, 2), ("wrn_16_4", 2.77, 2), ("wrn_16_10", 17.2, 1), ("wrn_10_10", 7.49, 2),
    ("ResNet34", 21.33, 2), ("ResNet10", 4.95, 2)])
def test_srrl_paper_networks_have_the_papers_parameter_counts(name, paper_millions, decimals):
    with torch.device("meta"):
        model = models.build_model(name, num_classes=100)
    assert round(count_params(model) / 1e6, decimals) == paper_millions


def test_unknown_or_wrong_family_names_are_one_line_user_errors():
    with pytest.raises(UserError, match="did you mean 'resnet32x4'") as unknown:
        models.build_model("resnet32x2")
    with pytest.raises(UserError, match="exists only for imagenet") as wrong_family:
        models.build_model("MobileNetV1", dataset="cifar100")
    assert "\n" not in str(unknown.value) + str(wrong_family.value)
    assert "ResNet18" in models.list_models("synthetic") and "MobileNetV1" not in models.list_models("cifar10")
    assert set(models.list_models()) == set(models.list_models("cifar100")) | set(models.list_models("imagenet"))


def test_models_table_lists_every_model_with_params_and_macs(capsys):
    models_main.main(["--dataset", "imagenet"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 + len(models.list_models("imagenet"))
    assert "imagenet  ResNet50         25.56 M     4.09 G" in lines


# --- checkpoints ---------------------------------------------------------------------------------

class Opaque:
    """Stands for any pickled Python object in a checkpoint."""


def released_checkpoint(model) -> dict:
    """What RepDistiller's train_teacher.py writes: model, epoch, accuracy and SGD state."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    return {"epoch": 240, "model": model.state_dict(), "accuracy": torch.tensor(72.34),
            "optimizer": optimizer.state_dict()}


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return models.build_model("resnet8")


def logits_of(model):
    with torch.no_grad():
        return model.eval()(make_input((2, 3, 32, 32), 1).float())


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_released_teacher_checkpoint_loads_with_identical_logits(zip_format, teacher, tmp_path):
    """The 2019 teachers predate torch's zip format: both serialisations must load."""
    path = tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    torch.save(released_checkpoint(teacher), path, _use_new_zipfile_serialization=zip_format)
    loaded = models.load_weights(models.build_model("resnet8"), str(path), arch="resnet8")
    assert torch.equal(logits_of(loaded), logits_of(teacher))


@pytest.mark.parametrize("layout", ["state_dict_with_module_prefix", "bare", "bare_with_module_prefix"])
def test_other_checkpoint_layouts_load(layout, teacher, tmp_path):
    state = teacher.state_dict()
    if "module_prefix" in layout:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"state_dict": state, "best_acc": 70.0} if layout.startswith("state_dict") else state,
               tmp_path / "c.pth")
    loaded = models.load_weights(models.build_model("resnet8"), str(tmp_path / "c.pth"))
    assert torch.equal(logits_of(loaded), logits_of(teacher))


def load_error(tmp_path, content, arch="resnet8", num_classes=100, zip_format=True) -> str:
    path = tmp_path / "c.pth"
    if content is not None:
        torch.save(content, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(UserError) as error:
        models.load_weights(models.build_model(arch, num_classes), str(path), arch=arch)
    message = str(error.value)
    assert "\n" not in message
    return message.replace(str(path), "PATH")


def test_missing_file_is_a_user_error(tmp_path):
    assert load_error(tmp_path, None) == "teacher checkpoint not found: PATH"


def test_wrong_architecture_names_arch_file_and_keys(teacher, tmp_path):
    message = load_error(tmp_path, {"model": teacher.state_dict()}, arch="resnet14")
    assert message.startswith("PATH does not fit architecture 'resnet14': missing keys layer1.1.conv1.weight")
    assert "unexpected keys none" in message


def test_wrong_class_count_is_named(tmp_path):
    ten_classes = models.build_model("resnet8", num_classes=10).state_dict()
    assert load_error(tmp_path, {"model": ten_classes}) == "PATH was trained for 10 classes, the model has 100"


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_pickled_python_objects_are_refused(zip_format, teacher, tmp_path):
    message = load_error(tmp_path, {"model": teacher.state_dict(), "args": Opaque()}, zip_format=zip_format)
    assert message.startswith("refusing to load PATH: it holds pickled Python objects (")
    assert "Opaque" in message


def test_a_file_without_state_dict_is_a_user_error(tmp_path):
    assert "holds no state dict" in load_error(tmp_path, {"epoch": 3})
    (tmp_path / "c.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="is not a PyTorch checkpoint: neither a zip archive"):
        models.load_weights(models.build_model("resnet8"), str(tmp_path / "c.pth"))


# --- torchvision ---------------------------------------------------------------------------------

TORCHVISION = {"ResNet18": torchvision.models.resnet18, "ResNet34": torchvision.models.resnet34,
               "ResNet50": torchvision.models.resnet50, "ResNet101": torchvision.models.resnet101}


@pytest.mark.parametrize("name", TORCHVISION)
def test_imagenet_resnets_have_torchvisions_state_dict(name):
    with torch.device("meta"):
        assert table(models.build_model(name, 1000, "imagenet")) == table(TORCHVISION[name]())


@pytest.mark.parametrize("name", ["ResNet18", "ResNet50"])
def test_torchvision_state_dict_loads_strictly_with_equal_logits(name):
    theirs = fill_(TORCHVISION[name]().double()).eval()
    ours = models.build_model(name, 1000, "imagenet").double().eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = make_input((1, 3, 224, 224), 0)
    with torch.no_grad():
        assert_matches(ours(images), theirs(images))


def test_checkpoint_torchvision_fetches_v1_weights(monkeypatch):
    calls, served = [], torchvision.models.resnet18().state_dict()

    def fake_download(url, **kwargs):
        calls.append((url, kwargs))
        return served

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    model = models.load_weights(models.build_model("ResNet18", 1000, "imagenet"), "torchvision", arch="ResNet18")
    (url, kwargs), = calls
    assert url == torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    assert kwargs["weights_only"] and kwargs["map_location"] == "cpu"
    assert all(torch.equal(value, served[key]) for key, value in model.state_dict().items())


def test_checkpoint_torchvision_offline_or_unknown_arch_is_a_user_error(monkeypatch):
    def offline(url, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    model = models.build_model("ResNet34", 1000, "imagenet")
    with pytest.raises(UserError, match="cannot fetch torchvision's ResNet34_Weights.IMAGENET1K_V1"):
        models.load_weights(model, "torchvision", arch="ResNet34")
    with pytest.raises(UserError, match="not for 'MobileNetV1'"):
        models.load_weights(models.build_model("MobileNetV1", 1000, "imagenet"), "torchvision", arch="MobileNetV1")


def test_batchnorm_recalibration_gives_a_random_deep_network_a_trained_networks_logit_scale():
    """A random ResNet-110 in eval mode (BN stats at 0/1) explodes; smoke runs recalibrate it."""
    torch.manual_seed(0)
    model = models.build_model("resnet110").eval()
    images = torch.randn(8, 3, 32, 32)
    weights = {k: v.clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        assert model(images).abs().max() > 1e4
        models.recalibrate_batchnorm(model, (3, 32, 32))
        assert model(images).abs().max() < 50
    assert not model.training and model.layer1[0].bn1.momentum == 0.1
    assert all(torch.equal(weights[k], v) for k, v in model.named_parameters())


def test_one_imagenet_resnet18_is_resnet18_with_layer4_and_fc_per_branch():
    """one_ResNet18 (no reference network exists): trunk = ResNet-18's stem and layer1-3, each
    branch = its layer4 + fc. Loaded with one ResNet-18's weights in every branch, each branch
    and the ensemble (gate weights sum to 1) give that ResNet-18's logits."""
    torch.manual_seed(0)
    plain = models.build_model("ResNet18", num_classes=10, dataset="imagenet").eval()
    one = models.build_model("one_ResNet18", num_classes=10, dataset="imagenet").eval()
    count = lambda m: sum(p.numel() for p in m.parameters())
    gate = count(one.control_v1) + count(one.bn_v1)
    assert count(one) == count(plain) + 2 * (count(plain.layer4) + count(plain.fc)) + gate
    state = {}
    for key, value in plain.state_dict().items():
        head, _, rest = key.partition(".")
        if head in ("layer4", "fc"):
            name = "layer4" if head == "layer4" else "classfier4"
            for b in (1, 2, 3):
                state[f"{name}_{b}.{rest}"] = value
        else:
            state[key] = value
    state.update({k: v for k, v in one.state_dict().items() if k.split(".")[0] in ("control_v1", "bn_v1")})
    one.load_state_dict(state, strict=True)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = plain(images)
        outputs = one.named_outputs(images)
    for name, logits in outputs.items():
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5, msg=name)
