"""What every model of the zoo offers, and the small pieces the families share.

The contract (timm's split of trunk and head, which is what feature distillers need):
``model(x)`` gives the logits, like any torchvision model; ``model.forward_features(x)`` gives
them together with the stage maps in the benchmark's order (mdistiller's ``feats`` dict);
``model.forward_head(feature_map)`` maps the last stage map to the logits (SRRL feeds the
student's map through the teacher's head). A family implements ``_stages`` (a generator over
the stage maps), names its classifier and, when something sits between the last stage map and
the pooling, ``_pre_pool``; the plain forward and the feature forward share that one generator.
"""
from functools import partial
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from utils.registry import Registry

CIFAR_MODELS = Registry("CIFAR model")
IMAGENET_MODELS = Registry("ImageNet model")

StageMaps = Iterator[Tuple[torch.Tensor, Optional[torch.Tensor]]]


def register_variants(registry: Registry, build: Callable, variants: Dict[str, tuple]) -> None:
    """Register ``build(*args, num_classes=...)`` under each name of ``variants`` (name -> args):
    a family's table of named networks, instead of one decorated function per name."""
    for name, args in variants.items():
        registry.register(name)(partial(build, *args))


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling to ``[N, C]``. The references use fixed kernels (8, 4, 7, ...) that
    equal this at their native resolution; the global form also works at any other."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle (Zhang et al., CVPR 2018, Sec. 3.1): view the channels as
    ``[groups, C/groups]``, transpose, flatten."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def chain_preact(blocks: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Run blocks that each return their output *before* the final ReLU, applying that ReLU on
    the way into the next block; return the last block's pre-ReLU output. This is where the
    benchmark reads its pre-activation features, so no block needs an ``is_last`` flag."""
    for i, block in enumerate(blocks):
        x = block(F.relu(x) if i else x)
    return x


class Stage(nn.Sequential):
    """A sequence of pre-ReLU blocks (keys ``<stage>.<i>.*``); returns the pre-ReLU output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return chain_preact(self, x)


def run_stages(x: torch.Tensor, stages: Iterable) -> StageMaps:
    """Yield ``(ReLU(out), out)`` of each stage in turn, feeding ``ReLU(out)`` to the next."""
    for stage in stages:
        preact = stage(x)
        x = F.relu(preact)
        yield x, preact


def kaiming_init_(model: nn.Module, linear_std: Optional[float] = None) -> nn.Module:
    """The references' explicit initialisation: conv weights N(0, 2 / (k·k·out_channels)) (He et
    al., ICCV 2015, fan-out mode), conv biases 0; with ``linear_std`` also the classifier's
    weights N(0, linear_std²) and biases 0 (VGG, MobileNetV2). BatchNorm keeps its default 1/0."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear) and linear_std is not None:
            nn.init.normal_(module.weight, 0.0, linear_std)
            nn.init.zeros_(module.bias)
    return model


class ZooModel(nn.Module):
    """Base of every zoo model; see the module docstring for the contract."""

    classifier_name = "fc"

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.stage_channels: List[int] = []

    def _stages(self, x: torch.Tensor) -> StageMaps:
        """Yield ``(feature map, pre-activation map or None)`` per stage, stem first."""
        raise NotImplementedError

    def _pre_pool(self, x: torch.Tensor) -> torch.Tensor:
        """What the network applies between its last stage map and the pooling."""
        return x

    def _preact_feats(self, feats: List[torch.Tensor], preacts: List) -> Optional[List[torch.Tensor]]:
        return preacts

    def _bn_before_relu_names(self) -> List[Optional[str]]:
        raise NotImplementedError(f"{type(self).__name__} names no BatchNorm before its stage ReLUs")

    def bn_before_relu(self) -> List[Optional[nn.BatchNorm2d]]:
        """For each map of ``forward_features(x)["feats"]``, the BatchNorm whose output that
        map's ReLU takes (None where no BatchNorm precedes it). OFD derives its margins from a
        teacher's: the reference's ``get_bn_before_relu()`` lists the same modules for the
        stages it distils (a suffix of this list)."""
        return [None if name is None else self.get_submodule(name) for name in self._bn_before_relu_names()]

    def get_classifier(self) -> nn.Module:
        return getattr(self, self.classifier_name)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Last stage map → logits (or, with ``pre_logits``, the pooled feature)."""
        pooled = global_pool(self._pre_pool(x))
        return pooled if pre_logits else self.get_classifier()(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for x, _ in self._stages(x):
            pass  # only the last stage map is needed for the logits
        return self.forward_head(x)

    def forward_features(self, x: torch.Tensor) -> Dict[str, object]:
        """``{"logits", "feats", "preact_feats", "pooled_feat"}`` as the benchmark defines them
        (``preact_feats`` is None where the reference has none)."""
        feats, preacts = map(list, zip(*self._stages(x)))
        pooled = self.forward_head(feats[-1], pre_logits=True)
        return {"logits": self.get_classifier()(pooled), "feats": feats,
                "preact_feats": self._preact_feats(feats, preacts), "pooled_feat": pooled}
