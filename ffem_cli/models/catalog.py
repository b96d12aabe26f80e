"""What ``ffem models`` lists: every backbone measured, every head, every loss.

``backbone_rows`` builds each registered backbone with its default head and
counts parameters and MACs (see ``flops`` for the conventions).
``registry_rows`` describes the entries of a registry (``registry.Entry``):
name, family, option defaults and paper.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ffem_cli.models.backbones import BACKBONES
from ffem_cli.models.embedder import build_embedder
from ffem_cli.models.flops import count_macs, count_parameters
from ffem_cli.registry import Entry


@dataclass(frozen=True)
class BackboneRow:
    """One measured backbone: parameters and forward MACs per image incl. its head."""

    name: str
    pooling: str
    embedding_size: int
    input_size: int
    parameters: int
    macs: int
    paper: str


def backbone_rows(embedding_size: int = 512, input_size: int = 112) -> Iterator[BackboneRow]:
    """Build each backbone with its default head in turn and yield its counts.

    Backbones whose ``min_input_size`` exceeds ``input_size`` are left out.
    """
    for name, spec in BACKBONES.items():
        if input_size < spec.min_input_size:
            continue
        model = build_embedder(name, spec.default_pooling, embedding_size, input_size)
        yield BackboneRow(
            name,
            spec.default_pooling,
            embedding_size,
            input_size,
            count_parameters(model),
            count_macs(model),
            spec.paper,
        )


def registry_rows(registry: dict[str, Entry]) -> Iterator[tuple[str, str, str, str]]:
    """(name, family, defaults, paper) for each entry of a registry (``Entry.describe_defaults``)."""
    for name, entry in registry.items():
        yield name, entry.family, entry.describe_defaults(), entry.paper
