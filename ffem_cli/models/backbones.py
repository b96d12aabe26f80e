"""Backbone registry: name → ``registry.Entry`` (builder, paper, default pooling, min input size).

A backbone builder takes the normalised pixel tensor (N, S, S, 3) (values in
about [-1, 1]) and returns its last feature map (N, h, w, C); the embedding
head (``pooling.POOLINGS``) turns that into the embedding.
"""

from __future__ import annotations

import functools

from ffem_cli.models.applications import (
    build_efficientnetb3,
    build_mobilenetv2,
    build_mobilenetv3_large,
    build_mobilenetv3_minimalistic,
    build_mobilenetv3_small,
    build_resnet50,
    build_resnet50v2,
)
from ffem_cli.models.iresnet import IRESNET_DEPTHS, build_iresnet
from ffem_cli.models.mobilefacenet import build_mobilefacenet
from ffem_cli.models.resnet18 import build_resnet18
from ffem_cli.models.thin_resnet import build_thin_resnet34
from ffem_cli.models.thin_resnet_se import build_thin_resnet34_se
from ffem_cli.models.tiny import build_tiny
from ffem_cli.registry import Entry


def backbone(build, default_pooling: str, min_input_size: int, paper: str) -> Entry:
    """A backbone's entry: ``build(x) -> feature map``, the head it is published with, the
    smallest accepted input side in pixels, and where it comes from."""
    return Entry(build, paper, default_pooling=default_pooling, min_input_size=min_input_size)


IRESNET_PAPER = "Deng et al. 2019, ArcFace (CVPR); insightface arcface_torch"

BACKBONES: dict[str, Entry] = {
    "mobilefacenet": backbone(build_mobilefacenet, "gdc", 96, "Chen et al. 2018, MobileFaceNets (CCBR)"),
    "mobilenetv3-small": backbone(build_mobilenetv3_small, "gdc", 96, "Howard et al. 2019, MobileNetV3 (ICCV)"),
    "mobilenetv3-large": backbone(build_mobilenetv3_large, "gdc", 96, "Howard et al. 2019, MobileNetV3 (ICCV)"),
    "mobilenetv3-minimalistic": backbone(
        build_mobilenetv3_minimalistic,
        "gdc",
        96,
        "Howard et al. 2019, MobileNetV3 (ICCV), minimalistic; FFEM seed 001",
    ),
    "mobilenetv2": backbone(build_mobilenetv2, "gdc", 96, "Sandler et al. 2018, MobileNetV2 (CVPR)"),
    "efficientnetb3": backbone(build_efficientnetb3, "gnap", 96, "Tan & Le 2019, EfficientNet (ICML)"),
    **{
        name: backbone(functools.partial(build_iresnet, depths=depths), "flatten-fc", 96, IRESNET_PAPER)
        for name, depths in IRESNET_DEPTHS.items()
    },
    "resnet50": backbone(build_resnet50, "gnap", 96, "He et al. 2016, ResNet (CVPR)"),
    "resnet50v2": backbone(build_resnet50v2, "gnap", 96, "He et al. 2016, identity mappings (ECCV); FFEM seed 003"),
    "resnet18": backbone(build_resnet18, "gap", 96, "He et al. 2016, ResNet (CVPR); torchvision, EE488B trainer"),
    "thin-resnet34": backbone(build_thin_resnet34, "gap", 96, "EE488B trainer; Chung et al. 2020 (ResNetSE34V2)"),
    "thin-resnet34-se": backbone(
        build_thin_resnet34_se, "gap", 96, "EE488B trainer ThinResNet34 (voxceleb_trainer ResNetSE)"
    ),
    "tiny": backbone(build_tiny, "gap", 32, "— (4 conv blocks, for tests)"),
}
