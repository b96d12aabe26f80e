"""Face embedding models: backbones, embedding heads and ``build_embedder``.

``BACKBONES`` and ``POOLINGS`` are the registries the CLI lists;
``build_embedder`` composes them into the embedder of docs/architecture.md;
``count_parameters`` / ``count_macs`` / ``count_flops`` measure a built model.
"""

from ffem_cli.models.backbones import BACKBONES, BackboneSpec
from ffem_cli.models.embedder import build_embedder
from ffem_cli.models.flops import count_flops, count_macs, count_parameters
from ffem_cli.models.pooling import POOLINGS, NormAwareReweight, PoolingSpec

__all__ = [
    "BACKBONES",
    "POOLINGS",
    "BackboneSpec",
    "NormAwareReweight",
    "PoolingSpec",
    "build_embedder",
    "count_flops",
    "count_macs",
    "count_parameters",
]
