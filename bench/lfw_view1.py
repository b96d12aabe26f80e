"""LFW View 1 end to end: train on ``peopleDevTrain``, verify ``pairsDevTest``, beside eigenfaces.

The real commands are measured: ``ffem pack`` and ``ffem train`` run as
subprocesses, exactly as a user would type them, with a named recipe
(``--recipe``, default ``lfw-small``: ``ffem_cli/train/recipes/NAME.toml``,
whose ``[train]`` table is what ``ffem train --config`` reads).

1. Image list: the ``peopleDevTrain.txt`` identities (LFW View 1, Huang et
   al. 2007) — all 4,038 with the recipe's ``singletons = true``, else the
   1,184 with 2+ images — labelled ``0..N-1`` in name order. Faces: the fixed
   box ``evaluate.lfw.LFW_FACE_BOX`` (the median MTCNN box on the 250x250
   deep-funneled images) for every image, no detector run. A recipe with
   ``[pack] align = true`` instead takes each image's box and 5 landmarks
   from ``ffem detect`` run over LFW's images folder (a timed phase of the
   run, ~7 minutes on 2 cores; ``--detections LIST`` reuses an earlier one):
   training images without a detection are left out, test images without
   one fall back to the fixed box.
2. ``ffem pack`` at the recipe's ``[pack]`` size and crop margin (``--align``
   for an aligned recipe).
3. ``ffem train --config`` with the recipe's ``[train]`` table (and its ``[train.classifier]``); a ``[train.metric]``
   table, when present, is a second stage trained ``--init-from`` the first.
   ``--epochs N`` overrides every stage's epochs (short ranking runs). A recipe with
   ``[ensemble] members = N`` (``lfw-small``: 3; ``--members N`` overrides) trains the stages N
   times with ``--seed 0 .. N-1`` and joins the members' last stages with ``ffem ensemble``.
4. Verification on ``pairsDevTest.txt`` (500 same + 500 different pairs,
   identities disjoint from training). Faces are cut exactly as in training
   (``inference.embedding.FacePrep`` from the run's ``run.toml``, same fixed
   box); with the recipe's ``[eval] flip = true`` also with test-time flip.
   Two accuracies: 10-fold cross-validated on pairsDevTest (the threshold
   maximising accuracy on 9 folds applied to the 10th, as LFW View 2 does;
   folds = 50 same + 50 different consecutive pairs each) — the HEADLINE,
   mean ± std over folds; and the threshold chosen on ``pairsDevTrain.txt``
   (2,200 pairs of training identities) applied to all of pairsDevTest (the
   strict View 1 reading; one number). For an ensemble, each member's last stage is evaluated with
   the recipe's flip setting and the ensemble with and without it.
5. Recall@1 on ``peopleDevTest.txt`` (1,711 identities, 3,708 images, none
   seen in training): every image whose identity has another image is a
   query, all 3,708 images form the gallery (leave-one-out).
6. Eigenfaces (Turk & Pentland, 1991) in the same run: PCA fitted on the
   grayscale face crops of the training images (same crop, same size,
   flattened, mean-centred), ``--pca-components`` components, whitened
   (``--no-whiten`` turns it off); cosine similarity of the projections;
   the same pairs, threshold and Recall@1 procedures.

The reference loop's rate (``bench/reference.py``) is printed first and
stored in the report with the time budget it implies here: 60 minutes on a
machine whose reference loop runs at >= 2,000 img/s, scaled by 2,000 / rate
on a slower one. Writes ``report.json`` and ``roc.png`` to ``--output``
(default: a new temporary folder, never the repository) and prints a table.

    .venv/bin/python bench/lfw_view1.py                 # the lfw-small recipe
    .venv/bin/python bench/lfw_view1.py --quick         # 2 epochs per stage
    .venv/bin/python bench/lfw_view1.py --recipe my.toml --epochs 5

Figures: docs/benchmarks.md (every recipe tried, with its command).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tomli_w
from sklearn.utils.extmath import randomized_svd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.reference import reference_rate  # noqa: E402
from ffem_cli import atomic, realdata  # noqa: E402
from ffem_cli.data.image_list import (  # noqa: E402
    FaceEntry,
    label_map_path,
    load_image_list,
    write_image_list,
    write_label_map,
)
from ffem_cli.evaluate import metrics, plots  # noqa: E402
from ffem_cli.evaluate.lfw import LFW_FACE_BOX, image_dir  # noqa: E402
from ffem_cli.evaluate.pairfiles import PairList, read_lfw_pairs, read_lfw_people  # noqa: E402
from ffem_cli.evaluate.report import mean_std, print_table  # noqa: E402
from ffem_cli.evaluate.retrieval import evaluate_retrieval  # noqa: E402
from ffem_cli.evaluate.verification import ScoredPairs, score_pair_list, verification_summary  # noqa: E402
from ffem_cli.inference.embedding import (  # noqa: E402
    Embedder,
    FacePrep,
    FaceSource,
    compute_embeddings,
    prepare_face,
)
from ffem_cli.inference.models import load_embedder  # noqa: E402
from ffem_cli.rundir import RunDir  # noqa: E402

FFEM_SCRIPT = Path(sys.executable).with_name("ffem")  # the installed console script
FFEM = [str(FFEM_SCRIPT)] if FFEM_SCRIPT.is_file() else [sys.executable, "-c", "from ffem_cli.cli import main; main()"]
FACE_BOX = tuple(int(v) for v in LFW_FACE_BOX)  # integer pixels, as image_list.json stores boxes
CV_FOLDS = 10
RECIPES = Path(__file__).resolve().parent.parent / "ffem_cli" / "train" / "recipes"
BUDGET_MINUTES, BUDGET_REFERENCE_RATE = 60.0, 2000.0  # the budget and the machine it holds on


@dataclass(frozen=True)
class Recipe:
    """A recipe file: its ``[train]`` table (``ffem train --recipe``), whose ``[train.classifier]`` and
    ``[train.metric]`` tables are the stages (the second trained with ``--init-from`` the first), and the ``[pack]``/``[eval]`` settings
    this benchmark reads: ``size``, ``margin``, ``singletons`` (train on the people with one image
    too), ``align`` (5-point alignment on ``ffem detect``'s landmarks) and ``flip`` (test-time flip: the
    mirrored face's embedding added). ``[detect] keep`` is ``ffem detect --keep`` (default ``largest``).
    ``[ensemble] members = N`` (default 1) trains the stages N times with ``--seed 0 .. N-1`` and joins the
    last stages with ``ffem ensemble``."""

    path: Path
    stages: tuple[dict, ...]
    size: int
    margin: float
    singletons: bool
    align: bool
    flip: bool
    members: int = 1
    keep: str = "largest"

    @classmethod
    def load(cls, name_or_path: str) -> Recipe:
        path = Path(name_or_path)
        if not path.suffix:
            path = RECIPES / f"{name_or_path}.toml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
            raise SystemExit(f"error: no recipe {name_or_path!r} (known: {known}, or a .toml path)")
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        pack, evaluation = document.get("pack", {}), document.get("eval", {})
        shared = dict(document.get("train", {}))  # the ffem train --recipe layout (train/recipes.py)
        per_stage = {
            stage: shared.pop(stage) for stage in ("classifier", "metric") if isinstance(shared.get(stage), dict)
        }
        stages = tuple({**shared, **table} for table in per_stage.values()) or (shared,)
        return cls(
            path,
            stages,
            int(pack.get("size", 112)),
            float(pack.get("margin", 0.0)),
            bool(pack.get("singletons", False)),
            bool(pack.get("align", False)),
            bool(evaluation.get("flip", False)),
            int(document.get("ensemble", {}).get("members", 1)),
            str(document.get("detect", {}).get("keep", "largest")),
        )


# ---------------------------------------------------------------- pure parts


def people_image_list(
    people: dict[str, int],
    box: tuple[int, int, int, int],
    min_images: int = 2,
    detections: dict[str, FaceEntry] | None = None,
) -> tuple[dict[str, FaceEntry], dict[str, int]]:
    """Image-list entries and label map for the people with ``min_images``+ images (``people``: name → count).

    Labels ``0..N-1`` follow the sorted names; every image gets ``box``, or with
    ``detections`` (key → detected entry) the detected box and landmarks, and an
    image without a detection is left out. Keys are LFW's ``Name/Name_NNNN.jpg``
    (numbers from 0001).
    """
    names = sorted(name for name, count in people.items() if count >= min_images)
    entries, label_map = {}, {}
    for label, name in enumerate(names):
        label_map[name] = label
        for number in range(1, people[name] + 1):
            key = f"{name}/{name}_{number:04d}.jpg"
            if detections is None:
                entries[key] = FaceEntry(label, box)
            elif key in detections:
                entries[key] = FaceEntry(label, detections[key].box, detections[key].landmarks)
    return entries, label_map


def face_source(images: Path, key: str, detections: dict[str, FaceEntry] | None) -> FaceSource:
    """The face of LFW image ``key``: its detection (box + landmarks) when there is one, else the fixed box."""
    found = detections.get(key) if detections is not None else None
    if found is None:
        return FaceSource(images / key, box=FACE_BOX)
    return FaceSource(images / key, box=found.box, landmarks=tuple(map(tuple, found.landmarks.tolist())))


class Eigenfaces:
    """PCA of grayscale face crops (Turk & Pentland, 1991), used as an embedding model.

    ``fit(faces)``: ``faces`` uint8 ``(N, S, S, 3)``; keeps ``components``
    principal axes of the mean-centred, flattened grayscale crops (ITU-R 601
    luma), found by randomized SVD (Halko et al., 2011; scikit-learn). ``predict_on_batch(batch)``: float32 ``(B, S, S, 3)`` pixels in
    [0, 255] → L2-normalised projections ``(B, components)``; ``whiten``
    divides each coordinate by its training standard deviation first. Has
    the ``input_shape``/``output_shape`` an ``inference.embedding.Embedder``
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
        self.components = min(self.components, flat.shape[0] - 1)  # the rank of N centred faces
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
    folds = metrics.kfold_accuracy(test.scores, test.pairs.same, metrics.stratified_folds(test.pairs.same, CV_FOLDS))
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
    rates = [record["images_per_second"] for record in RunDir(run).read_metrics()]
    return float(np.mean(rates))


def train_faces(entries: dict[str, FaceEntry], images: Path, prep: FacePrep, detections) -> np.ndarray:
    """The training images' faces, cut as the model's were: uint8 ``(N, S, S, 3)``."""
    from concurrent.futures import ThreadPoolExecutor

    sources = [face_source(images, key, detections) for key in sorted(entries)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        return np.stack(list(pool.map(lambda source: prepare_face(source, prep), sources, chunksize=64)))


def score_both(
    embedder: Embedder, dev_train: PairList, dev_test: PairList, images: Path, detections
) -> tuple[ScoredPairs, ScoredPairs]:
    scored = []
    for pairs in (dev_train, dev_test):
        names = dict.fromkeys([*pairs.first, *pairs.second])
        sources = {name: face_source(images, name, detections) for name in names}
        scored.append(score_pair_list(embedder, pairs, sources, None, 128, f"embed {pairs.source.name}"))
    return scored[0], scored[1]


def recall_at_1(embedder: Embedder, people: dict[str, int], images: Path, detections) -> dict:
    """Leave-one-out Recall@1 over every image of ``people`` (``peopleDevTest``: 3,708 images): each image
    whose identity has another image is a query, all images form the gallery."""
    entries, _ = people_image_list(people, FACE_BOX, min_images=1)
    keys = sorted(entries)
    sources = [face_source(images, key, detections) for key in keys]
    embedded = compute_embeddings(embedder, sources, None, 128, description="embed peopleDevTest")
    result = evaluate_retrieval(embedded.vectors, [entries[key].label for key in keys], embedded.valid)
    return {"recall@1": result.metrics["recall@1"], "queries": result.num_queries, "gallery": len(keys)}


def evaluate(
    embedder: Embedder, pairs: tuple[PairList, PairList], test_people: dict[str, int], images: Path, detections
) -> tuple[dict, ScoredPairs]:
    """Pair accuracies (``accuracies``) and peopleDevTest Recall@1 of one model; the scored test pairs.

    ``detections``: key → detected entry for an aligned recipe, else ``None`` (the fixed box)."""
    train_scored, test_scored = score_both(embedder, *pairs, images, detections)
    recall = recall_at_1(embedder, test_people, images, detections)
    return {**accuracies(train_scored, test_scored), **recall}, test_scored


def stage_commands(
    recipe: Recipe, output: Path, pack_dir: Path, epochs: int | None
) -> list[tuple[str, Path, list[str]]]:
    """(name, run dir, ``ffem train`` arguments) per stage, member after member; each stage's table is
    written once as a config file. One member: stages ``stage1``, ``stage2`` in ``runs/``; N members:
    ``memberI-stage1`` … in ``runs/memberI/``, trained with ``--seed I``."""
    configs = []
    for index, table in enumerate(recipe.stages):
        config = output / f"stage{index + 1}.toml"
        atomic.write_text(config, tomli_w.dumps({"train": table}))
        configs.append(config)
    commands = []
    for member in range(recipe.members):
        folder, prefix = (
            (output / "runs", "") if recipe.members == 1 else (output / "runs" / f"member{member}", f"member{member}-")
        )
        previous = None
        for index, config in enumerate(configs):
            name, run = f"{prefix}stage{index + 1}", folder / f"stage{index + 1}"
            args = ["train", "--run", str(run), "--data", str(pack_dir), "--config", str(config)]
            if previous is not None:
                args += ["--init-from", str(previous)]
            if epochs is not None:
                args += ["--epochs", str(epochs)]
            if recipe.members > 1:
                args += ["--seed", str(member)]
            commands.append((name, run, args))
            previous = run
    return commands


def member_last_stages(recipe: Recipe, stages: list[tuple[str, Path, list[str]]]) -> list[Path]:
    """Each member's last stage run (``stages``: ``stage_commands``'s list, possibly followed by a
    Partial FC stage, which is not a member)."""
    per_member = len(recipe.stages)
    return [run for _, run, _ in stages[per_member - 1 : recipe.members * per_member : per_member]]


def ensemble_command(recipe: Recipe, stages: list[tuple[str, Path, list[str]]], output: Path) -> tuple[Path, list[str]]:
    """The ensemble's run dir and ``ffem ensemble`` arguments: every member's last stage."""
    run = output / "runs" / "ensemble"
    return run, ["ensemble", *map(str, member_last_stages(recipe, stages)), "--run", str(run)]


def partial_fc_stage(stage: tuple[str, Path, list[str]], sample_rate: float) -> tuple[str, Path, list[str]]:
    """``stage`` again with Partial FC at ``sample_rate``: same config and start, its own run folder."""
    name, run, command = stage
    partial = run.parent / f"{name}-partial-fc"
    command = [str(partial) if value == str(run) else value for value in command]
    return f"{name}-partial-fc", partial, [*command, "--sample-rate", str(sample_rate)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--recipe",
        default="lfw-small",
        help="recipe name (ffem_cli/train/recipes/NAME.toml) or a .toml path (default lfw-small)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 epochs per stage")
    parser.add_argument("--epochs", type=int, help="epochs per stage instead of the recipe's (ranking runs)")
    parser.add_argument("--members", type=int, help="ensemble members instead of the recipe's [ensemble] members")
    parser.add_argument("--output", type=Path, help="output folder (default: a new temporary folder)")
    parser.add_argument(
        "--sample-rate",
        type=float,
        help="also train the last stage with Partial FC at this sample rate, from the same start (issue 15)",
    )
    parser.add_argument(
        "--detections",
        type=Path,
        help="for a recipe with [pack] align: an image list from `ffem detect LFW/images` (boxes + "
        "landmarks) made earlier; default: run ffem detect here, as part of the timed run",
    )
    parser.add_argument("--pca-components", type=int, default=150)
    parser.add_argument("--no-whiten", action="store_true", help="eigenfaces without whitening")
    args = parser.parse_args()
    reference, reference_source = reference_rate()
    print(
        f"reference loop (plain PIL decode+crop+encode, 1 process, {reference_source}): {reference:,.0f} img/s; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )

    root = realdata.lfw_root()
    reason = realdata.missing_reason(root / "peopleDevTrain.txt")
    if reason:
        print(f"skipped: {reason}")
        return 0
    recipe = Recipe.load(args.recipe)
    if args.members is not None:
        recipe = dataclasses.replace(recipe, members=args.members)
    epochs = 2 if args.quick else args.epochs
    output = args.output or Path(tempfile.mkdtemp(prefix="ffem-lfw-view1-"))
    output.mkdir(parents=True, exist_ok=True)
    images = image_dir(root)
    phases: dict[str, float] = {}
    started = time.perf_counter()
    detections = detections_path = None
    if recipe.align:
        detections_path = args.detections
        if detections_path is None:  # part of the recipe's time
            detections_path = output / "detections.json"
            phases["detect"] = run_ffem(
                ["detect", str(images), "--output", str(detections_path), "--keep", recipe.keep],
                output / "detect.log",
            )
        detections = load_image_list(detections_path)

    people = read_lfw_people(root / "peopleDevTrain.txt")[0]
    entries, label_map = people_image_list(
        people, FACE_BOX, min_images=1 if recipe.singletons else 2, detections=detections
    )
    list_path = output / "image_list.json"
    write_image_list(list_path, entries)
    write_label_map(label_map_path(list_path), label_map)
    print(
        f"recipe {recipe.path}; peopleDevTrain: {len(people)} people, {len(label_map)} used "
        f"({len(entries)} images); "
        + (f"aligned on {detections_path}'s landmarks" if recipe.align else f"box {FACE_BOX}")
        + f", {recipe.size} px, crop margin {recipe.margin}; output {output}"
    )

    pack_dir = output / "pack"
    phases["pack"] = run_ffem(
        [
            "pack",
            str(list_path),
            "--root",
            str(images),
            "--output",
            str(pack_dir),
            "--size",
            str(recipe.size),
            "--margin",
            str(recipe.margin),
            "--shards",
            "8",
            *(["--align"] if recipe.align else []),
        ],
        output / "pack.log",
    )
    stages = stage_commands(recipe, output, pack_dir, epochs)
    if args.sample_rate is not None:
        stages.append(partial_fc_stage(stages[-1], args.sample_rate))
    throughput = {}
    for name, run, command in stages:
        phases[f"train_{name}"] = run_ffem(command, output / f"train_{name}.log")
        done = RunDir(run).read_metrics()
        throughput[name] = {
            "trainer_images_per_second": images_per_second(run),
            "epochs": len(done),
            "steps": done[-1]["step"],
            "final_loss": done[-1]["loss"],
            "final_accuracy": done[-1].get("accuracy"),
        }

    pairs = (read_lfw_pairs(root / "pairsDevTrain.txt"), read_lfw_pairs(root / "pairsDevTest.txt"))
    test_people = read_lfw_people(root / "peopleDevTest.txt")[0]
    results, scored_test = {}, {}
    evaluated = [(name, run) for name, run, _ in stages]
    if recipe.members > 1:  # each member's last stage with the recipe's flip setting, the ensemble both ways
        ensemble_run, command = ensemble_command(recipe, stages, output)
        phases["ensemble"] = run_ffem(command, output / "ensemble.log")
        joined = set(member_last_stages(recipe, stages))
        evaluated = [(name, run) for name, run in evaluated if run in joined or name.endswith("partial-fc")]
        evaluated.append(("ensemble", ensemble_run))
    tick = time.perf_counter()
    for name, run in evaluated:
        saved = tomllib.loads((run / "run.toml").read_text(encoding="utf-8"))
        if "ensemble" in saved:
            backbones = ", ".join(member["backbone"] for member in saved["ensemble"]["members"])
            label = f"ffem ensemble of {len(saved['ensemble']['members'])} ({backbones})"
        else:
            label = f"ffem {saved['model']['backbone']} {name} ({saved['loss']['name']})"
        both = recipe.members == 1 or name == "ensemble"
        for flip in sorted({False, recipe.flip}) if both else [recipe.flip]:
            key = f"{label}{' + flip' if flip else ''}"
            embedder = load_embedder(run, None, flip=flip)
            results[key], scored_test[key] = evaluate(embedder, pairs, test_people, images, detections)
    phases["evaluate_trained"] = time.perf_counter() - tick

    tick = time.perf_counter()
    prep = FacePrep(image_size=recipe.size, margin=recipe.margin, crop="align" if recipe.align else "margin")
    faces = train_faces(entries, images, prep, detections)
    eigenfaces = Eigenfaces(args.pca_components, whiten=not args.no_whiten).fit(faces)
    pca = Embedder(eigenfaces, "eigenfaces", prep, f"eigenfaces ({eigenfaces.components} components)")
    pca_name = f"eigenfaces PCA-{eigenfaces.components}{'' if args.no_whiten else ' whitened'}"
    results[pca_name], scored_test[pca_name] = evaluate(pca, pairs, test_people, images, detections)
    phases["eigenfaces_fit_and_evaluate"] = time.perf_counter() - tick
    phases["total"] = time.perf_counter() - started
    budget = BUDGET_MINUTES * max(1.0, BUDGET_REFERENCE_RATE / reference)

    report = {
        "protocol": "LFW View 1: train on peopleDevTrain, test on pairsDevTest; Recall@1 on peopleDevTest",
        "headline": "cv10_mean ± cv10_std: 10-fold cross-validated accuracy on pairsDevTest",
        "recipe": {
            "path": str(recipe.path),
            "stages": list(recipe.stages),
            "size": recipe.size,
            "margin": recipe.margin,
            "singletons": recipe.singletons,
            "align": recipe.align,
            "keep": recipe.keep,
            "flip": recipe.flip,
            "members": recipe.members,
            "epochs_override": epochs,
        },
        "identities": len(label_map),
        "training_images": len(entries),
        "face_box": list(FACE_BOX),
        "eigenfaces": {
            "components": eigenfaces.components,
            "whiten": not args.no_whiten,
            "explained_variance": eigenfaces.explained,
            "color": "grayscale",
        },
        "seconds": phases,
        "budget_minutes_on_this_machine": budget,
        "reference_images_per_second": reference,
        "training_throughput": throughput,
        "cpu_count": os.cpu_count(),
        "results": results,
    }
    atomic.write_json(output / "report.json", report)
    curves = {name: metrics.roc_curve(s.scores, s.pairs.same)[:2] for name, s in scored_test.items()}
    plots.roc_png(output / "roc.png", curves, "LFW View 1: pairsDevTest")

    rows = [
        [
            name,
            mean_std(r["cv10_mean"], r["cv10_std"]),
            f"{r['devtrain_threshold_test_accuracy']:.4f}",
            r["auc"],
            r["eer"],
            f"{r['recall@1']:.4f}",
        ]
        for name, r in results.items()
    ]
    print_table(
        "LFW View 1 (pairsDevTest, 500 same + 500 different, identities unseen in training)",
        ["method", "accuracy 10-fold (headline)", "acc. @ DevTrain threshold", "AUC", "EER", "Recall@1 peopleDevTest"],
        rows,
    )
    timing = [[phase, f"{seconds:.1f}"] for phase, seconds in phases.items()]
    for name, rates in throughput.items():
        timing.append([f"train {name}: images/s (trainer)", f"{rates['trainer_images_per_second']:.1f}"])
    timing.append(["reference loop, img/s", f"{reference:.0f}"])
    timing.append(["budget on this machine, min (60 x 2000 / reference)", f"{budget:.0f}"])
    print_table(
        "wall time (s) and training throughput",
        ["phase", "value"],
        timing,
        caption=f"{os.cpu_count()} CPU cores; report: {output / 'report.json'}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
