"""LFW View 1 end to end: train on ``peopleDevTrain``, verify ``pairsDevTest``, beside eigenfaces.

The real commands are measured: ``ffem pack`` and ``ffem train`` run as
subprocesses (classifier stage, then the ArcFace metric stage with
``--init-from``), exactly as a user would type them.

1. Image list: the ``peopleDevTrain.txt`` identities with 2+ images (LFW
   View 1, Huang et al. 2007), labelled ``0..N-1`` in name order. Faces: the
   fixed box ``evaluate.lfw.LFW_FACE_BOX`` (the median MTCNN box on the
   250x250 deep-funneled images) for every image, no detector run; with crop
   margin ``--crop-margin`` (default 0: the 123 px square around the box).
2. ``ffem pack`` at 96 px (the smallest side the real backbones accept).
3. ``ffem train --stage classifier`` (L2-softmax, 20 epochs, Adam 2e-3,
   cosine) then ``ffem train --stage metric --init-from`` (ArcFace margin
   0.3, scale 32, 6 epochs, Adam 5e-4, cosine, head alone for the first
   epoch) on MobileNetV3-Small, batch 32: the recipe that fits ~20 minutes
   on 2 CPU cores (MobileFaceNet trains ~8x slower there). ArcFace's paper
   setting (margin 0.5, scale 64, SGD) did not converge on these 6.7k
   images from this classifier: the training accuracy fell to 1% and the
   verification accuracy to chance. (ffem sets every BatchNormalization
   momentum to 0.9: keras.applications' 0.999 left MobileNetV3's inference
   statistics so far behind after ~1,000 steps that every face embedded
   alike.)
4. Verification on ``pairsDevTest.txt`` (500 same + 500 different pairs,
   identities disjoint from training). Faces are cut exactly as in training
   (``evaluate.embedding.FacePrep`` from the run's ``run.toml``, same fixed
   box). Two accuracies: 10-fold cross-validated on pairsDevTest (the
   threshold maximising accuracy on 9 folds applied to the 10th, as LFW View
   2 does; folds = 50 same + 50 different consecutive pairs each) — the
   HEADLINE, mean ± std over folds; and the threshold chosen on
   ``pairsDevTrain.txt`` (2,200 pairs of training identities) applied to all
   of pairsDevTest (the strict View 1 reading; one number).
5. Eigenfaces (Turk & Pentland, 1991) in the same run: PCA fitted on the
   grayscale face crops of the training images (same crop, same size,
   flattened, mean-centred), ``--pca-components`` components, whitened
   (``--no-whiten`` turns it off); cosine similarity of the projections;
   the same pairs and threshold procedures.

Writes ``report.json`` and ``roc.png`` to ``--output`` (default: a new
temporary folder, never the repository) and prints a table.

    .venv/bin/python bench/lfw_view1.py            # full recipe (~8 min on 2 quiet cores)
    .venv/bin/python bench/lfw_view1.py --quick    # 4 + 2 epochs (~2.5 min)

Measured 2026-11-25 (2 cores): full 80.0% ± 4.6 (ArcFace stage) vs
eigenfaces 66.8% ± 3.3; ``--quick`` 77.3% ± 3.7 vs the same 66.8%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from sklearn.utils.extmath import randomized_svd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ffem_cli import atomic, realdata  # noqa: E402
from ffem_cli.data.image_list import FaceEntry, label_map_path, write_image_list, write_label_map  # noqa: E402
from ffem_cli.evaluate import metrics, plots  # noqa: E402
from ffem_cli.evaluate.embedding import Embedder, FacePrep, FaceSource, load_embedder, prepare_face  # noqa: E402
from ffem_cli.evaluate.lfw import LFW_FACE_BOX, image_dir  # noqa: E402
from ffem_cli.evaluate.pairfiles import PairList, read_lfw_pairs, read_lfw_people  # noqa: E402
from ffem_cli.evaluate.report import mean_std, print_table  # noqa: E402
from ffem_cli.evaluate.verification import ScoredPairs, score_pair_list, verification_summary  # noqa: E402

FFEM_SCRIPT = Path(sys.executable).with_name("ffem")  # the installed console script
FFEM = [str(FFEM_SCRIPT)] if FFEM_SCRIPT.is_file() else [sys.executable, "-c", "from ffem_cli.cli import main; main()"]
FACE_BOX = tuple(int(v) for v in LFW_FACE_BOX)  # integer pixels, as image_list.json stores boxes
CV_FOLDS = 10


@dataclass(frozen=True)
class Recipe:
    """What is trained: backbone, crop size, and the two stages' epochs / learning rates.

    Classifier stage: L2-softmax (scale 30), Adam, cosine decay from
    ``classifier_lr``. Metric stage: ArcFace with ``arcface_margin`` /
    ``arcface_scale``, Adam, cosine decay from ``metric_lr``, the new head
    trained alone for the first epoch (``--freeze-backbone-epochs 1``).
    """

    image_size: int
    crop_margin: float
    backbone: str
    batch_size: int
    classifier_epochs: int
    classifier_lr: float
    metric_epochs: int
    metric_lr: float
    arcface_margin: float
    arcface_scale: float


FULL = Recipe(96, 0.0, "mobilenetv3-small", 32, 20, 2e-3, 6, 5e-4, 0.3, 32.0)
QUICK = replace(FULL, classifier_epochs=4, metric_epochs=2)


# ---------------------------------------------------------------- pure parts


def people_image_list(
    people: dict[str, int], box: tuple[int, int, int, int]
) -> tuple[dict[str, FaceEntry], dict[str, int]]:
    """Image-list entries and label map for the people with 2+ images (``people``: name → image count).

    Labels ``0..N-1`` follow the sorted names; every image gets ``box``.
    Keys are LFW's ``Name/Name_NNNN.jpg`` (numbers from 0001).
    """
    names = sorted(name for name, count in people.items() if count >= 2)
    entries, label_map = {}, {}
    for label, name in enumerate(names):
        label_map[name] = label
        for number in range(1, people[name] + 1):
            entries[f"{name}/{name}_{number:04d}.jpg"] = FaceEntry(label, box)
    return entries, label_map


def class_balanced_folds(same: np.ndarray, folds: int = CV_FOLDS) -> np.ndarray:
    """Fold id per pair: the i-th same pair and the i-th different pair go to fold ``i * folds // count``."""
    fold_ids = np.empty(same.shape[0], dtype=np.int64)
    for kind in (True, False):
        where = np.flatnonzero(same == kind)
        fold_ids[where] = np.arange(where.size) * folds // where.size
    return fold_ids


