"""Chunked similarity search equals brute force; leave-one-out retrieval on known embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from ffem_cli.evaluate.retrieval import evaluate_retrieval
from ffem_cli.inference.search import pair_scores, topk_search


def unit_rows(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("k", [1, 3, 17])
def test_chunked_topk_equals_brute_force(k):
    rng = np.random.default_rng(k)
    queries, gallery = unit_rows(rng, 203, 24), unit_rows(rng, 517, 24)
    # tiny blocks force many query and gallery blocks (and ragged last blocks)
    scores, indices = topk_search(queries, gallery, k, block_bytes=4 * 50 * 517)
    sims = queries @ gallery.T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    assert np.allclose(scores, np.take_along_axis(sims, expected, axis=1), atol=1e-5)
    assert np.array_equal(indices, expected)


def test_gallery_blocks_and_exclusion(monkeypatch):
    import ffem_cli.inference.search as search

    monkeypatch.setattr(search, "_block_sizes", lambda q, g, b: (7, 11))
    monkeypatch.setattr(search, "ARGPARTITION_ROWS", 3)
    rng = np.random.default_rng(0)
    x = unit_rows(rng, 60, 8)
    scores, indices = topk_search(x, x, 4, exclude=np.arange(60))
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :4]
    assert np.array_equal(indices, expected)
    assert not np.any(indices == np.arange(60)[:, None])


def test_k_larger_than_gallery_pads():
    rng = np.random.default_rng(1)
    scores, indices = topk_search(unit_rows(rng, 3, 4), unit_rows(rng, 2, 4), 4)
    assert np.all(indices[:, 2:] == -1) and np.all(np.isneginf(scores[:, 2:]))
    assert np.all(indices[:, :2] >= 0)


def test_pair_scores_vectorised_in_chunks():
    rng = np.random.default_rng(2)
    x = unit_rows(rng, 50, 16)
    a, b = rng.integers(0, 50, 333), rng.integers(0, 50, 333)
    got = pair_scores(x, a, b, chunk=40)
    assert np.allclose(got, np.sum(x[a] * x[b], axis=1), atol=1e-6)


def hand_built_set():
    """Identity 0 and 1 tight clusters; item 5 (identity 1) is nearest to identity 0; item 6 is a lone distractor.

    Cosines: 0-1 and 0-2 .99, 1-2 .98, 3-4 .99, 5-0 .905 (5's best), 6-2 .14.
    """
    e = np.array(
        [
            [1.0, 0.0, 0.0],  # 0: id 0
            [0.99, 0.14, 0.0],  # 1: id 0
            [0.99, 0.0, 0.14],  # 2: id 0
            [0.0, 1.0, 0.0],  # 3: id 1
            [0.1, 0.99, 0.0],  # 4: id 1
            [0.9, -0.3, -0.3],  # 5: id 1, looks like id 0
            [0.0, 0.0, 1.0],  # 6: id 2, single image
        ],
        dtype=np.float32,
    )
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return e, np.array([0, 0, 0, 1, 1, 1, 2])


def test_retrieval_metrics_on_hand_built_embeddings():
    e, labels = hand_built_set()
    result = evaluate_retrieval(e, labels, ks=(1, 2), with_r_metrics=True)
    assert result.num_queries == 6 and result.num_distractors == 1
    # queries 0,1,2 find id 0 first; 3 and 4 find each other; 5 finds an id-0 image
    assert result.metrics["recall@1"] == pytest.approx(5 / 6)
    sims = e @ e.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1)
    r_prec, maps = [], []
    for q in range(6):
        r = int(np.sum(labels == labels[q])) - 1
        rel = labels[order[q, :r]] == labels[q]
        r_prec.append(rel.sum() / r)
        maps.append(np.sum(np.cumsum(rel) / np.arange(1, r + 1) * rel) / r)
    assert result.metrics["r_precision"] == pytest.approx(np.mean(r_prec))
    assert result.metrics["map@r"] == pytest.approx(np.mean(maps))
    assert result.metrics["map@r"] < result.metrics["recall@1"]


def test_invalid_images_count_as_misses_and_are_never_retrieved():
    e, labels = hand_built_set()
    valid = np.ones(7, dtype=bool)
    valid[1] = False
    result = evaluate_retrieval(e, labels, valid=valid, ks=(1,))
    assert result.num_invalid_queries == 1 and result.num_queries == 6
    assert not np.any(result.top1 == 1)
    # query 1 is a miss; queries 0 and 2 still find each other; 3, 4 hit; 5 misses
    assert result.metrics["recall@1"] == pytest.approx(4 / 6)
