"""Validation sets checked during training (``--val SPEC``, repeatable).

A spec is ``[NAME=]PATH[@SOURCE]``:

- ``PATH`` a pair list (LFW ``pairs.txt``/``pairsDev*.txt``, or EE488B
  ``label,path1,path2``) and ``SOURCE`` the pack holding its images (keys =
  the pack's image paths) or a folder they are relative to (each image taken
  as a face crop and resized, as ``ffem eval pairs`` does); no ``SOURCE``: the
  training pack. Figures ``NAME/accuracy`` (10-fold, ``kfold_accuracy`` over
  the list's own folds, or ``metrics.stratified_folds`` for a one-fold list),
  ``NAME/accuracy_std`` and ``NAME/eer``;
- ``PATH`` an insightface ``.bin`` (``evaluate.binset``): ``NAME/accuracy``,
  ``NAME/accuracy_std`` (insightface's 10-fold way, no flip) and ``NAME/eer``;
- ``PATH`` a labelled pack or ``<identity>/<image>`` folder: leave-one-out
  retrieval (``evaluate.retrieval``), ``NAME/recall@1`` and ``NAME/map@r``.

``NAME`` defaults to the file or folder name without extension. The legacy
``--val-pairs LIST [--val-pack PACK]`` is the spec ``val=LIST@PACK``.
``Watch`` keeps the best value of the monitored figure, the plateau and
early-stopping counters (``--schedule plateau``, ``--early-stop``) in a dict
that every checkpoint carries, so a resumed run decides exactly as an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ffem_cli.data.packdir import PackDir
from ffem_cli.errors import FfemError
from ffem_cli.evaluate import metrics
from ffem_cli.evaluate.pairfiles import PairList, read_pair_list

FOLDS = 10
EVERY = re.compile(r"^\s*(\d+)\s*(e?)\s*$")


def parse_every(text: str) -> tuple[int, str]:
    """``"500"`` → ``(500, "step")``, ``"2e"`` → ``(2, "epoch")``; ``FfemError`` otherwise."""
    found = EVERY.match(str(text))
    if not found or int(found.group(1)) < 1:
        raise FfemError(f"val-every {text!r}: expected a number of steps (e.g. 500) or epochs (e.g. 1e)")
    return int(found.group(1)), "epoch" if found.group(2) else "step"


def read_pairs(path: str | Path) -> PairList:
    """An EE488B or LFW pair list (``evaluate.pairfiles``), with 10 folds when the file has none."""
    path = Path(path)
    pairs = read_pair_list(path)
    if pairs.same.all() or not pairs.same.any():
        raise FfemError(f"{path}: needs both same-person and different-person pairs")
    if np.unique(pairs.folds).size < 2:
        try:
            pairs = dataclasses.replace(pairs, folds=metrics.stratified_folds(pairs.same, FOLDS))
        except ValueError as exc:
            raise FfemError(f"{path}: {exc}") from None
    return pairs


def embed_pack(embedder, pack_dir: str | Path, batch_size: int = 128) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(image keys, labels (N,), embeddings (N, D))`` of every example of a pack, unaugmented, by the
    Keras ``embedder`` being trained (``inference.labelled.pack_vectors``)."""
    from ffem_cli.inference.labelled import pack_vectors

    return pack_vectors(lambda images: embedder(images, training=False), Path(pack_dir), batch_size)


def embed_files(embedder, paths: list[Path], batch_size: int = 64) -> np.ndarray:
    """``(N, D)`` embeddings of image files taken as face crops, resized to the model's input."""
    from ffem_cli.inference.embedding import FacePrep, FaceSource, prepare_face

    prep = FacePrep(image_size=int(embedder.input_shape[1]))
    vectors = []
    for start in range(0, len(paths), batch_size):
        faces = np.stack([prepare_face(FaceSource(p), prep) for p in paths[start : start + batch_size]])
        vectors.append(np.asarray(embedder(faces.astype(np.float32), training=False), dtype=np.float32))
    return np.concatenate(vectors)


