"""Decision thresholds from scores: at a false-accept rate, with a 95% interval, and at the EER.

Convention (as ``evaluate.metrics``): a score is a cosine similarity and a
pair is accepted ("same person") when ``score >= threshold``.

Threshold at FAR ``f`` from ``n`` impostor scores ``s_(1) >= ... >= s_(n)``:
at most ``k = floor(f n)`` impostors may be accepted, so the threshold is the
smallest float64 above ``s_(k+1)``, the lowest threshold whose false-accept
rate on these scores is ``<= f``.

95% interval: distribution-free, from order statistics. The number of
impostor scores above the population's true FAR-``f`` threshold is
Binomial(n, f); with ``a = 0.025`` the interval is ``[s_(j_lo), s_(j_hi)]``
where ``j_hi = 1 + max{c : P(B <= c) <= a}`` and
``j_lo = min{j : P(B >= j) <= a}``, which covers the true threshold with
probability >= 95%. A FAR is *supported* only when this interval is bounded
above, i.e. ``P(B = 0) = (1 - f)^n <= a``: about ``3.7 / f`` impostor scores
(3,689 for 1e-3, 3.7 million for 1e-6).
"""

from __future__ import annotations

import math

import numpy as np

FAR_TARGETS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
CONFIDENCE = 0.95


def _tail() -> float:
    return (1.0 - CONFIDENCE) / 2


def supported(impostors: int, far: float) -> bool:
    """True when ``impostors`` scores bound the 95% interval of the FAR-``far`` threshold."""
    return impostors > 0 and impostors * math.log1p(-far) <= math.log(_tail())


def needed_impostors(far: float) -> int:
    """The fewest impostor scores for which ``supported(n, far)`` holds."""
    return math.ceil(math.log(_tail()) / math.log1p(-far))


def threshold_at_far(impostor_scores, far: float) -> float:
    """The lowest threshold whose false-accept rate on ``impostor_scores`` is ``<= far`` (see module docstring)."""
    ranked = np.sort(np.asarray(impostor_scores, dtype=np.float64).ravel())[::-1]
    if ranked.size == 0:
        raise ValueError("no impostor scores")
    allowed = int(math.floor(far * ranked.size + 1e-9))
    if allowed >= ranked.size:
        return -math.inf
    return float(np.nextafter(ranked[allowed], math.inf))


def threshold_interval(impostor_scores, far: float) -> tuple[float, float]:
    """The 95% interval ``(low, high)`` of the FAR-``far`` threshold (``high`` is +inf when unsupported)."""
    from scipy.stats import binom

    ranked = np.sort(np.asarray(impostor_scores, dtype=np.float64).ravel())[::-1]
    n = ranked.size
    counts = np.arange(n + 1)
    cdf = binom.cdf(counts, n, far)  # P(B <= c)
    below = np.flatnonzero(cdf <= _tail())
    high = ranked[below[-1]] if below.size else math.inf  # s_(j_hi), j_hi = 1 + max c (1-based)
    survival = binom.sf(counts - 1, n, far)  # P(B >= j)
    rank_low = int(np.flatnonzero(survival <= _tail())[0]) if (survival <= _tail()).any() else n + 1
    low = ranked[rank_low - 1] if 1 <= rank_low <= n else -math.inf
    return float(low), float(high)


def calibrate_scores(genuine, impostor, far_targets=FAR_TARGETS) -> dict:
    """Thresholds at each supported FAR (with interval, observed FAR and TAR) and the EER threshold.

    ``genuine``/``impostor``: scores of same-person and different-person
    pairs. Returns ``{"thresholds": [...], "omitted": {far: reason}, "eer": {...},
    "genuine_pairs", "impostor_pairs"}``.
    """
    from ffem_cli.evaluate.metrics import equal_error_rate

    genuine = np.asarray(genuine, dtype=np.float64).ravel()
    impostor = np.asarray(impostor, dtype=np.float64).ravel()
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("calibration needs both same-person and different-person pairs")
    thresholds, omitted = [], {}
    for far in far_targets:
        if not supported(impostor.size, far):
            omitted[f"{far:g}"] = (
                f"needs >= {needed_impostors(far):,} impostor pairs for a bounded 95% interval, have {impostor.size:,}"
            )
            continue
        threshold = threshold_at_far(impostor, far)
        low, high = threshold_interval(impostor, far)
        accepted = int((impostor >= threshold).sum())
        thresholds.append({
            "far": far,
            "threshold": threshold,
            "interval_95": [low, high],
            "observed_far": accepted / impostor.size,
            "false_accepts": accepted,
            "tar": float((genuine >= threshold).mean()),
        })  # fmt: skip
    scores = np.concatenate([genuine, impostor])
    labels = np.r_[np.ones(genuine.size, bool), np.zeros(impostor.size, bool)]
    eer, eer_threshold = equal_error_rate(scores, labels)
    return {
        "genuine_pairs": int(genuine.size),
        "impostor_pairs": int(impostor.size),
        "thresholds": thresholds,
        "omitted": omitted,
        "eer": {"rate": eer, "threshold": eer_threshold},
    }
