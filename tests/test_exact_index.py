"""ExactIndex: the int8 scan plus float32 re-rank returns what the float32 scan returns."""

import numpy as np
import pytest

from ffem_cli.inference.exact_index import SCAN_QUERIES, ExactIndex, quantize_rows
from ffem_cli.inference.search import topk_search


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def clustered():
    """3,000 identities x 4 near-duplicate faces: many candidates close to the k-th score."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((3000, 64)).astype(np.float32)
    gallery = unit(np.repeat(centres, 4, axis=0) + 0.3 * rng.standard_normal((12000, 64)).astype(np.float32))
    queries = unit(gallery[rng.integers(0, len(gallery), 40)] + 0.2 * rng.standard_normal((40, 64)).astype(np.float32))
    return gallery, queries


def test_quantize_rows_error_is_what_it_reports():
    rows = unit(np.random.default_rng(0).standard_normal((50, 32)))
    rows[7] = 0
    codes, scales, errors = quantize_rows(rows)
    assert codes.dtype == np.int8 and np.abs(codes).max() == 127
    restored = scales[:, None] * codes
    np.testing.assert_allclose(np.linalg.norm(rows - restored, axis=1), errors, atol=1e-6)
    assert errors[7] == 0 and scales[7] == 1


@pytest.mark.parametrize("k", [1, 5, 30])
def test_single_queries_match_the_float32_scan(clustered, k):
    gallery, queries = clustered
    index = ExactIndex(gallery, threads=1)
    for query in queries:
        scores, indices = index.search(query[None], k)
        want_scores, want_indices = topk_search(query[None], gallery, k)
        np.testing.assert_array_equal(indices, want_indices)
        np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_near_ties_below_the_int8_resolution_are_ranked_exactly():
    """Rows closer to each other than the int8 step: the re-rank, not the scan, decides."""
    rng = np.random.default_rng(1)
    base = unit(rng.standard_normal(48))
    gallery = unit(base + 1e-3 * rng.standard_normal((200, 48)))
    index = ExactIndex(gallery, threads=1)
    assert index.max_error > 1e-3  # the scan alone cannot order these rows
    query = unit(base + 1e-3 * rng.standard_normal(48))
    for k in (1, 3, 10):
        assert np.array_equal(index.search(query[None], k)[1], topk_search(query[None], gallery, k)[1])


def test_exclude_and_short_galleries(clustered):
    gallery, queries = clustered
    index = ExactIndex(gallery[:3], threads=1)
    scores, indices = index.search(queries[:2], 5, exclude=np.array([0, -1]))
    assert 0 not in indices[0] and list(indices[0, 2:]) == [-1, -1, -1] and np.isneginf(scores[0, 2:]).all()
    assert sorted(indices[1, :3]) == [0, 1, 2] and indices[1, 3] == -1
    big = ExactIndex(gallery, threads=1)
    first = int(topk_search(queries[:1], gallery, 1)[1][0, 0])
    assert big.search(queries[:1], 1, exclude=np.array([first]))[1][0, 0] != first


def test_batches_beyond_the_scan_size_take_the_float32_blocks(clustered):
    gallery, queries = clustered
    batch = queries[: SCAN_QUERIES + 1]
    index = ExactIndex(gallery, threads=1)
    np.testing.assert_array_equal(index.search(batch, 5)[1], topk_search(batch, gallery, 5)[1])
    np.testing.assert_array_equal(
        index.search(batch[:SCAN_QUERIES], 5)[1], topk_search(batch[:SCAN_QUERIES], gallery, 5)[1]
    )


def test_bad_shapes_are_refused(clustered):
    gallery, _ = clustered
    index = ExactIndex(gallery[:10], threads=1)
    with pytest.raises(ValueError, match="does not fit"):
        index.search(np.zeros((1, 8), np.float32), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(gallery[:1], 0)
    with pytest.raises(ValueError, match=r"\(G, D\)"):
        ExactIndex(gallery[0])
