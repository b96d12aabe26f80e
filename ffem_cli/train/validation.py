"""Per-epoch verification accuracy on a pair list whose images are in a pack.

Pair list formats (one pair per line):

- EE488B: ``1,id1/a.jpg,id1/b.jpg`` (1 = same person, 0 = different);
- LFW (``pairs.txt``, ``pairsDevTrain.txt``, ``pairsDevTest.txt``): a header
  line of integers, then ``name<TAB>n1<TAB>n2`` (same) or
  ``name1<TAB>n1<TAB>name2<TAB>n2`` (different); image ``n`` of ``name`` is
  ``name/name_<nnnn>.jpg``.

Paths are image-list keys, i.e. the ``image/path`` of the pack's examples.
Accuracy is 10-fold: the threshold is chosen on nine folds and applied to
the tenth (``evaluate.metrics.kfold_accuracy``); LFW View 2 uses its own
folds (header ``10 300``), other lists pair ``i`` goes to fold ``i mod 10``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffem_cli.errors import FfemError
from ffem_cli.evaluate.metrics import kfold_accuracy

FOLDS = 10


@dataclass(frozen=True)
class PairList:
    """``first``/``second``: image keys; ``same``: bool (N,); ``folds``: int (N,)."""

    first: list[str]
    second: list[str]
    same: np.ndarray
    folds: np.ndarray


def read_pairs(path: str | Path) -> PairList:
    """Parse an EE488B or LFW pair list; ``FfemError`` naming the line when malformed."""
    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such pair list")
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line]
    fold_size = 0
    if numbered and all(part.isdigit() for part in numbered[0][1].split()):
        header = [int(p) for p in numbered[0][1].split()]
        if len(header) == 2:
            fold_size = 2 * header[1]
        numbered = numbered[1:]
    first, second, same = [], [], []
    for number, line in numbered:
        pair = _parse_line(line)
        if pair is None:
            raise FfemError(f"{path}:{number}: not a pair ('1,a.jpg,b.jpg' or LFW 'name n1 n2' / 'a n1 b n2'): {line!r}")
        first.append(pair[0])
        second.append(pair[1])
        same.append(pair[2])
    if not same or all(same) or not any(same):
        raise FfemError(f"{path}: needs both same-person and different-person pairs")
    index = np.arange(len(same))
    folds = index // fold_size if fold_size else index % FOLDS
    return PairList(first, second, np.asarray(same, dtype=bool), folds)


def _parse_line(line: str) -> tuple[str, str, bool] | None:
    if "," in line:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0] in ("0", "1"):
            return parts[1], parts[2], parts[0] == "1"
        return None
    parts = line.split()
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return _lfw(parts[0], parts[1]), _lfw(parts[0], parts[2]), True
    if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
        return _lfw(parts[0], parts[1]), _lfw(parts[2], parts[3]), False
    return None


def _lfw(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def embed_pack(embedder, pack_dir: str | Path, batch_size: int = 128) -> dict[str, np.ndarray]:
    """``{image key: embedding (D,)}`` for every example of a pack (eval pipeline, no augmentation)."""
    from ffem_cli.data.pipeline import eval_dataset

    found = {}
    for images, _, paths in eval_dataset(pack_dir, batch_size):
        vectors = np.asarray(embedder(images, training=False), dtype=np.float32)
        for key, vector in zip(paths.numpy(), vectors, strict=True):
            found[key.decode("utf-8")] = vector
    return found


def verification_accuracy(embeddings: dict[str, np.ndarray], pairs: PairList, source: str) -> tuple[float, float]:
    """(mean, std) 10-fold accuracy of cosine scores; ``FfemError`` when a pair image is not in the pack."""
    missing = [k for k in pairs.first + pairs.second if k not in embeddings]
    if missing:
        raise FfemError(f"{source}: {len(set(missing))} pair image(s) are not in the validation pack, e.g. {missing[0]!r}")
    a = np.stack([embeddings[k] for k in pairs.first])
    b = np.stack([embeddings[k] for k in pairs.second])
    scores = np.sum(a * b, axis=1)
    result = kfold_accuracy(scores, pairs.same, pairs.folds)
    return result.mean, result.std
