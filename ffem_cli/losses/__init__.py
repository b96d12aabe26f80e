"""Losses and miners as composable Keras layers, selectable by name.

``build_loss(name, num_classes, embedding_size, **options)`` returns a layer
called as ``loss(embeddings, labels)`` → scalar float32 mean loss
(docs/architecture.md, "Losses"). ``LOSSES`` and ``MINERS`` are the
registries ``ffem models`` prints: name → class, default options, family and
paper.

Families:
- ``classification``: owns a (D, C) weight matrix; ``loss.logits(embeddings)``
  gives (B, C) logits without margin for accuracy. The margin heads
  (``CosineHead`` and its subclasses) also take ``sample_rate`` < 1: Partial FC
  (``partial_fc.py``), whose (C, D) ``centres`` replace the (D, C) ``kernel``.
- ``pair``: takes ``miner=`` (a ``MINERS`` name, a miner layer, or None) and
  ignores ``num_classes``.
- ``proxy``: owns learnable class proxies; no miner.
"""

import math
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class LossEntry:
    """One registry row: the layer class, its default options, family and source paper."""

    cls: type
    family: str
    paper: str
    defaults: dict = field(default_factory=dict)


LOSSES = {
    "softmax": LossEntry(SoftmaxHead, "classification", "softmax cross-entropy"),
    "l2-softmax": LossEntry(L2SoftmaxHead, "classification",
                            "Ranjan et al., arXiv:1703.09507, 2017", {"alpha": 30.0}),
    "normface": LossEntry(CosineHead, "classification", "Wang et al., ACM MM 2017",
                          {"scale": 20.0}),
    "cosface": LossEntry(CosFace, "classification", "Wang et al., CVPR 2018",
                         {"scale": 64.0, "margin": 0.35}),
    "amsoftmax": LossEntry(CosFace, "classification",
                           "Wang et al., IEEE SPL 2018; m, s of the EE488B trainer seed",
                           {"scale": 30.0, "margin": 0.1}),
    "arcface": LossEntry(ArcFace, "classification", "Deng et al., CVPR 2019",
                         {"scale": 64.0, "margin": 0.5, "easy_margin": False}),
    "angular-margin": LossEntry(ArcFace, "classification",
                                "Deng et al., CVPR 2019; s = 60 of the FFEM seed",
                                {"scale": 60.0, "margin": 0.5, "easy_margin": False}),
    "combined-margin": LossEntry(CombinedMargin, "classification",
                                 "Deng et al., CVPR 2019 §3 (covers SphereFace, CosFace)",
                                 {"scale": 64.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}),
    "subcenter-arcface": LossEntry(SubCenterArcFace, "classification", "Deng et al., ECCV 2020",
                                   {"scale": 64.0, "margin": 0.5, "sub_centers": 3}),
    "softmax-center": LossEntry(L2SoftmaxCenterLoss, "classification",
                                "Wen et al., ECCV 2016; L2-softmax + centres of the FFEM seed",
                                {"scale": 30.0, "center_weight": 1e-3}),
    "softmax-center-wen": LossEntry(SoftmaxCenterLoss, "classification",
                                    "Wen et al., ECCV 2016 (centre update rule)",
                                    {"center_weight": 0.003, "center_rate": 0.5}),
    "groupface": LossEntry(GroupFace, "classification",
                           "Kim et al., CVPR 2020; G, s of the FFEM seed",
                           {"groups": 4, "group_weight": 0.1, "scale": 60.0, "margin": 0.5,
                            "gdn_units": 256}),
    "triplet": LossEntry(TripletLoss, "pair", "Schroff et al., FaceNet, CVPR 2015",
                         {"margin": 0.2, "distance": "squared-euclidean",
                          "miner": "batch-hard", "max_triplets": 0}),
    "massface-triplet": LossEntry(TripletLoss, "pair",
                                  "Schroff et al. 2015; α and min-max mining of MassFace",
                                  {"margin": 0.25, "distance": "squared-euclidean",
                                   "miner": "batch-min-max", "max_triplets": 0}),
    "pool-triplet": LossEntry(PoolTripletLoss, "pair",
                              "MassFace semi-online mining: triplets against a feature pool",
                              {"margin": 0.25, "distance": "squared-euclidean",
                               "miner": "batch-min-max", "max_triplets": 0, "pool_size": 1024,
                               "refresh_every": 1}),
    "ee488b-triplet": LossEntry(TripletLoss, "pair",
                                "Schroff et al. 2015; random negative, α of the EE488B trainer",
                                {"margin": 0.1, "distance": "squared-euclidean",
                                 "miner": "random-negative"}),
    "adversarial-triplet": LossEntry(AdversarialTripletLoss, "pair",
                                     "the FFEM seed's adversarial_triplet_loss",
                                     {"distance": "squared-euclidean", "miner": "batch-hard",
                                      "epsilon": 1e-3}),
    "contrastive": LossEntry(ContrastiveLoss, "pair", "Hadsell, Chopra & LeCun, CVPR 2006",
                             {"pos_margin": 0.0, "neg_margin": 1.0, "distance": "euclidean",
                              "miner": None}),
    "multi-similarity": LossEntry(MultiSimilarityLoss, "pair", "Wang et al., CVPR 2019",
                                  {"alpha": 2.0, "beta": 50.0, "base": 1.0,
                                   "miner": "multi-similarity"}),
    "proxy-nca": LossEntry(ProxyNCA, "proxy", "Movshovitz-Attias et al., ICCV 2017",
                           {"scale": 3.0}),
    "proxy-anchor": LossEntry(ProxyAnchor, "proxy", "Kim et al., CVPR 2020",
                              {"alpha": 32.0, "delta": 0.1}),
    "softtriple": LossEntry(SoftTriple, "proxy", "Qian et al., ICCV 2019",
                            {"la": 20.0, "gamma": 0.1, "tau": 0.2, "margin": 0.01,
                             "centers_per_class": 10}),
}


