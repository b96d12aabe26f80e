"""What ``ffem models`` lists: every backbone measured, every head, every loss.

``backbone_rows`` builds each registered backbone with its default head and
counts parameters and MACs (see ``flops`` for the conventions).
``registry_rows`` describes the entries of a loss or miner registry from what
they carry (``defaults``/``family``/``paper`` attributes or a
``(builder, paper)`` tuple) or, failing that, from the builder's signature
defaults and docstring.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ffem_cli.models.backbones import BACKBONES
from ffem_cli.models.embedder import build_embedder
from ffem_cli.models.flops import count_macs, count_parameters

# Builder arguments that are sizes of the problem, not options of the method.
PROBLEM_ARGUMENTS = {"self", "name", "num_classes", "embedding_size", "kwargs", "args"}


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


def first_doc_line(obj: object) -> str:
    """The first line of ``obj``'s docstring, or an empty string."""
    doc = inspect.getdoc(obj) or ""
    return doc.splitlines()[0] if doc else ""


def signature_defaults(builder: Callable) -> str:
    """``"m=0.5, s=64.0"``: the builder's keyword defaults that are method options."""
    try:
        parameters = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):
        return ""
    return ", ".join(
        f"{p.name}={p.default!r}"
        for p in parameters
        if p.default is not inspect.Parameter.empty and p.name not in PROBLEM_ARGUMENTS
    )


def entry_builder(entry: object) -> object:
    """The class or function an entry builds: ``(builder, text)``, ``.build``, ``.cls``."""
    if isinstance(entry, tuple):
        return entry[0]
    return getattr(entry, "build", None) or getattr(entry, "cls", None) or entry


def entry_paper(entry: object) -> str:
    """An entry's paper: ``(builder, paper)``, ``.paper``, ``.summary`` or the docstring."""
    if isinstance(entry, tuple) and len(entry) > 1 and isinstance(entry[1], str):
        return entry[1]
    text = getattr(entry, "paper", None) or getattr(entry, "summary", None)
    return text or first_doc_line(entry_builder(entry))


def registry_rows(registry: dict) -> Iterator[tuple[str, str, str, str]]:
    """(name, family, defaults, paper) for each entry of a loss or miner registry.

    Entries may be objects with ``defaults`` (dict), ``family`` and ``paper``
    attributes, ``(builder, paper)`` tuples, or bare builders (then the
    signature's keyword defaults and the docstring's first line are used).
    """
    for name, entry in registry.items():
        defaults = getattr(entry, "defaults", None)
        if isinstance(defaults, dict):
            defaults = ", ".join(f"{key}={value!r}" for key, value in defaults.items())
        if defaults is None:
            defaults = signature_defaults(entry_builder(entry))
        yield name, getattr(entry, "family", ""), defaults, entry_paper(entry)
