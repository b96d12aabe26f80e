"""``ffem eval pairs``: a verification list in the EE488B trainer's format.

Each line is ``label,path1,path2`` (1 = target / same person, 0 = imposter),
paths relative to ``--root``. Reported: EER (+ its threshold; also as the
EE488B trainer computes it, in percent), AUC, 10-fold accuracy over
stratified folds (one fold, threshold chosen on the list itself, when a kind
has fewer than 10 pairs; the report says which) and TAR@FAR for FAR in
{1e-1, 1e-2, 1e-3, 1e-4}. A FAR target is reported only
when the list has at least ``1 / FAR`` imposter pairs (below that the rate
cannot be resolved: one false accept already exceeds it); the omitted targets
are listed in the report with that reason. Images are taken as face crops
unless ``--detect`` is given.

``--output`` writes every pair's score: ``label,first,second,score`` with a
header (``csv``), or EE488B's own headerless ``score,label,path1,path2``
(``ee488b``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ffem_cli import atomic
from ffem_cli.errors import FfemError
from ffem_cli.evaluate import metrics, plots
from ffem_cli.evaluate.pairfiles import read_label_pairs
from ffem_cli.evaluate.report import mean_std, write_results
from ffem_cli.evaluate.verification import (
    fold_accuracy,
    roc_points,
    score_pair_file,
    verification_summary,
)
from ffem_cli.inference.embedding import Embedder

FAR_TARGETS = (1e-1, 1e-2, 1e-3, 1e-4)
SCORE_FORMATS = ("csv", "ee488b")


def evaluate_pair_list(
    embedder: Embedder,
    list_path: Path,
    root: Path,
    output_dir: Path,
    cache_dir: Path | None,
    scores_csv: Path | None = None,
    batch_size: int = 64,
    scores_format: str = "csv",
) -> dict:
    """Score every pair; write ``report.json``, ``pairs.csv``, ``roc.png`` (and ``scores_csv``); return the report."""
    root = Path(root)
    if scores_format not in SCORE_FORMATS:
        raise FfemError(f"unknown score file format {scores_format!r} (expected one of {', '.join(SCORE_FORMATS)})")
    scored = score_pair_file(embedder, list_path, root, cache_dir, batch_size, read_label_pairs)
    pairs = scored.pairs
    summary = verification_summary(scored)
    accuracy = fold_accuracy(scored.scores, pairs)
    negatives = summary["different_pairs"]
    tar, omitted = {}, {}
    for far in FAR_TARGETS:
        if negatives * far >= 1:
            value, threshold = metrics.tar_at_far(scored.scores, pairs.same, far)
            tar[f"{far:g}"] = {"tar": value, "threshold": threshold}
        else:
            omitted[f"{far:g}"] = f"needs >= {round(1 / far)} imposter pairs, the list has {negatives}"
    report = {
        "protocol": "pairs",
        "list": str(pairs.source),
        "root": str(root),
        "model": embedder.description,
        "model_sha256": embedder.model_sha256,
        "preparation": asdict(embedder.prep),
        **summary,
        "accuracy": accuracy,
        "tar_at_far": tar,
        "tar_at_far_omitted": omitted,
        "images_without_face_list": scored.images_without_face,
        "definition": (
            "cosine similarity per pair; EER where false-accept = false-reject rate (ROC interpolated); "
            "eer_ee488b_percent: max(FAR, FRR) at the ROC point where they are closest, x100, as EE488B; "
            "accuracy: threshold from the other folds (accuracy.fold_rule says how folds were made); "
            "TAR@FAR: highest true-accept rate with false-accept rate <= FAR, reported when the list has "
            ">= 1/FAR imposter pairs; a pair without a usable face is scored -1."
        ),
    }
    table = scored.table()
    if scores_csv is not None:
        with atomic.atomic_open(scores_csv, "w") as handle:
            if scores_format == "ee488b":
                table[["score", "same", "first", "second"]].to_csv(
                    handle, index=False, header=False, float_format="%.6f"
                )
            else:
                table[["same", "first", "second", "score"]].rename(columns={"same": "label"}).to_csv(
                    handle, index=False, float_format="%.6f"
                )
    fpr, tpr = roc_points(scored)
    label = f"{pairs.source.name} (EER {summary['eer']:.4f})"
    write_results(
        output_dir,
        report,
        tables={"pairs": table},
        figures={
            "roc.png": lambda path: plots.roc_png(
                path, {label: (fpr, tpr)}, f"{pairs.source.name}: {embedder.description}"
            )
        },
        keep=[scores_csv] if scores_csv is not None else [],
    )
    return report


def console_rows(report: dict) -> tuple[str, list[str], list[list]]:
    accuracy = report["accuracy"]
    accuracy_text = (
        mean_std(accuracy["mean"], accuracy["std"])
        if len(accuracy["folds"]) > 1
        else f"{accuracy['mean']:.4f} (one fold: threshold chosen on the list itself)"
    )
    rows = [
        ["EER", report["eer"]],
        ["EER (EE488B, %)", report["eer_ee488b_percent"]],
        ["AUC", report["auc"]],
        ["accuracy", accuracy_text],
    ]
    rows += [[f"TAR@FAR={far}", value["tar"]] for far, value in report["tar_at_far"].items()]
    rows += [[f"TAR@FAR={far}", f"omitted: {reason}"] for far, reason in report["tar_at_far_omitted"].items()]
    rows += [
        ["pairs (target / imposter)", f"{report['pairs']} ({report['same_pairs']} / {report['different_pairs']})"],
        ["pairs without a face", report["pairs_without_face"]],
    ]
    return f"Pair list {Path(report['list']).name}", ["metric", "value"], rows
