"""Losses and miners as composable Keras layers, selectable by name.

``build_loss(name, num_classes, embedding_size, **options)`` returns a layer
called as ``loss(embeddings, labels)`` → scalar float32 mean loss
(docs/architecture.md, "Losses"). ``LOSSES`` and ``MINERS`` are the
registries ``ffem models`` prints: name → ``registry.Entry`` (class, paper,
family; the options' defaults are the class's own, ``overrides`` where a
seed or paper sets others).

Families (``Entry.family``):
- ``classification``: owns a (D, C) weight matrix; ``loss.logits(embeddings)``
  gives (B, C) logits without margin for accuracy. The margin heads
  (``CosineHead`` and its subclasses) also take ``sample_rate`` < 1: Partial FC
  (``partial_fc.py``), whose (C, D) ``centres`` replace the (D, C) ``kernel``.
- ``pair``: takes ``miner=`` (a ``MINERS`` name, a miner layer, or None) and
  ignores ``num_classes``; no ``logits``.
- ``proxy``: owns learnable class proxies; no miner; ``logits`` are the cosines to them.
"""

import math

import keras

from ffem_cli.errors import FfemError
from ffem_cli.losses.center import L2SoftmaxCenterLoss, SoftmaxCenterLoss
from ffem_cli.losses.contrastive import ContrastiveLoss
from ffem_cli.losses.groupface import GroupFace
from ffem_cli.losses.heads import CosineHead, L2SoftmaxHead, SoftmaxHead
from ffem_cli.losses.margins import ArcFace, CombinedMargin, CosFace, SubCenterArcFace
from ffem_cli.losses.miners import MINERS, build_miner
from ffem_cli.losses.multi_similarity import MultiSimilarityLoss
from ffem_cli.losses.proxies import ProxyAnchor, ProxyNCA, SoftTriple
from ffem_cli.losses.triplet import AdversarialTripletLoss, PoolTripletLoss, TripletLoss
from ffem_cli.registry import Entry, lookup

CLASSIFICATION, PAIR, PROXY = "classification", "pair", "proxy"

LOSSES = {
    "softmax": Entry(SoftmaxHead, "softmax cross-entropy", CLASSIFICATION),
    "l2-softmax": Entry(L2SoftmaxHead, "Ranjan et al., arXiv:1703.09507, 2017", CLASSIFICATION),
    "normface": Entry(CosineHead, "Wang et al., ACM MM 2017", CLASSIFICATION),
    "cosface": Entry(CosFace, "Wang et al., CVPR 2018", CLASSIFICATION),
    "amsoftmax": Entry(
        CosFace,
        "Wang et al., IEEE SPL 2018; m, s of the EE488B trainer seed",
        CLASSIFICATION,
        overrides={"scale": 30.0, "margin": 0.1},
    ),
    "arcface": Entry(ArcFace, "Deng et al., CVPR 2019", CLASSIFICATION),
    "angular-margin": Entry(
        ArcFace, "Deng et al., CVPR 2019; s = 60 of the FFEM seed", CLASSIFICATION, overrides={"scale": 60.0}
    ),
    "combined-margin": Entry(CombinedMargin, "Deng et al., CVPR 2019 §3 (covers SphereFace, CosFace)", CLASSIFICATION),
    "subcenter-arcface": Entry(SubCenterArcFace, "Deng et al., ECCV 2020", CLASSIFICATION),
    "softmax-center": Entry(
        L2SoftmaxCenterLoss, "Wen et al., ECCV 2016; L2-softmax + centres of the FFEM seed", CLASSIFICATION
    ),
    "softmax-center-wen": Entry(SoftmaxCenterLoss, "Wen et al., ECCV 2016 (centre update rule)", CLASSIFICATION),
    "groupface": Entry(GroupFace, "Kim et al., CVPR 2020; G, s of the FFEM seed", CLASSIFICATION),
    "triplet": Entry(TripletLoss, "Schroff et al., FaceNet, CVPR 2015", PAIR),
    "massface-triplet": Entry(
        TripletLoss,
        "Schroff et al. 2015; α and min-max mining of MassFace",
        PAIR,
        overrides={"margin": 0.25, "miner": "batch-min-max"},
    ),
    "pool-triplet": Entry(PoolTripletLoss, "MassFace semi-online mining: triplets against a feature pool", PAIR),
    "ee488b-triplet": Entry(
        TripletLoss,
        "Schroff et al. 2015; random negative, α of the EE488B trainer",
        PAIR,
        overrides={"margin": 0.1, "miner": "random-negative"},
    ),
    "adversarial-triplet": Entry(AdversarialTripletLoss, "the FFEM seed's adversarial_triplet_loss", PAIR),
    "contrastive": Entry(ContrastiveLoss, "Hadsell, Chopra & LeCun, CVPR 2006", PAIR),
    "multi-similarity": Entry(MultiSimilarityLoss, "Wang et al., CVPR 2019", PAIR),
    "proxy-nca": Entry(ProxyNCA, "Movshovitz-Attias et al., ICCV 2017", PROXY),
    "proxy-anchor": Entry(ProxyAnchor, "Kim et al., CVPR 2020", PROXY),
    "softtriple": Entry(SoftTriple, "Qian et al., ICCV 2019", PROXY),
}