def build_loss(name: str, num_classes: int, embedding_size: int, **options) -> keras.layers.Layer:
    """The loss layer registered as ``name`` with ``options`` over its defaults.

    ``num_classes`` (C) and ``embedding_size`` (D) go to the families that own
    weights (classification, proxy); pair losses ignore them. Unknown names
    and options raise ``FfemError``.
    """
    if name not in LOSSES:
        raise FfemError(f"unknown loss '{name}'; choose one of: {', '.join(LOSSES)}")
    entry = LOSSES[name]
    defaults = dict(entry.defaults)
    if issubclass(entry.cls, CosineHead):
        defaults.setdefault("sample_rate", 1.0)  # Partial FC on every cosine head (losses/partial_fc.py)
    unknown = sorted(set(options) - set(defaults) - {"name"})
    if unknown:
        choices = ", ".join(sorted(defaults)) or "none"
        raise FfemError(f"loss '{name}' has no option '{unknown[0]}' (options: {choices})")
    for option, value in options.items():
        _check_option_type(name, option, value, defaults.get(option))
    kwargs = {**entry.defaults, **options}
    if entry.family == "pair":
        return entry.cls(**kwargs)
    if int(num_classes) < 1 or int(embedding_size) < 1:
        raise FfemError(f"loss '{name}' needs num_classes >= 1 and embedding_size >= 1, "
                        f"got {num_classes} and {embedding_size}")
    return entry.cls(num_classes=num_classes, embedding_size=embedding_size, **kwargs)


def _check_option_type(loss: str, option: str, value, default) -> None:
    """``value`` must have the type of the option's default (an int does for a float);
    ``FfemError`` naming the option otherwise."""
    if option == "name":
        return
    if option == "miner":
        serialized = isinstance(value, dict) and {"class_name", "config"} <= set(value)  # a get_config() round trip
        ok, kind = value is None or serialized or isinstance(value, (str, keras.layers.Layer)), "a miner name"
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


__all__ = ["LOSSES", "MINERS", "LossEntry", "build_loss", "build_miner"]
