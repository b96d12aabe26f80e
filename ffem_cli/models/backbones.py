"""Backbone registry: name → :class:`BackboneSpec`.

A backbone builder takes the normalised pixel tensor (N, S, S, 3) (values in
about [-1, 1]) and returns its last feature map (N, h, w, C); the embedding
head (``pooling.POOLINGS``) turns that into the embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ffem_cli.models.tiny import build_tiny


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone.

    build: ``build(x) -> feature map``; default_pooling: the head it is
    published with; min_input_size: smallest accepted side in pixels;
    paper: where it comes from.
    """

    build: Callable
    default_pooling: str
    min_input_size: int
    paper: str


BACKBONES: dict[str, BackboneSpec] = {
    "tiny": BackboneSpec(build_tiny, "gap", 32, "— (4 conv blocks, for tests)"),
}
