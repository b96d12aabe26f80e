"""Leave-one-out retrieval on a labelled set of embeddings (Recall@k, R-precision, MAP@R).

Definition used by ``ffem eval folder`` and RFW's Recall@1:

- every image is in the gallery; an image is a *query* when its identity has
  at least one other image (identities with a single image are gallery-only
  distractors, as in pytorch-metric-learning's "lone query" rule);
- a query's neighbours are all other gallery images ranked by cosine
  similarity (the query itself excluded);
- an image whose face could not be prepared (``valid`` False, e.g. no face
  found with ``--detect``) still counts: as a query it scores 0 on every
  metric, as a reference it can never be retrieved but still counts in R.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ffem_cli.errors import FfemError
from ffem_cli.evaluate.metrics import r_precision_and_map_at_r, recall_at_k
from ffem_cli.inference.search import topk_search


@dataclass(frozen=True)
class RetrievalResult:
    """Metrics and per-query outcomes.

    ``query_index``: indices (into the evaluated set) of the queries;
    ``top1``: the index of each query's nearest neighbour (-1 when none);
    ``top1_score``: its cosine similarity; ``hits_at``: ``{k: bool array}``.
    """

    metrics: dict[str, float]
    num_queries: int
    num_distractors: int
    num_invalid_queries: int
    query_index: np.ndarray
    top1: np.ndarray
    top1_score: np.ndarray
    hits_at: dict[int, np.ndarray]


def seed_recall_at_1(
    embeddings: np.ndarray, labels: Sequence[int] | np.ndarray, valid: np.ndarray | None = None
) -> float:
    """Recall@1 as the seed FFEM project defines it: hits over *every* image.

    Each image queries all others (itself excluded); single-image identities
    are queries too and can never hit, so they count as misses. An image
    without a usable face is a miss and is never retrieved. The seed's own
    code let some queries of its last, smaller batch match themselves (a
    wrong diagonal offset); that error is not reproduced here.
    """
    labels = np.asarray(labels, dtype=np.int64)
    valid = np.ones(labels.shape[0], dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    live = np.flatnonzero(valid)
    if labels.shape[0] == 0:
        raise FfemError("no images: nothing to query")
    _, found = topk_search(embeddings[live], embeddings[live], 1, exclude=np.arange(live.size))
    nearest = found[:, 0]
    hits = (nearest >= 0) & (labels[live[np.maximum(nearest, 0)]] == labels[live])
    return float(hits.sum() / labels.shape[0])


def evaluate_retrieval(
    embeddings: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    valid: np.ndarray | None = None,
    ks: Sequence[int] = (1,),
    with_r_metrics: bool = False,
    on_block: Callable[[int], None] | None = None,
) -> RetrievalResult:
    """Recall@k for ``ks`` (and R-precision, MAP@R when ``with_r_metrics``).

    ``embeddings``: ``(N, D)`` L2-normalised; ``labels``: ``(N,)`` ints;
    ``valid``: ``(N,)`` bools (default all True). Metric names in the result:
    ``recall@1``, ``recall@5``, ..., ``r_precision``, ``map@r``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    valid = np.ones(n, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    relevant = counts[inverse] - 1  # other images of the same identity (R)
    queries = np.flatnonzero(relevant >= 1)
    if queries.size == 0:
        raise FfemError("no identity has two or more images: nothing to query")
    gallery_index = np.flatnonzero(valid)
    position_in_gallery = np.full(n, -1, dtype=np.int64)
    position_in_gallery[gallery_index] = np.arange(gallery_index.size)
    live = queries[valid[queries]]
    depth = max(max(ks), int(relevant[queries].max()) if with_r_metrics else 0)
    depth = max(1, min(depth, max(gallery_index.size - 1, 1)))
    scores, found = topk_search(
        embeddings[live], embeddings[gallery_index], depth, exclude=position_in_gallery[live], on_block=on_block
    )
    neighbour_index = np.where(found >= 0, gallery_index[np.maximum(found, 0)], -1)
    neighbour_labels = np.where(neighbour_index >= 0, labels[np.maximum(neighbour_index, 0)], -1)
    # rows for invalid queries: no neighbours at all
    all_labels = np.full((queries.size, neighbour_labels.shape[1]), -1, dtype=np.int64)
    all_top1 = np.full(queries.size, -1, dtype=np.int64)
    all_score = np.full(queries.size, np.nan, dtype=np.float32)
    is_live = valid[queries]
    all_labels[is_live] = neighbour_labels
    all_top1[is_live] = neighbour_index[:, 0]
    all_score[is_live] = np.where(np.isfinite(scores[:, 0]), scores[:, 0], np.nan)
    query_labels = labels[queries]
    metrics, hits_at = {}, {}
    for k in ks:
        hits_at[k] = (all_labels[:, :k] == query_labels[:, None]).any(axis=1)
        metrics[f"recall@{k}"] = recall_at_k(all_labels, query_labels, k)
    if with_r_metrics:
        r = relevant[queries]
        padded = all_labels
        if padded.shape[1] < r.max():
            pad = np.full((queries.size, int(r.max()) - padded.shape[1]), -1, dtype=np.int64)
            padded = np.concatenate([padded, pad], axis=1)
        metrics["r_precision"], metrics["map@r"] = r_precision_and_map_at_r(padded, query_labels, r)
    return RetrievalResult(
        metrics=metrics,
        num_queries=int(queries.size),
        num_distractors=int(n - queries.size),
        num_invalid_queries=int((~is_live).sum()),
        query_index=queries,
        top1=all_top1,
        top1_score=all_score,
        hits_at=hits_at,
    )