@dataclass
class ValSet:
    """One ``--val`` set; ``evaluate(embedder)`` returns its figures ``{"NAME/figure": value}``."""

    name: str
    kind: str  # "pairs" | "bin" | "retrieval"
    path: Path
    source: Path | None = None
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def primary(self) -> str:
        return f"{self.name}/{'recall@1' if self.kind == 'retrieval' else 'accuracy'}"

    def figure_names(self) -> list[str]:
        names = ["recall@1", "map@r"] if self.kind == "retrieval" else ["accuracy", "accuracy_std", "eer"]
        return [f"{self.name}/{n}" for n in names]

    def evaluate(self, embedder) -> dict[str, float]:
        figures = {"pairs": self._pairs, "bin": self._bin, "retrieval": self._retrieval}[self.kind](embedder)
        return {f"{self.name}/{k}": float(v) for k, v in figures.items()}

    def _pairs(self, embedder) -> dict:
        if "pairs" not in self._cache:
            self._cache["pairs"] = read_pairs(self.path)
        pairs = self._cache["pairs"]
        names = list(dict.fromkeys(pairs.first + pairs.second))
        if _is_pack(self.source):
            keys, _, vectors = embed_pack(embedder, self.source)
            found = dict(zip(keys, vectors, strict=True))
            missing = [n for n in names if n not in found]
            if missing:
                raise FfemError(
                    f"{self.path}: {len(missing)} pair image(s) are not in {self.source}, e.g. {missing[0]!r}"
                )
            vectors = np.stack([found[n] for n in names])
        else:
            files = [self.source / n for n in names]
            absent = [f for f in files if not f.is_file()]
            if absent:
                raise FfemError(
                    f"{self.path}: {len(absent)} pair image(s) are not under {self.source}, e.g. {absent[0]}"
                )
            vectors = embed_files(embedder, files)
        index = {n: i for i, n in enumerate(names)}
        first = vectors[[index[n] for n in pairs.first]]
        second = vectors[[index[n] for n in pairs.second]]
        scores = np.sum(first * second, axis=1)
        accuracy = metrics.kfold_accuracy(scores, pairs.same, pairs.folds)
        return {
            "accuracy": accuracy.mean,
            "accuracy_std": accuracy.std,
            "eer": metrics.equal_error_rate(scores, pairs.same)[0],
        }

    def _bin(self, embedder) -> dict:
        from ffem_cli.evaluate.binset import decode_faces, insightface_kfold, read_bin

        if "faces" not in self._cache:
            binset = read_bin(self.path)
            self._cache.update(faces=decode_faces(binset, int(embedder.input_shape[1])), issame=binset.issame)
        faces, issame = self._cache["faces"], self._cache["issame"]
        vectors = np.concatenate(
            [
                np.asarray(embedder(faces[i : i + 128].astype(np.float32), training=False))
                for i in range(0, len(faces), 128)
            ]
        )
        accuracies, _ = insightface_kfold(vectors[0::2], vectors[1::2], issame)
        scores = np.sum(vectors[0::2] * vectors[1::2], axis=1)
        return {
            "accuracy": accuracies.mean(),
            "accuracy_std": accuracies.std(),
            "eer": metrics.equal_error_rate(scores, issame)[0],
        }

    def _retrieval(self, embedder) -> dict:
        from ffem_cli.evaluate.retrieval import evaluate_retrieval

        if _is_pack(self.path):
            _, labels, vectors = embed_pack(embedder, self.path)
        else:
            from ffem_cli.images import scan_identity_folder

            if "folder" not in self._cache:
                self._cache["folder"] = scan_identity_folder(self.path)
            folder = self._cache["folder"]
            labels = np.asarray(folder.labels)
            vectors = embed_files(embedder, [self.path / p for p in folder.paths])
        result = evaluate_retrieval(vectors, labels, ks=(1,), with_r_metrics=True)
        return {"recall@1": result.metrics["recall@1"], "map@r": result.metrics["map@r"]}


def _is_pack(path: Path | None) -> bool:
    return path is not None and PackDir(path).is_finished


def parse_spec(spec: str, training_pack: str) -> ValSet:
    """A ``ValSet`` from ``[NAME=]PATH[@SOURCE]`` (see the module docstring); ``FfemError`` when unusable."""
    name, sep, rest = spec.partition("=")
    if not sep or "/" in name or not name:
        name, rest = "", spec
    location, _, source_text = rest.partition("@")
    path = Path(location)
    source = Path(source_text) if source_text else None
    name = name or path.stem
    if path.suffix == ".bin":
        if source is not None:
            raise FfemError(f"--val {spec}: a .bin holds its own faces; drop '@{source}'")
        if not path.is_file():
            raise FfemError(f"--val {spec}: no such .bin file")
        return ValSet(name, "bin", path)
    if path.is_dir():
        if source is not None:
            raise FfemError(f"--val {spec}: a labelled folder or pack holds its own images; drop '@{source}'")
        if not _is_pack(path):
            from ffem_cli.images import scan_identity_folder

            scan_identity_folder(path)  # refuses an empty or badly nested folder now, not mid-training
        return ValSet(name, "retrieval", path)
    if not path.is_file():
        raise FfemError(f"--val {spec}: {path} is neither a pair list, a .bin, a pack nor a labelled folder")
    source = source or Path(training_pack)
    if not source.is_dir():
        raise FfemError(f"--val {spec}: image source {source} is not a pack or folder")
    read_pairs(path)  # refuse a malformed list at start-up
    return ValSet(name, "pairs", path, source)


