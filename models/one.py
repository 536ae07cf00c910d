"""ONE, the On-the-fly Native Ensemble (Lan, Zhu & Gong, "Knowledge Distillation by On-the-Fly
Native Ensemble", NeurIPS 2018), as ``one_resnet(depth)`` of the authors' code
(Lan1991Xu/ONE_NeurIPS2018, ``models/cifar/resnet.py``).

A CIFAR ResNet whose last stage is copied into three branches (``layer3_1/2/3``, each with its
own classifier ``classfier3_1/2/3``, the reference's spelling, kept so its checkpoints load)
on a shared trunk (``conv1``, ``bn1``, ``layer1``, ``layer2``), and a gate: the pooled trunk
output → ``control_v1`` Linear → ``bn_v1`` BatchNorm1d → ReLU → softmax over the branches. The
ensemble (the teacher of the branches) is Σ_b gate_b · logits_b, nothing detached.
The reference follows bearpaw's convention: BasicBlocks below depth 44, Bottlenecks (×4) from
44 on, (depth − 2) / 6 blocks per stage; so ONE's "ResNet-110" is a 164-layer Bottleneck
network, not the benchmark's ``resnet110``. Blocks are the shared ones of ``models.resnet``.

``one_ResNet18`` (ImageNet family) applies the same split to torchvision's ResNet-18: stem and
layer1-3 shared, ``layer4_b`` + ``classfier4_b`` per branch, the gate on layer3's pooled output.
The reference has no ImageNet code; this is the natural reading of the paper's ImageNet ResNet-18.
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from models.base import (CIFAR_MODELS, IMAGENET_MODELS, StageMaps, ZooModel, global_pool, kaiming_init_,
                         register_variants, run_stages)
from models.resnet import BasicBlock, Bottleneck, add_trunk, make_stage, stem_and_stages

OUTPUTS = ("branch", "ensemble")


class ONEResNet(ZooModel):
    """``model(x)``: branch 1's logits (``output="branch"``, the reference's headline model,
    computed without the other branches) or the gated ensemble's (``output="ensemble"``); the
    ``output`` attribute can be switched at any time. ``forward_features`` gives everything.

    Built from a ResNet's stage layout: every stage but the last is the shared trunk, the last
    stage (``layerK_b``) and a classifier (``classfierK_b``) are copied per branch. The CIFAR
    networks are the reference's (K = 3); ``imagenet_stem`` gives the torchvision-style ImageNet
    ResNets the same split (K = 4), the natural one the paper's ImageNet ResNet-18 describes.
    """

    def __init__(self, block, depths, planes, stem_width: int, num_classes: int = 100,
                 branches: int = 3, output: str = "branch", imagenet_stem: bool = False):
        super().__init__(num_classes)
        self.output = output
        self.branches = branches
        self.last = len(depths)
        width = add_trunk(self, block, depths[:-1], planes[:-1], stem_width, imagenet_stem)
        for b in range(1, branches + 1):
            setattr(self, f"layer{self.last}_{b}", make_stage(block, width, planes[-1], depths[-1], 2))
        self.control_v1 = nn.Linear(width, branches)
        self.bn_v1 = nn.BatchNorm1d(branches)
        for b in range(1, branches + 1):
            setattr(self, f"classfier{self.last}_{b}", nn.Linear(planes[-1] * block.expansion, num_classes))
        self.classifier_name = f"classfier{self.last}_1"
        self.stage_channels = [stem_width] + [p * block.expansion for p in planes]
        kaiming_init_(self)

    @property
    def output(self) -> str:
        return self._output

    @output.setter
    def output(self, value: str) -> None:
        if value not in OUTPUTS:
            raise ValueError(f"ONE output must be one of {OUTPUTS}, not {value!r}")
        self._output = value

    def _branch(self, b: int, name: str) -> nn.Module:
        """Branch ``b``'s copy of ``name``: ``"layer"`` (the last stage) or ``"classfier"``."""
        return getattr(self, f"{name}{self.last}_{b}")

    def _trunk_stages(self) -> List[nn.Module]:
        """The shared trunk's stages: every stage but the last."""
        return [getattr(self, f"layer{i}") for i in range(1, self.last)]

    def _stages(self, x: torch.Tensor) -> StageMaps:
        """The trunk, then branch 1's last stage: what ``model(x)`` needs for branch 1."""
        return stem_and_stages(self, x, self._trunk_stages() + [self._branch(1, "layer")])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output == "ensemble":
            return self.forward_features(x)["ensemble_logits"]
        return super().forward(x)

    def forward_features(self, x: torch.Tensor) -> Dict[str, object]:
        """``logits`` (branch 1), ``branch_logits`` [B, N, C], ``ensemble_logits``, ``gate``
        [N, B] and ``gate_preact`` (the ``bn_v1`` output), ``feats`` / ``preact_feats`` (stem,
        the trunk's stages, branch 1's last stage), ``branch_feats`` (every branch's last-stage
        output) and ``pooled_feat`` (branch 1's)."""
        feats, preacts = map(list, zip(*stem_and_stages(self, x, self._trunk_stages())))
        trunk = feats[-1]
        gate_preact = self.bn_v1(self.control_v1(global_pool(trunk)))
        gate = F.softmax(F.relu(gate_preact), dim=1)
        branch_maps = [next(run_stages(trunk, [self._branch(b, "layer")]))
                       for b in range(1, self.branches + 1)]
        pooled = [global_pool(feat) for feat, _ in branch_maps]
        branch_logits = torch.stack([self._branch(b, "classfier")(p) for b, p in enumerate(pooled, 1)])
        ensemble = (gate.t().unsqueeze(-1) * branch_logits).sum(0)
        return {"logits": branch_logits[0], "branch_logits": branch_logits, "ensemble_logits": ensemble,
                "gate": gate, "gate_preact": gate_preact, "feats": feats + [branch_maps[0][0]],
                "preact_feats": preacts + [branch_maps[0][1]],
                "branch_feats": [feat for feat, _ in branch_maps], "pooled_feat": pooled[0]}


    def output_names(self) -> List[str]:
        """``branch1`` ... ``branchN``, ``ensemble``: the keys of ``named_outputs``."""
        return [f"branch{b}" for b in range(1, self.branches + 1)] + ["ensemble"]

    def named_outputs(self, x: torch.Tensor, headline: str = "branch1") -> Dict[str, torch.Tensor]:
        """Every branch's logits and the ensemble's, keyed by ``output_names()``, ``headline``
        first (what evaluation reports as top-1; the reference's is branch 1)."""
        if headline not in self.output_names():
            raise ValueError(f"ONE output must be one of {', '.join(self.output_names())}, "
                             f"not {headline!r}")
        out = self.forward_features(x)
        named = dict(zip(self.output_names(), [*out["branch_logits"], out["ensemble_logits"]]))
        return {headline: named.pop(headline), **named}


def one_cifar_resnet(depth: int, num_classes: int = 100, output: str = "branch") -> ONEResNet:
    """The reference's ``one_resnet(depth)``: BasicBlocks below depth 44, Bottlenecks from 44."""
    if (depth - 2) % 6:
        raise ValueError(f"a ONE ResNet has depth 6n + 2, not {depth}")
    n = (depth - 2) // 6
    block = Bottleneck if depth >= 44 else BasicBlock
    return ONEResNet(block, [n, n, n], [16, 32, 64], 16, num_classes, output=output)


register_variants(CIFAR_MODELS, one_cifar_resnet, {"one_resnet32": (32,), "one_resnet110": (110,)})


@IMAGENET_MODELS.register("one_ResNet18")
def one_imagenet_resnet18(num_classes: int = 1000, output: str = "branch") -> ONEResNet:
    """ResNet-18 (torchvision's layout) with ``layer4`` and the classifier in 3 branches."""
    return ONEResNet(BasicBlock, [2, 2, 2, 2], [64, 128, 256, 512], 64, num_classes,
                     output=output, imagenet_stem=True)
