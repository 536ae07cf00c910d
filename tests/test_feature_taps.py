"""What the baseline methods tap in a network, supplied by every model of the zoo: stage maps
after and before the ReLU, the pooled feature, and (OFD's margins) the BatchNorm before each
stage's ReLU, equal to the reference's ``get_bn_before_relu`` (reference/models.json)."""
import json
from pathlib import Path

import pytest
import torch

import models

SPECS = json.loads((Path(__file__).parent / "reference" / "models.json").read_text())["models"]
WITH_BN_LIST = [k for k, s in SPECS.items() if not k.startswith("one/") and s["bn_before_relu"] is not None]
CIFAR = [n for n in models.list_models("cifar100") if not n.startswith("one_")]


def build_structure(key):
    """The model's module tree without weights (meta device: instant even for ResNet101)."""
    dataset, name = key.split("/")
    with torch.device("meta"):
        return models.build_model(name, SPECS[key]["num_classes"], dataset=dataset)


@pytest.mark.parametrize("key", WITH_BN_LIST)
def test_bn_before_relu_ends_with_the_references_list(key):
    model = build_structure(key)
    reference = SPECS[key]["bn_before_relu"]
    names = {module: name for name, module in model.named_modules()}
    ours = [None if bn is None else names[bn] for bn in model.bn_before_relu()]
    assert ours[-len(reference):] == reference
    # one entry per map of feats, each as wide as its map
    feat_shapes = SPECS[key]["forward_shapes"]["feats"]
    assert len(ours) == len(feat_shapes)
    for bn, shape in zip(model.bn_before_relu(), feat_shapes):
        assert bn is None or (isinstance(bn, torch.nn.BatchNorm2d) and bn.num_features == shape[1])


@pytest.mark.parametrize("name", ["ShuffleV1", "ShuffleV2"])
def test_models_without_the_list_say_so(name):
    with pytest.raises(NotImplementedError, match="names no BatchNorm"):
        with torch.device("meta"):
            models.build_model(name, 100).bn_before_relu()


@pytest.mark.parametrize("name", CIFAR)
def test_every_cifar_model_supplies_what_the_baselines_tap(name):
    model = models.build_model(name, 100).eval()
    with torch.no_grad():   # 16 pixels: the maps' presence is checked, their sizes elsewhere
        out = model.forward_features(torch.randn(2, 3, 16, 16))
    feats, preacts = out["feats"], out["preact_feats"]
    assert preacts is not None and len(preacts) == len(feats)
    for f, p in zip(feats, preacts):
        assert f.shape == p.shape
    assert out["pooled_feat"].shape[0] == 2 and out["pooled_feat"].dim() == 2


def test_mobilenetv2_preact_fills_the_gap_with_the_maps_before_any_relu():
    model = models.build_model("MobileNetV2", 100).eval()
    keys_before = [k for k, _, _ in SPECS["cifar100/MobileNetV2"]["state_dict"]]
    assert list(model.state_dict()) == keys_before
    with torch.no_grad():
        out = model.forward_features(torch.randn(2, 3, 32, 32))
    feats, preacts = out["feats"], out["preact_feats"]
    assert torch.equal(torch.relu(preacts[0]), feats[0]) and (preacts[0] < 0).any()
    for f, p in zip(feats[1:], preacts[1:]):   # linear bottlenecks: no ReLU after a group
        assert torch.equal(f, p)
