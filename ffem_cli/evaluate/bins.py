"""``ffem eval bin``: insightface's verification ``.bin`` sets, one table for several files.

Per file (read by ``binset.read_bin``, faces resized to the model's input
when it is not 112): 10-fold accuracy ± std as insightface's
``verification.py`` computes it (``binset.insightface_kfold``) without and
with flip (the mirrored face's embedding added, then re-normalised, which is
the figure insightface prints), and, on the flip embeddings' cosine scores,
AUC, EER and TAR@FAR for each FAR the set can resolve (>= 1/FAR imposter
pairs). One ROC PNG holds every file's curve.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ffem_cli.console import progress_bar
from ffem_cli.evaluate import metrics, plots
from ffem_cli.evaluate.binset import BinSet, decode_faces, insightface_kfold, read_bin
from ffem_cli.evaluate.report import mean_std, write_results
from ffem_cli.inference.embedding import Embedder, embed_faces

FAR_TARGETS = (1e-1, 1e-2, 1e-3, 1e-4)


def embed_bin(model, binset: BinSet, size: int, batch_size: int = 64, flip: bool = False, on_batch=None) -> np.ndarray:
    """``(2P, D)`` unit embeddings of a set's faces (``flip``: plus the mirrored face's, re-normalised)."""
    faces = decode_faces(binset, size)
    chunks = []
    for start in range(0, len(faces), batch_size):
        chunks.append(embed_faces(model, faces[start : start + batch_size], flip))
        if on_batch is not None:
            on_batch(min(batch_size, len(faces) - start))
    return np.concatenate(chunks)


def verify(embeddings: np.ndarray, issame: np.ndarray) -> dict:
    """The figures of one set from its ``(2P, D)`` unit embeddings (pairs interleaved)."""
    first, second = embeddings[0::2], embeddings[1::2]
    accuracies, thresholds = insightface_kfold(first, second, issame)
    scores = np.sum(first * second, axis=1)
    fpr, tpr, _ = metrics.roc_curve(scores, issame)
    eer, _ = metrics.equal_error_rate(scores, issame)
    negatives = int((~issame).sum())
    tar = {f"{far:g}": metrics.tar_at_far(scores, issame, far)[0] for far in FAR_TARGETS if negatives * far >= 1}
    return {
        "accuracy": float(accuracies.mean()),
        "accuracy_std": float(accuracies.std()),
        "thresholds": thresholds.tolist(),
        "auc": metrics.auc(fpr, tpr),
        "eer": eer,
        "tar_at_far": tar,
        "roc": (fpr, tpr),
    }


def evaluate_bins(embedder: Embedder, files: list[Path], output_dir: Path, batch_size: int = 64) -> dict:
    """Evaluate every ``.bin``; write ``report.json``, ``bins.csv`` and ``roc.png``; return the report."""
    sets = [read_bin(path) for path in files]  # refuse a bad file before any model work
    size = embedder.prep.image_size
    results, curves = {}, {}
    with progress_bar() as bar:
        task = bar.add_task("embed .bin faces", total=sum(2 * len(s.images) for s in sets), unit="face")
        advance = lambda n: bar.advance(task, n)  # noqa: E731
        for binset in sets:
            plain = verify(embed_bin(embedder.model, binset, size, batch_size, False, advance), binset.issame)
            flipped = verify(embed_bin(embedder.model, binset, size, batch_size, True, advance), binset.issame)
            curves[f"{binset.name} (EER {flipped['eer']:.4f})"] = flipped.pop("roc")
            plain.pop("roc")
            results[binset.name] = {
                "file": str(binset.path),
                "pairs": len(binset),
                "same_pairs": int(binset.issame.sum()),
                "accuracy": plain["accuracy"],
                "accuracy_std": plain["accuracy_std"],
                "accuracy_flip": flipped["accuracy"],
                "accuracy_flip_std": flipped["accuracy_std"],
                "thresholds_flip": flipped["thresholds"],
                "auc": flipped["auc"],
                "eer": flipped["eer"],
                "tar_at_far": flipped["tar_at_far"],
            }
    report = {
        "protocol": "bin",
        "model": embedder.description,
        "model_sha256": embedder.model_sha256,
        "image_size": size,
        "sets": results,
        "definition": (
            "insightface verification.py: squared L2 distance of unit embeddings, thresholds 0..3.99 step 0.01, "
            "10 contiguous folds, threshold with the best accuracy on the other 9 applied to each fold; "
            "accuracy without and with flip (mirrored face's embedding added, re-normalised); AUC, EER and "
            "TAR@FAR on the flip embeddings' cosine scores, TAR@FAR only where the set has >= 1/FAR imposter pairs."
        ),
    }
    table = pd.DataFrame(
        [
            {
                "set": name,
                **{k: v for k, v in r.items() if k not in ("thresholds_flip", "tar_at_far")},
                **{f"tar@far={far}": v for far, v in r["tar_at_far"].items()},
            }
            for name, r in results.items()
        ]
    )
    write_results(
        output_dir,
        report,
        tables={"bins": table},
        figures={"roc.png": lambda path: plots.roc_png(path, curves, f".bin sets: {embedder.description}")},
    )
    return report


def console_rows(report: dict) -> tuple[str, list[str], list[list]]:
    fars = sorted({far for r in report["sets"].values() for far in r["tar_at_far"]}, key=float, reverse=True)
    columns = ["set", "pairs", "accuracy", "accuracy (flip)", "AUC", "EER", *(f"TAR@FAR={far}" for far in fars)]
    rows = [
        [
            name,
            r["pairs"],
            mean_std(r["accuracy"], r["accuracy_std"]),
            mean_std(r["accuracy_flip"], r["accuracy_flip_std"]),
            r["auc"],
            r["eer"],
            *(r["tar_at_far"].get(far, "—") for far in fars),
        ]
        for name, r in report["sets"].items()
    ]
    return "insightface .bin verification (10-fold)", columns, rows
