"""The one entry type of ffem's registries: ``BACKBONES``, ``POOLINGS``, ``LOSSES``, ``MINERS``.

Each registry is a dict name → :class:`Entry`. An entry holds the builder
(a class or a function), where the method comes from, and what ``ffem
models`` prints; its option defaults are read from the builder's signature,
so they are written once, in the code that uses them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ffem_cli.errors import FfemError

#: Builder arguments that are not options of the method: the problem's sizes, the layer's
#: ``name``, ``*args``/``**kwargs``, and Partial FC's ``sample_rate`` (``--sample-rate``, a
#: training setting that ``build_loss`` adds to every margin head).
NOT_OPTIONS = frozenset({"self", "name", "num_classes", "embedding_size", "sample_rate", "args", "kwargs"})


@dataclass(frozen=True)
class Entry:
    """One registered building block.

    build: the class or function that makes it. paper: where it comes from.
    family: what kind of block it is where the registry has kinds (losses:
    ``classification`` — owns a class-weight matrix and gives ``logits``;
    ``pair`` — compares the batch's own embeddings, takes a miner; ``proxy``
    — learnable class proxies, gives ``logits``). summary: one line on what
    it does (the poolings' layer sequence). overrides: option values that
    differ from the builder's defaults (a seed's or a paper's settings for a
    shared class). default_pooling, min_input_size: backbones only — the
    embedding head it is published with and the smallest input side in pixels.
    """

    build: Callable
    paper: str
    family: str = ""
    summary: str = ""
    overrides: Mapping[str, Any] = field(default_factory=dict)
    default_pooling: str = ""
    min_input_size: int = 1

    @property
    def defaults(self) -> dict[str, Any]:
        """The options and their defaults: the builder's keyword defaults (a class: its
        ``__init__``'s) that are not in :data:`NOT_OPTIONS`, then ``overrides`` (which may add keys)."""
        try:
            parameters = inspect.signature(self.build).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature
            parameters = ()
        found = {
            p.name: p.default
            for p in parameters
            if p.default is not inspect.Parameter.empty and p.name not in NOT_OPTIONS
        }
        return {**found, **self.overrides}

    def describe_defaults(self) -> str:
        """``"scale=64.0, margin=0.5"``: :attr:`defaults` as ``ffem models`` prints them."""
        return ", ".join(f"{key}={value!r}" for key, value in self.defaults.items())


def lookup(registry: Mapping[str, Entry], name: str, kind: str) -> Entry:
    """``registry[name]``; ``FfemError("unknown KIND 'NAME'; choose one of: …")`` otherwise."""
    if name not in registry:
        raise FfemError(f"unknown {kind} {name!r}; choose one of: {', '.join(registry)}")
    return registry[name]
