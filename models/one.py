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
"""
from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from models.base import CIFAR_MODELS, StageMaps, ZooModel, global_pool, kaiming_init_, run_stages
from models.resnet import BasicBlock, Bottleneck, conv3x3, make_stage

OUTPUTS = ("branch", "ensemble")


class ONEResNet(ZooModel):
    """``model(x)``: branch 1's logits (``output="branch"``, the reference's headline model,
    computed without the other branches) or the gated ensemble's (``output="ensemble"``); the
    ``output`` attribute can be switched at any time. ``forward_features`` gives everything."""

    classifier_name = "classfier3_1"

    def __init__(self, depth: int, num_classes: int = 100, branches: int = 3, output: str = "branch"):
        super().__init__(num_classes)
        if (depth - 2) % 6:
            raise ValueError(f"a ONE ResNet has depth 6n + 2, not {depth}")
        n = (depth - 2) // 6
        block = Bottleneck if depth >= 44 else BasicBlock
        trunk_width = 32 * block.expansion
        self.output = output
        self.branches = branches
        self.conv1 = conv3x3(3, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = make_stage(block, 16, 16, n, 1)
        self.layer2 = make_stage(block, 16 * block.expansion, 32, n, 2)
        for b in range(1, branches + 1):
            setattr(self, f"layer3_{b}", make_stage(block, trunk_width, 64, n, 2))
        self.control_v1 = nn.Linear(trunk_width, branches)
        self.bn_v1 = nn.BatchNorm1d(branches)
        for b in range(1, branches + 1):
            setattr(self, f"classfier3_{b}", nn.Linear(64 * block.expansion, num_classes))
        self.stage_channels = [16, 16 * block.expansion, trunk_width, 64 * block.expansion]
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
        return getattr(self, f"{name}_{b}")

    def _trunk(self, x: torch.Tensor) -> StageMaps:
        """The shared trunk: stem, layer1, layer2."""
        x = F.relu(self.bn1(self.conv1(x)))
        yield x, x
        yield from run_stages(x, (self.layer1, self.layer2))

    def _stages(self, x: torch.Tensor) -> StageMaps:
        """The trunk, then branch 1's last stage: what ``model(x)`` needs for branch 1."""
        feat = x
        for feat, preact in self._trunk(x):
            yield feat, preact
        yield from run_stages(feat, [self.layer3_1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output == "ensemble":
            return self.forward_features(x)["ensemble_logits"]
        return super().forward(x)

    def forward_features(self, x: torch.Tensor) -> Dict[str, object]:
        """``logits`` (branch 1), ``branch_logits`` [B, N, C], ``ensemble_logits``, ``gate``
        [N, B] and ``gate_preact`` (the ``bn_v1`` output), ``feats`` / ``preact_feats`` (stem,
        layer1, layer2 = trunk, branch 1's layer3), ``branch_feats`` (every branch's layer3
        output) and ``pooled_feat`` (branch 1's)."""
        stages = list(self._trunk(x))
        trunk = stages[-1][0]
        gate_preact = self.bn_v1(self.control_v1(global_pool(trunk)))
        gate = F.softmax(F.relu(gate_preact), dim=1)
        branch_maps = [next(run_stages(trunk, [self._branch(b, "layer3")]))
                       for b in range(1, self.branches + 1)]
        pooled = [global_pool(feat) for feat, _ in branch_maps]
        branch_logits = torch.stack([self._branch(b, "classfier3")(p) for b, p in enumerate(pooled, 1)])
        ensemble = (gate.t().unsqueeze(-1) * branch_logits).sum(0)
        feats: List[torch.Tensor] = [feat for feat, _ in stages] + [branch_maps[0][0]]
        return {"logits": branch_logits[0], "branch_logits": branch_logits, "ensemble_logits": ensemble,
                "gate": gate, "gate_preact": gate_preact, "feats": feats,
                "preact_feats": [pre for _, pre in stages] + [branch_maps[0][1]],
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


@CIFAR_MODELS.register("one_resnet32")
def one_resnet32(num_classes: int = 100, output: str = "branch") -> ONEResNet:
    return ONEResNet(32, num_classes, output=output)


@CIFAR_MODELS.register("one_resnet110")
def one_resnet110(num_classes: int = 100, output: str = "branch") -> ONEResNet:
    return ONEResNet(110, num_classes, output=output)
