"""Verification accuracy of an export on a pair list (``--val-pairs``).

The list is the ``ffem eval pairs`` format (``label,path1,path2``; 1 = same
person), images taken as face crops and prepared exactly as ``ffem eval
pairs`` does (``inference.embedding.prepare_face``). The threshold is the one
that maximises the Keras model's accuracy on the list; an export is scored
with that same threshold, so the figure says whether the exported (maybe
quantized) model still makes the Keras model's decisions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffem_cli.console import progress_bar
from ffem_cli.evaluate import metrics
from ffem_cli.evaluate.pairfiles import check_images_exist, read_label_pairs
from ffem_cli.inference.embedding import FacePrep, FaceSource, prepare_face
from ffem_cli.inference.search import pair_scores


@dataclass(frozen=True)
class ValPairs:
    """The prepared faces of a pair list (uint8 ``(M, S, S, 3)``, each image once) and its pairs."""

    source: str
    faces: np.ndarray
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray

    def scores(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine similarity per pair from the ``(M, D)`` embeddings of ``faces``."""
        return pair_scores(np.asarray(embeddings, dtype=np.float32), self.first, self.second)


@dataclass(frozen=True)
class KerasDecision:
    """The Keras model's accuracy-maximising threshold on the list and its accuracy there."""

    threshold: float
    accuracy: float

    def accuracy_of(self, pairs: ValPairs, embeddings: np.ndarray) -> float:
        """Accuracy of ``score >= threshold`` for another model's embeddings."""
        return float(np.mean((pairs.scores(embeddings) >= self.threshold) == pairs.same))


def load_val_pairs(list_path: Path, root: Path | None, prep: FacePrep) -> ValPairs:
    """Read the list, check its images exist under ``root`` (default: the list's folder), prepare the faces."""
    pairs = read_label_pairs(Path(list_path))
    root = Path(root) if root is not None else Path(list_path).parent
    check_images_exist(pairs, root)
    names = list(dict.fromkeys([*pairs.first, *pairs.second]))
    position = {name: i for i, name in enumerate(names)}
    faces = np.empty((len(names), prep.image_size, prep.image_size, 3), dtype=np.uint8)
    with progress_bar(transient=True) as bar:
        task = bar.add_task("prepare pair faces", total=len(names), unit="img")
        for i, name in enumerate(names):
            faces[i] = prepare_face(FaceSource((root / name).resolve()), prep)
            bar.advance(task)
    first = np.array([position[n] for n in pairs.first], dtype=np.int64)
    second = np.array([position[n] for n in pairs.second], dtype=np.int64)
    described = f"{list_path}: {len(pairs)} pairs ({int(pairs.same.sum())} same-person)"
    return ValPairs(described, faces, first, second, pairs.same.astype(bool))


def keras_decision(pairs: ValPairs, keras_embeddings: np.ndarray) -> KerasDecision:
    """The threshold the Keras model would use on this list."""
    threshold, accuracy = metrics.best_threshold(pairs.scores(keras_embeddings), pairs.same)
    return KerasDecision(threshold, accuracy)
