"""Face embedding models: backbones, embedding heads and ``build_embedder``.

``BACKBONES`` and ``POOLINGS`` are the registries the CLI lists;
``build_embedder`` composes them into the embedder of docs/architecture.md;
``count_parameters`` / ``count_macs`` / ``count_flops`` measure a built model.
"""

from ffem_cli.models.backbones import BACKBONES
from ffem_cli.models.embedder import build_embedder, precision_policy
from ffem_cli.models.flops import count_flops, count_macs, count_parameters
from ffem_cli.models.pooling import POOLINGS, NormAwareReweight

__all__ = [
    "BACKBONES",
    "POOLINGS",
    "NormAwareReweight",
    "build_embedder",
    "count_flops",
    "count_macs",
    "count_parameters",
    "precision_policy",
]