class Eigenfaces:
    """PCA of grayscale face crops (Turk & Pentland, 1991), used as an embedding model.

    ``fit(faces)``: ``faces`` uint8 ``(N, S, S, 3)``; keeps ``components``
    principal axes of the mean-centred, flattened grayscale crops (ITU-R 601
    luma), found by randomized SVD (Halko et al., 2011; scikit-learn). ``predict_on_batch(batch)``: float32 ``(B, S, S, 3)`` pixels in
    [0, 255] → L2-normalised projections ``(B, components)``; ``whiten``
    divides each coordinate by its training standard deviation first. Has
    the ``input_shape``/``output_shape`` an ``evaluate.embedding.Embedder``
    reads, so the pairs are embedded by the same code as the trained model.
    """

    LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def __init__(self, components: int, whiten: bool):
        self.components, self.whiten = components, whiten
        self.mean = self.axes = self.scale = None

    def _flat(self, batch: np.ndarray) -> np.ndarray:
        gray = np.asarray(batch, dtype=np.float32) @ self.LUMA
        return gray.reshape(gray.shape[0], -1)

    def fit(self, faces: np.ndarray) -> Eigenfaces:
        flat = self._flat(faces)
        self.side = faces.shape[1]
        self.mean = flat.mean(axis=0)
        centred = flat - self.mean
        _, singular, self.axes = randomized_svd(centred, self.components, random_state=0)
        self.scale = singular / np.sqrt(max(flat.shape[0] - 1, 1))
        self.explained = float((singular**2).sum() / np.square(centred, dtype=np.float64).sum())
        return self

    @property
    def input_shape(self) -> tuple:
        return (None, self.side, self.side, 3)

    @property
    def output_shape(self) -> tuple:
        return (None, self.components)

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        projected = (self._flat(batch) - self.mean) @ self.axes.T
        if self.whiten:
            projected /= np.maximum(self.scale, 1e-12)
        return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)