def val_sets(config) -> list[ValSet]:
    """The run's validation sets: ``--val`` specs, then the legacy ``--val-pairs``; names must differ."""
    specs = list(config.val)
    if config.val_pairs:
        specs.append(f"val={config.val_pairs}@{config.val_pack or config.data}")
    sets = [parse_spec(spec, config.data) for spec in specs]
    names = [s.name for s in sets]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise FfemError(f"two validation sets are named {duplicate!r}; name them with --val NAME=PATH")
    return sets


def default_monitor(sets: list[ValSet]) -> str:
    """The first set's headline figure, or the training loss when there is no set."""
    return sets[0].primary if sets else "loss"


def lower_is_better(monitor: str) -> bool:
    return monitor == "loss" or monitor.endswith("/eer") or monitor.endswith("_std")


@dataclass
class Watch:
    """Best-so-far of the monitored figure, plateau LR reduction and early stopping.

    Plateau follows Keras's ``ReduceLROnPlateau``: an improvement is a value
    better than the plateau's best by more than ``min_delta`` (1e-4); after
    ``patience`` validations without one the LR becomes
    ``max(lr·factor, min_lr)`` and the count restarts. Early stopping follows
    ``EarlyStopping``: any improvement (min_delta 0) resets its count; after
    ``early_stop`` validations without one the run ends and the best embedder
    is the one kept.
    """

    monitor: str
    lower_better: bool
    early_stop: int = 0
    plateau: tuple[float, int, float] | None = None  # factor, patience, min LR
    min_delta: float = 1e-4
    state: dict = field(
        default_factory=lambda: {
            "best": None,
            "best_step": None,
            "wait": 0,
            "plateau_best": None,
            "plateau_wait": 0,
            "stopped": False,
        }
    )

    def _better(self, value: float, reference: float | None, delta: float = 0.0) -> bool:
        if reference is None:
            return True
        return value < reference - delta if self.lower_better else value > reference + delta

    def update(self, value: float, step: int, optimizer) -> tuple[bool, list[str]]:
        """Record one validation; returns (new best?, messages). Lowers the optimizer's LR on a plateau."""
        s, messages = self.state, []
        improved = self._better(value, s["best"])
        if improved:
            s.update(best=value, best_step=step, wait=0)
        else:
            s["wait"] += 1
        if self.plateau is not None:
            factor, patience, min_lr = self.plateau
            if self._better(value, s["plateau_best"], self.min_delta):
                s.update(plateau_best=value, plateau_wait=0)
            else:
                s["plateau_wait"] += 1
                if s["plateau_wait"] >= patience:
                    old = float(np.asarray(optimizer.learning_rate))
                    if old > min_lr:
                        new = max(old * factor, min_lr)
                        optimizer.learning_rate = new
                        messages.append(
                            f"{self.monitor} has not improved for {patience} validations: "
                            f"learning rate {old:.3g} -> {new:.3g}"
                        )
                    s["plateau_wait"] = 0
        if self.early_stop and s["wait"] >= self.early_stop:
            s["stopped"] = True
            messages.append(
                f"early stop: {self.monitor} has not improved for {self.early_stop} validations; "
                f"keeping the best embedder ({self.monitor} {s['best']:.4f} at step {s['best_step']})"
            )
        return improved, messages


def make_watch(config, sets: list[ValSet]) -> Watch:
    """The ``Watch`` of a run; ``FfemError`` for a monitor no set produces."""
    monitor = config.monitor or default_monitor(sets)
    known = ["loss", *(name for s in sets for name in s.figure_names())]
    if monitor not in known:
        raise FfemError(f"--monitor {monitor!r} is not a figure of this run; choose one of: {', '.join(known)}")
    plateau = (config.plateau_factor, config.plateau_patience, config.min_lr) if config.schedule == "plateau" else None
    return Watch(monitor, lower_is_better(monitor), config.early_stop, plateau)