def is_pair_loss(name: str) -> bool:
    """Whether the loss registered as ``name`` is of the ``pair`` family: it has no ``logits``
    (so no top-1 training accuracy) and needs P×K batches."""
    return lookup(LOSSES, name, "loss").family == PAIR


def build_loss(name: str, num_classes: int, embedding_size: int, /, **options) -> keras.layers.Layer:
    """The loss layer registered as ``name`` with ``options`` over its defaults.

    ``num_classes`` (C) and ``embedding_size`` (D) go to the families that own
    weights (classification, proxy); pair losses ignore them. Unknown names
    and options raise ``FfemError``.
    """
    entry = lookup(LOSSES, name, "loss")
    defaults = entry.defaults
    if issubclass(entry.build, CosineHead):
        defaults.setdefault("sample_rate", 1.0)  # Partial FC on every cosine head (losses/partial_fc.py)
    unknown = sorted(set(options) - set(defaults) - {"name"})
    if unknown:
        choices = ", ".join(sorted(defaults)) or "none"
        raise FfemError(f"loss '{name}' has no option '{unknown[0]}' (options: {choices})")
    for option, value in options.items():
        _check_option_type(name, option, value, defaults.get(option))
    kwargs = {**entry.defaults, **options}
    if entry.family == PAIR:
        return entry.build(**kwargs)
    if int(num_classes) < 1 or int(embedding_size) < 1:
        raise FfemError(
            f"loss '{name}' needs num_classes >= 1 and embedding_size >= 1, got {num_classes} and {embedding_size}"
        )
    return entry.build(num_classes=num_classes, embedding_size=embedding_size, **kwargs)


def _check_option_type(loss: str, option: str, value, default) -> None:
    """``value`` must have the type of the option's default (an int does for a float);
    ``FfemError`` naming the option otherwise."""
    if option == "name":
        return
    if option == "miner":
        serialized = isinstance(value, dict) and {"class_name", "config"} <= set(value)  # a get_config() round trip
        ok, kind = value is None or serialized or isinstance(value, (str, keras.layers.Layer)), "a miner name"
    elif option == "seed":
        ok, kind = value is None or type(value) is int, "an integer"
    elif isinstance(default, bool):
        ok, kind = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, kind = type(value) is int, "an integer"
    elif isinstance(default, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok, kind = number and math.isfinite(value), "a finite number"
    else:
        ok, kind = isinstance(value, str), "a name"
    if not ok:
        raise FfemError(f"loss '{loss}' option '{option}' must be {kind}, got {value!r}")


__all__ = ["LOSSES", "MINERS", "build_loss", "build_miner", "is_pair_loss"]
