"""The output-parity check: does an exported model embed faces like the Keras model?

For each face, the cosine similarity between the exported model's embedding
and the Keras embedder's (both re-normalised, so a quantized model whose
output norm drifts slightly is judged on direction only). An unquantized
export must reach ``UNQUANTIZED_MIN_COSINE`` on every face; a quantized one
only reports its figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

UNQUANTIZED_MIN_COSINE = 0.9999


@dataclass(frozen=True)
class Parity:
    """Cosine agreement over ``faces`` faces (NaN when an output was not finite)."""

    min_cosine: float
    mean_cosine: float
    faces: int

    def passes(self, threshold: float) -> bool:
        """True when every face reached ``threshold`` (a NaN never passes)."""
        return not math.isnan(self.min_cosine) and self.min_cosine >= threshold

    def to_json(self) -> dict:
        return {
            "min_cosine": None if math.isnan(self.min_cosine) else round(self.min_cosine, 7),
            "mean_cosine": None if math.isnan(self.mean_cosine) else round(self.mean_cosine, 7),
            "mean_drop": None if math.isnan(self.mean_cosine) else round(1.0 - self.mean_cosine, 7),
            "faces": self.faces,
        }


def cosine_parity(reference: np.ndarray, exported: np.ndarray) -> Parity:
    """Compare two ``(N, D)`` embedding arrays row by row."""
    reference = np.asarray(reference, dtype=np.float64)
    exported = np.asarray(exported, dtype=np.float64)
    if reference.shape != exported.shape:
        raise ValueError(f"embedding shapes differ: {reference.shape} vs {exported.shape}")
    with np.errstate(invalid="ignore", divide="ignore"):
        cosines = (reference * exported).sum(axis=1) / (
            np.linalg.norm(reference, axis=1) * np.linalg.norm(exported, axis=1)
        )
    if not np.all(np.isfinite(cosines)):
        return Parity(math.nan, math.nan, len(cosines))
    return Parity(float(cosines.min()), float(cosines.mean()), len(cosines))
