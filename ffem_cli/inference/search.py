"""Cosine-similarity search over L2-normalised embeddings, in bounded memory.

``topk_search`` multiplies a block of queries by a block of the gallery at a
time (float32 BLAS matmul), keeps each query's running top-k with
``argpartition`` (``argmax`` when k = 1) and never holds more than one
``query_block x gallery_block`` similarity block: with the defaults that is
256 MiB, so a 1M x 512 gallery (2 GiB of float32) is searched in about
2.5 GiB. ``pair_scores`` scores listed pairs, vectorised in chunks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DEFAULT_BLOCK_BYTES = 256 * 2**20
ARGPARTITION_ROWS = 256


def _block_sizes(num_queries: int, num_gallery: int, block_bytes: int) -> tuple[int, int]:
    """Query and gallery block sizes: at most 32768 gallery rows and ``block_bytes`` of float32
    similarities per block, split evenly so that no ragged small block runs at a lower BLAS rate."""

    def even(total: int, limit: int) -> int:
        return -(-total // -(-total // max(limit, 1)))  # ceil(total / number of blocks)

    gallery_block = even(max(num_gallery, 1), 32768)
    query_block = even(max(num_queries, 1), block_bytes // (4 * gallery_block))
    return query_block, gallery_block


def topk_search(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    on_block: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar gallery rows of every query, best first.

    ``queries`` ``(Q, D)`` and ``gallery`` ``(G, D)`` are L2-normalised
    (cast to float32). ``exclude[q]`` is a gallery index query ``q`` must not
    match (itself, when the queries are part of the gallery) or -1.
    ``on_block(n)`` is called after each block of ``n`` queries (progress).

    Returns ``(scores, indices)``: float32 ``(Q, k)`` cosine similarities and
    int64 ``(Q, k)`` gallery indices; where fewer than ``k`` candidates exist
    the tail is ``-inf`` / ``-1``.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    gallery = np.ascontiguousarray(gallery, dtype=np.float32)
    num_queries, num_gallery = queries.shape[0], gallery.shape[0]
    if queries.shape[1:] != gallery.shape[1:]:
        raise ValueError(f"query dimension {queries.shape[1:]} differs from gallery {gallery.shape[1:]}")
    if k < 1:
        raise ValueError("k must be >= 1")
    best_scores = np.full((num_queries, k), -np.inf, dtype=np.float32)
    best_indices = np.full((num_queries, k), -1, dtype=np.int64)
    if num_queries == 0 or num_gallery == 0:
        return best_scores, best_indices
    query_block, gallery_block = _block_sizes(num_queries, num_gallery, block_bytes)
    buffer = np.empty(query_block * gallery_block, dtype=np.float32)  # reshaped per block: always contiguous
    gallery_t = [gallery[g0 : g0 + gallery_block].T for g0 in range(0, num_gallery, gallery_block)]
    for q0 in range(0, num_queries, query_block):
        q1 = min(q0 + query_block, num_queries)
        rows = np.arange(q1 - q0)
        scores, indices = best_scores[q0:q1], best_indices[q0:q1]
        for block, g_t in enumerate(gallery_t):
            g0 = block * gallery_block
            out = buffer[: (q1 - q0) * g_t.shape[1]].reshape(q1 - q0, g_t.shape[1])
            sims = np.matmul(queries[q0:q1], g_t, out=out)
            if exclude is not None:
                local = exclude[q0:q1] - g0
                inside = (local >= 0) & (local < g_t.shape[1])
                sims[rows[inside], local[inside]] = -np.inf
            _merge_block(sims, g0, scores, indices, rows)
        if on_block is not None:
            on_block(q1 - q0)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    best_scores = np.take_along_axis(best_scores, order, axis=1)
    best_indices = np.take_along_axis(best_indices, order, axis=1)
    best_indices[~np.isfinite(best_scores)] = -1
    return best_scores, best_indices


def _merge_block(sims: np.ndarray, offset: int, scores: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> None:
    """Fold one similarity block into the running top-k (in place, unsorted)."""
    k = scores.shape[1]
    if k == 1:
        local = np.argmax(sims, axis=1)
        block_best = sims[rows, local]
        better = block_best > scores[:, 0]
        scores[better, 0] = block_best[better]
        indices[better, 0] = local[better] + offset
        return
    take = min(k, sims.shape[1])
    for r0 in range(0, sims.shape[0], ARGPARTITION_ROWS):  # bounds argpartition's int64 index array
        r1 = min(r0 + ARGPARTITION_ROWS, sims.shape[0])
        block = sims[r0:r1]
        local = np.argpartition(block, block.shape[1] - take, axis=1)[:, -take:]
        merged_scores = np.concatenate([scores[r0:r1], np.take_along_axis(block, local, axis=1)], axis=1)
        merged_indices = np.concatenate([indices[r0:r1], local + offset], axis=1)
        keep = np.argpartition(merged_scores, merged_scores.shape[1] - k, axis=1)[:, -k:]
        scores[r0:r1] = np.take_along_axis(merged_scores, keep, axis=1)
        indices[r0:r1] = np.take_along_axis(merged_indices, keep, axis=1)


def pair_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Cosine similarity ``embeddings[first[i]] . embeddings[second[i]]`` for every pair, float32."""
    first, second = np.asarray(first), np.asarray(second)
    out = np.empty(first.shape[0], dtype=np.float32)
    for start in range(0, first.shape[0], chunk):
        a = embeddings[first[start : start + chunk]]
        b = embeddings[second[start : start + chunk]]
        out[start : start + chunk] = np.einsum("ij,ij->i", a, b, dtype=np.float32)
    return out
