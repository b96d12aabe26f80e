"""Margin losses on normalised weights: CosFace, ArcFace, combined margin, sub-center ArcFace.

Each class is a :class:`~ffem_cli.losses.heads.CosineHead` that only
overrides ``margin(cos θ_y)``, the target logit before the scale ``s``:

=================  ==========================================  =====================
loss               target logit                                paper
=================  ==========================================  =====================
CosFace/AM-softm.  ``cos θ − m``                               Wang et al. CVPR 2018
ArcFace            ``cos(θ + m)``                              Deng et al. CVPR 2019
combined margin    ``cos(m1·θ + m2) − m3``                     insightface, ArcFace §3
sub-center ArcFace ArcFace on ``max_k cos θ_{j,k}``            Deng et al. ECCV 2020
=================  ==========================================  =====================

``θ = arccos(clip(cos θ, −1 + ε, 1 − ε))`` so gradients stay finite at
``cos θ = ±1``. The margin trigonometry runs on (B, 1) values only.
``margin(cos θ_y, fraction)`` scales every margin by ``fraction`` (margin
warm-up: ``m → f·m``; the multiplicative m1 goes ``1 → 1 + f·(m1 − 1)``).
"""

import math

import keras
from keras import ops

from ffem_cli.losses.heads import CosineHead
from ffem_cli.losses.numerics import COS_EPSILON


def angle(cos_theta):
    """θ = arccos(cos θ) in radians, clipped away from ±1 for a finite gradient."""
    return ops.arccos(ops.clip(cos_theta, -1.0 + COS_EPSILON, 1.0 - COS_EPSILON))


@keras.saving.register_keras_serializable(package="ffem")
class CosFace(CosineHead):
    """Additive cosine margin, CosFace (Wang et al., CVPR 2018) = AM-softmax (Wang et al., 2018).

    ``L = -log( e^{s(cos θ_y − m)} / (e^{s(cos θ_y − m)} + Σ_{j≠y} e^{s cos θ_j}) )``.
    Defaults s = 64, m = 0.35 (CosFace paper); the ``amsoftmax`` registry
    entry uses the EE488B trainer's s = 30, m = 0.1.
    """

    def __init__(self, num_classes, embedding_size, scale=64.0, margin=0.35, **kwargs):
        super().__init__(num_classes, embedding_size, scale=scale, **kwargs)
        self.margin_value = float(margin)

    warmable_margin = True

    def margin(self, cos_target, fraction=1.0):
        return cos_target - fraction * self.margin_value

    def get_config(self):
        return {**super().get_config(), "margin": self.margin_value}


@keras.saving.register_keras_serializable(package="ffem")
class ArcFace(CosineHead):
    """Additive angular margin, ArcFace (Deng et al., CVPR 2019).

    Target logit ``cos(θ_y + m)``. Where ``θ_y + m > π`` the curve would
    turn upward again, so (as in insightface) it continues as the
    monotone ``cos θ_y − m·sin m``. With ``easy_margin`` the margin only
    applies where ``cos θ_y > 0`` (``cos θ_y`` elsewhere).
    Defaults m = 0.5 rad, s = 64 (paper); the FFEM seed uses s = 60
    (registry entry ``angular-margin``).
    """

    def __init__(self, num_classes, embedding_size, scale=64.0, margin=0.5, easy_margin=False, **kwargs):
        super().__init__(num_classes, embedding_size, scale=scale, **kwargs)
        self.margin_value = float(margin)
        self.easy_margin = bool(easy_margin)

    warmable_margin = True

    def margin(self, cos_target, fraction=1.0):
        m = ops.multiply(ops.convert_to_tensor(fraction, "float32"), self.margin_value)
        theta = angle(cos_target)
        with_margin = ops.cos(theta + m)
        if self.easy_margin:
            return ops.where(cos_target > 0.0, with_margin, cos_target)
        return ops.where(theta + m <= math.pi, with_margin, cos_target - m * ops.sin(m))

    def get_config(self):
        return {**super().get_config(), "margin": self.margin_value, "easy_margin": self.easy_margin}


@keras.saving.register_keras_serializable(package="ffem")
class CombinedMargin(CosineHead):
    """Combined margin ``cos(m1·θ + m2) − m3`` (ArcFace paper §3, insightface).

    m1 is SphereFace's multiplicative angular margin (Liu et al., CVPR 2017),
    m2 ArcFace's additive angular margin, m3 CosFace's additive cosine
    margin. Beyond ``m1·θ + m2 > π`` the target logit continues as
    SphereFace's monotone ``ψ = (−1)^k cos(m1·θ + m2) − 2k − m3`` with
    ``k = floor((m1·θ + m2)/π)``, so it decreases in θ for any margins
    (SphereFace here runs on normalised features with scale s, not on
    ``||x||``). Defaults m1 = 1, m2 = 0.3, m3 = 0.2, s = 64 (the insightface
    combined-margin example).
    """

    def __init__(self, num_classes, embedding_size, scale=64.0, m1=1.0, m2=0.3, m3=0.2, **kwargs):
        super().__init__(num_classes, embedding_size, scale=scale, **kwargs)
        self.m1, self.m2, self.m3 = float(m1), float(m2), float(m3)

    warmable_margin = True

    def margin(self, cos_target, fraction=1.0):
        m1 = 1.0 + fraction * (self.m1 - 1.0)
        t = m1 * angle(cos_target) + fraction * self.m2
        k = ops.floor(t / math.pi)
        sign = 1.0 - 2.0 * ops.mod(k, 2.0)
        return sign * ops.cos(t) - 2.0 * k - fraction * self.m3

    def get_config(self):
        return {**super().get_config(), "m1": self.m1, "m2": self.m2, "m3": self.m3}


@keras.saving.register_keras_serializable(package="ffem")
class SubCenterArcFace(ArcFace):
    """Sub-center ArcFace (Deng et al., ECCV 2020): K sub-centres per class.

    ``W`` is (D, C·K); ``cos θ_j = max_k cos(x, W_{j,k})`` and ArcFace applies
    to that. Noisy samples gather at non-dominant sub-centres instead of
    pulling the class centre. Default K = 3 (paper), m = 0.5, s = 64.
    The (B, C, K) cosines are materialised once before the max.
    """

    def __init__(self, num_classes, embedding_size, scale=64.0, margin=0.5, sub_centers=3, **kwargs):
        self.sub_centers = int(sub_centers)
        super().__init__(num_classes, embedding_size, scale=scale, margin=margin, **kwargs)

    @property
    def kernel_columns(self):
        """Columns of ``W``: K sub-centres per class, class-major."""
        return self.num_classes * self.sub_centers

    def class_cosines(self, cosines):
        """(B, n·K) → (B, n) float32: the cosine to each class's nearest sub-centre."""
        classes = cosines.shape[1] // self.sub_centers
        return ops.max(ops.reshape(cosines, (-1, classes, self.sub_centers)), axis=2)

    def get_config(self):
        return {**super().get_config(), "sub_centers": self.sub_centers}
