"""Exact top-k cosine search for one query at a time: an int8 scan, then a float32 re-rank.

A single query against a large gallery is a matrix-vector product, bound by
memory bandwidth: a 1M x 512 float32 gallery is 2 GiB to stream per query.
``ExactIndex`` keeps, beside the float32 gallery, an int8 copy (a quarter of
the bytes) and scans that with onnxruntime's integer matmul. The int8 scores
are only approximate, so every row that could still be in the true top-k is
re-scored in float32 from the original rows. The answer is the same as
``topk_search``'s (up to float32 rounding among exact ties).

Why the re-rank is enough. Row ``g`` is stored as codes ``c = round(g / s)``
with its own scale ``s = max|g| / 127``; ``ĝ = s c`` and ``e = |g - ĝ|``
(L2, computed once). The query ``q`` is quantized the same way to ``q̂`` with
``δ = |q - q̂|``. The scan computes ``q̂ · ĝ`` exactly (int32 accumulation),
and ``|q · g - q̂ · ĝ| <= |q| e + δ |ĝ| <= |q| E + δ N =: b`` with ``E`` and
``N`` the largest ``e`` and ``|ĝ|`` over the gallery. If ``a_k`` is the k-th
best approximate score, every row whose approximate score is below
``a_k - 2b`` is beaten by k rows in exact score too, so only rows at or above
that line are re-scored.

Batches of more than ``SCAN_QUERIES`` queries go to ``topk_search``, whose
float32 BLAS blocks are faster per query there.
"""

from __future__ import annotations

import numpy as np

from ffem_cli.inference.search import topk_search

SCAN_QUERIES = 8
BUILD_ROWS = 1024  # rows quantized and transposed at a time: 512 KiB of codes, cache-sized tiles
FLOAT_SLACK = 1e-4  # float32 rounding of a 512-d dot product of unit vectors is below 3e-5


def quantize_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric int8 codes of each row with its own scale.

    Returns ``(codes, scales, errors)``: int8 ``(R, D)``, float32 ``(R,)``
    with ``rows ≈ scales[:, None] * codes``, and float32 ``(R,)`` the L2 norm
    of each row's quantization error. All-zero rows get scale 1 and code 0.
    """
    rows = np.asarray(rows, dtype=np.float32)
    scales = np.abs(rows).max(axis=1) / np.float32(127)
    scales[scales == 0] = 1
    codes = np.rint(rows / scales[:, None]).astype(np.int8)
    errors = np.linalg.norm(rows - scales[:, None] * codes, axis=1)  # float32 rounding: far below FLOAT_SLACK
    return codes, scales, errors


def _int8_matmul_session(codes_t: np.ndarray, threads: int | None):
    """An onnxruntime session computing ``(A - 128) @ codes_t`` in int32 for uint8 ``A`` ``(Q, D)``.

    ``codes_t`` int8 ``(D, G)`` is handed over in memory as an external
    initializer, so it is not copied into a model proto; onnxruntime pre-packs it once.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    dim, size = codes_t.shape
    weights = TensorProto(name="gallery", data_type=TensorProto.INT8, dims=[dim, size])
    weights.data_location = TensorProto.EXTERNAL
    weights.external_data.add(key="location", value="in-memory")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["query", "gallery", "zero"], ["scores"])],
        "int8_scan",
        [helper.make_tensor_value_info("query", TensorProto.UINT8, [None, dim])],
        [helper.make_tensor_value_info("scores", TensorProto.INT32, [None, size])],
        [helper.make_tensor("zero", TensorProto.UINT8, [], [128]), weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.add_external_initializers(["gallery"], [ort.OrtValue.ortvalue_from_numpy(codes_t)])
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class ExactIndex:
    """A gallery prepared for low-latency exact search (build once, query many times).

    ``gallery`` ``(G, D)`` holds L2-normalised rows (cast to float32 and kept,
    for the re-rank). Building it costs one pass over the gallery plus
    onnxruntime's pre-packing (about 2 s at 1M x 512) and ``G * D`` bytes of
    int8 codes, plus onnxruntime's packed copy of them.
    ``threads`` is onnxruntime's intra-op thread count (``None``: its default).
    """

    def __init__(self, gallery: np.ndarray, threads: int | None = None):
        self.gallery = np.ascontiguousarray(gallery, dtype=np.float32)
        if self.gallery.ndim != 2:
            raise ValueError(f"gallery must be (G, D), got shape {self.gallery.shape}")
        size, dim = self.gallery.shape
        self._codes_t = np.empty((dim, size), dtype=np.int8)  # kept alive: the session reads it in place
        self.scales = np.empty(size, dtype=np.float32)
        self.max_error = self.max_code_norm = 0.0
        for start in range(0, size, BUILD_ROWS):
            codes, scales, errors = quantize_rows(self.gallery[start : start + BUILD_ROWS])
            self._codes_t[:, start : start + len(codes)] = codes.T
            self.scales[start : start + len(codes)] = scales
            norms = scales * np.linalg.norm(codes.astype(np.float32), axis=1)
            self.max_error = max(self.max_error, float(errors.max()))
            self.max_code_norm = max(self.max_code_norm, float(norms.max()))
        self._session = _int8_matmul_session(self._codes_t, threads) if size else None

    def __len__(self) -> int:
        return self.gallery.shape[0]

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar gallery rows of every query, best first: as ``topk_search``.

        ``queries`` ``(Q, D)`` are L2-normalised. Returns float32 ``(Q, k)``
        cosine similarities and int64 ``(Q, k)`` indices, ``-inf`` / ``-1``
        past the gallery's end; ``exclude[q]`` is a row query ``q`` must not match, or -1.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1:] != self.gallery.shape[1:]:
            raise ValueError(f"query shape {queries.shape} does not fit gallery {self.gallery.shape}")
        if k < 1:
            raise ValueError("k must be >= 1")
        if len(queries) > SCAN_QUERIES or self._session is None:
            return topk_search(queries, self.gallery, k, exclude=exclude)
        codes, scales, errors = quantize_rows(queries)
        approx = self._session.run(None, {"query": (codes.astype(np.int16) + 128).astype(np.uint8)})[0]
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        indices = np.full((len(queries), k), -1, dtype=np.int64)
        for row, query in enumerate(queries):
            candidates = self._candidates(approx[row], scales[row], errors[row], query, k,
                                          -1 if exclude is None else int(exclude[row]))  # fmt: skip
            exact = self.gallery[candidates] @ query
            order = np.argsort(-exact, kind="stable")[:k]
            scores[row, : len(order)], indices[row, : len(order)] = exact[order], candidates[order]
        return scores, indices

    def _candidates(self, products: np.ndarray, query_scale: float, query_error: float, query: np.ndarray,
                    k: int, excluded: int) -> np.ndarray:  # fmt: skip
        """Row indices whose exact score may be in the top-k: approximate score >= a_k - 2b (module docstring).

        ``products`` int32 ``(G,)`` are the code dot products of one query with every row."""
        approx = products.astype(np.float32)
        approx *= self.scales
        approx *= np.float32(query_scale)  # (G,) q̂ · ĝ
        if 0 <= excluded < approx.shape[0]:
            approx[excluded] = -np.inf
        available = approx.shape[0] - (0 <= excluded < approx.shape[0])
        if available <= k:
            return np.flatnonzero(np.isfinite(approx))
        kth = approx.max() if k == 1 else np.partition(approx, approx.shape[0] - k)[approx.shape[0] - k]
        bound = float(np.linalg.norm(query)) * self.max_error + query_error * self.max_code_norm + FLOAT_SLACK
        return np.flatnonzero(approx >= kth - 2 * bound)