def accuracies(train: ScoredPairs, test: ScoredPairs) -> dict:
    """Both accuracies of one method: 10-fold CV on ``test``, and ``train``'s threshold applied to ``test``."""
    folds = metrics.kfold_accuracy(test.scores, test.pairs.same, class_balanced_folds(test.pairs.same))
    threshold, train_accuracy = metrics.best_threshold(train.scores, train.pairs.same)
    return {
        "cv10_mean": folds.mean,
        "cv10_std": folds.std,
        "cv10_folds": folds.accuracies.tolist(),
        "devtrain_threshold": threshold,
        "devtrain_accuracy": train_accuracy,
        "devtrain_threshold_test_accuracy": float(np.mean((test.scores >= threshold) == test.pairs.same)),
        **verification_summary(test),
    }


# ---------------------------------------------------------------- the run


def run_ffem(args: list[str], log: Path) -> float:
    """Run ``ffem ARGS`` (output to ``log``); return its wall time in seconds; exit on failure."""
    started = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run([*FFEM, *args], stdout=handle, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"ffem {args[0]} failed (exit {done.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    return seconds


def images_per_second(run: Path) -> float:
    """Mean training images/s over a run's epochs (``metrics.jsonl``)."""
    rates = [json.loads(line)["images_per_second"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return float(np.mean(rates))


def train_faces(entries: dict[str, FaceEntry], images: Path, prep: FacePrep) -> np.ndarray:
    """The training images' faces, cut as the model's were: uint8 ``(N, S, S, 3)``."""
    from concurrent.futures import ThreadPoolExecutor

    sources = [FaceSource(images / key, box=entries[key].box) for key in sorted(entries)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return np.stack(list(pool.map(lambda source: prepare_face(source, prep), sources, chunksize=64)))


def score_both(embedder: Embedder, dev_train: PairList, dev_test: PairList, images: Path) -> tuple[ScoredPairs, ScoredPairs]:
    scored = []
    for pairs in (dev_train, dev_test):
        names = dict.fromkeys([*pairs.first, *pairs.second])
        sources = {name: FaceSource(images / name, box=FACE_BOX) for name in names}
        scored.append(score_pair_list(embedder, pairs, sources, None, 128, f"embed {pairs.source.name}"))
    return scored[0], scored[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (~3 min): 4 + 2 epochs instead of 20 + 6")
    parser.add_argument("--output", type=Path, help="output folder (default: a new temporary folder)")
    parser.add_argument("--image-size", type=int)
    parser.add_argument("--crop-margin", type=float)
    parser.add_argument("--backbone")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--classifier-epochs", type=int)
    parser.add_argument("--classifier-lr", type=float)
    parser.add_argument("--metric-epochs", type=int)
    parser.add_argument("--metric-lr", type=float)
    parser.add_argument("--arcface-margin", type=float)
    parser.add_argument("--arcface-scale", type=float)
    parser.add_argument("--pca-components", type=int, default=150)
    parser.add_argument("--no-whiten", action="store_true", help="eigenfaces without whitening")
    args = parser.parse_args()

    root = realdata.lfw_root()
    reason = realdata.missing_reason(root / "peopleDevTrain.txt")
    if reason:
        print(f"skipped: {reason}")
        return 0
    base = QUICK if args.quick else FULL
    recipe = Recipe(**{name: getattr(args, name) if getattr(args, name) is not None else value
                       for name, value in vars(base).items()})
    output = args.output or Path(tempfile.mkdtemp(prefix="ffem-lfw-view1-"))
    output.mkdir(parents=True, exist_ok=True)
    images = image_dir(root)
    phases: dict[str, float] = {}
    started = time.perf_counter()

    people = read_lfw_people(root / "peopleDevTrain.txt")[0]
    entries, label_map = people_image_list(people, FACE_BOX)
    list_path = output / "image_list.json"
    write_image_list(list_path, entries)
    write_label_map(label_map_path(list_path), label_map)
    print(f"peopleDevTrain: {len(people)} people; {len(label_map)} with 2+ images used "
          f"({len(entries)} images); box {FACE_BOX}, crop margin {recipe.crop_margin}; output {output}")

    pack_dir = output / "pack"
    phases["pack"] = run_ffem(["pack", str(list_path), "--root", str(images), "--output", str(pack_dir),
                               "--size", str(recipe.image_size), "--margin", str(recipe.crop_margin),
                               "--shards", "8"], output / "pack.log")
    common = ["--data", str(pack_dir), "--backbone", recipe.backbone, "--batch-size", str(recipe.batch_size),
              "--optimizer", "adam", "--schedule", "cosine", "--checkpoint-every", "100000",
              "--keep-checkpoints", "1"]
    classifier, metric = output / "runs" / "classifier", output / "runs" / "metric"
    phases["train_classifier"] = run_ffem(
        ["train", "--run", str(classifier), "--stage", "classifier", *common,
         "--epochs", str(recipe.classifier_epochs), "--lr", str(recipe.classifier_lr)],
        output / "train_classifier.log")
    phases["train_metric"] = run_ffem(
        ["train", "--run", str(metric), "--stage", "metric", "--init-from", str(classifier), *common,
         "--epochs", str(recipe.metric_epochs), "--lr", str(recipe.metric_lr),
         "--loss-option", f"margin={recipe.arcface_margin}", "--loss-option", f"scale={recipe.arcface_scale}",
         "--freeze-backbone-epochs", "1"],
        output / "train_metric.log")
    throughput = {
        stage: {"trainer_images_per_second": images_per_second(run),
                "images_per_wall_second": len(entries) // recipe.batch_size * recipe.batch_size * epochs / phases[f"train_{stage}"]}
        for stage, run, epochs in (("classifier", classifier, recipe.classifier_epochs),
                                   ("metric", metric, recipe.metric_epochs))
    }

    dev_train = read_lfw_pairs(root / "pairsDevTrain.txt")
    dev_test = read_lfw_pairs(root / "pairsDevTest.txt")
    tick = time.perf_counter()
    results, scored_test = {}, {}
    for stage, run in (("classifier stage", classifier), ("ArcFace stage", metric)):
        embedder = load_embedder(run, None)
        train_scored, test_scored = score_both(embedder, dev_train, dev_test, images)
        results[f"ffem {recipe.backbone} ({stage})"] = accuracies(train_scored, test_scored)
        scored_test[f"ffem {recipe.backbone} ({stage})"] = test_scored
    phases["evaluate_trained"] = time.perf_counter() - tick

    tick = time.perf_counter()
    prep = FacePrep(image_size=recipe.image_size, margin=recipe.crop_margin)
    eigenfaces = Eigenfaces(args.pca_components, whiten=not args.no_whiten).fit(train_faces(entries, images, prep))
    pca = Embedder(eigenfaces, "eigenfaces", prep, f"eigenfaces ({args.pca_components} components)")
    train_scored, test_scored = score_both(pca, dev_train, dev_test, images)
    pca_name = f"eigenfaces PCA-{args.pca_components}{'' if args.no_whiten else ' whitened'}"
    results[pca_name] = accuracies(train_scored, test_scored)
    scored_test[pca_name] = test_scored
    phases["eigenfaces_fit_and_evaluate"] = time.perf_counter() - tick
    phases["total"] = time.perf_counter() - started

    report = {
        "protocol": "LFW View 1: train on peopleDevTrain (2+ images), test on pairsDevTest",
        "headline": "cv10_mean ± cv10_std: 10-fold cross-validated accuracy on pairsDevTest",
        "recipe": vars(recipe),
        "identities": len(label_map),
        "training_images": len(entries),
        "face_box": list(FACE_BOX),
        "eigenfaces": {"components": args.pca_components, "whiten": not args.no_whiten,
                       "explained_variance": eigenfaces.explained, "color": "grayscale"},
        "seconds": phases,
        "training_throughput": throughput,
        "cpu_count": os.cpu_count(),
        "results": results,
    }
    atomic.write_json(output / "report.json", report)
    curves = {name: metrics.roc_curve(s.scores, s.pairs.same)[:2] for name, s in scored_test.items()}
    plots.roc_png(output / "roc.png", curves, "LFW View 1: pairsDevTest")

    rows = [[name, mean_std(r["cv10_mean"], r["cv10_std"]), f"{r['devtrain_threshold_test_accuracy']:.4f}",
             r["auc"], r["eer"]] for name, r in results.items()]
    print_table("LFW View 1 (pairsDevTest, 500 same + 500 different, identities unseen in training)",
                ["method", "accuracy 10-fold (headline)", "acc. @ DevTrain threshold", "AUC", "EER"], rows)
    timing = [[phase, f"{seconds:.1f}"] for phase, seconds in phases.items()]
    for stage, rates in throughput.items():
        timing.append([f"train {stage}: images/s (trainer; whole command)",
                       f"{rates['trainer_images_per_second']:.1f}; {rates['images_per_wall_second']:.1f}"])
    print_table("wall time (s) and training throughput", ["phase", "value"], timing,
                caption=f"{os.cpu_count()} CPU cores; report: {output / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
