"""``ffem eval folder``: retrieval on a labelled ``<identity>/<image>`` folder.

Leave-one-out over the whole folder (see ``retrieval.py`` for the exact
definition): Recall@1, @5, @10, R-precision and MAP@R, the metric-learning
measures of Musgrave et al. (2020) as pytorch-metric-learning's
``AccuracyCalculator`` defines them (single-image identities are
gallery-only). Images are taken as face crops unless ``--detect`` is given.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ffem_cli.evaluate.plots import score_histogram_png
from ffem_cli.evaluate.report import write_results
from ffem_cli.evaluate.retrieval import evaluate_retrieval
from ffem_cli.images import scan_identity_folder
from ffem_cli.inference.embedding import Embedder, compute_embeddings, folder_sources

KS = (1, 5, 10)


def evaluate_folder(
    embedder: Embedder,
    root: Path,
    output_dir: Path,
    cache_dir: Path | None,
    batch_size: int = 64,
    faces: Path | None = None,
) -> dict:
    """Run retrieval over ``root``; write ``report.json``, ``identities.csv``, ``queries.csv``; return the report.

    ``faces``: an ``image_list.json`` giving each image's box and landmarks
    (see ``embedding.folder_sources``).
    """
    folder = scan_identity_folder(root)
    sources = folder_sources(root, folder.paths, faces)
    embedded = compute_embeddings(embedder, sources, cache_dir, batch_size, description="embed folder")
    labels = np.asarray(folder.labels)
    result = evaluate_retrieval(embedded.vectors, labels, embedded.valid, ks=KS, with_r_metrics=True)
    names = {label: name for name, label in folder.label_map.items()}
    q = result.query_index
    queries = pd.DataFrame(
        {
            "path": [folder.paths[i] for i in q],
            "identity": [names[labels[i]] for i in q],
            "nearest": [folder.paths[j] if j >= 0 else "" for j in result.top1],
            "nearest_identity": [names[labels[j]] if j >= 0 else "" for j in result.top1],
            "score": result.top1_score,
            **{f"hit@{k}": result.hits_at[k].astype(int) for k in KS},
        }
    )
    identities = (
        queries.groupby("identity")
        .agg(queries=("path", "size"), **{f"recall@{k}": (f"hit@{k}", "mean") for k in KS})
        .reset_index()
    )
    report = {
        "protocol": "folder",
        "root": str(root),
        "model": embedder.description,
        "model_sha256": embedder.model_sha256,
        "preparation": asdict(embedder.prep),
        **result.metrics,
        "images": len(folder.paths),
        "identities": len(folder.label_map),
        "queries": result.num_queries,
        "distractors": result.num_distractors,
        "images_without_face": embedded.num_invalid,
        "queries_without_face": result.num_invalid_queries,
        "definition": (
            "leave-one-out: every image of an identity with >= 2 images queries all other images; "
            "Recall@k: a same-identity image among the k nearest; R-precision and MAP@R with R = the "
            "number of other images of the query's identity (Musgrave et al. 2020, pytorch-metric-learning); "
            "single-image identities are gallery-only; an image without a usable face scores 0 as a query "
            "and is never retrieved."
        ),
    }
    hit = result.hits_at[1].astype(bool)
    scored = result.top1 >= 0
    top1 = {
        "nearest is the same identity": result.top1_score[hit & scored],
        "nearest is another identity": result.top1_score[~hit & scored],
    }
    figures = {
        "top1_scores.png": lambda path: score_histogram_png(
            path, top1, f"Nearest-neighbour similarity, {Path(root).name}"
        )
    }
    write_results(output_dir, report, tables={"identities": identities, "queries": queries}, figures=figures)
    return report


def console_rows(report: dict) -> tuple[str, list[str], list[list]]:
    rows = [[name, report[name]] for name in (*(f"recall@{k}" for k in KS), "r_precision", "map@r")]
    rows += [
        ["images / identities", f"{report['images']} / {report['identities']}"],
        ["queries (distractors)", f"{report['queries']} ({report['distractors']})"],
        ["images without a face", report["images_without_face"]],
    ]
    return f"Retrieval on {report['root']}", ["metric", "value"], rows
