"""Benchmark of ffem's similarity search: leave-one-out Recall@1 against the machine's own matmul rate.

For N = 10k and 100k random 512-d unit vectors (N/10 identities, each vector
a noisy copy of its identity's centre, so Recall@1 is a real number), every
vector queries all the others through ``retrieval.evaluate_retrieval``
(chunked float32 matmul + running top-1). Reported: seconds, GFLOP/s of the
search (2 N^2 D flops), the GFLOP/s of plain ``numpy.matmul`` on the same
block shapes measured in the same run, their ratio (goal >= 0.7), and peak
memory (tracemalloc peak of the search's own allocations, and the process's
peak RSS). The full run also searches a 1M x 512 gallery with 4096 queries to
show the memory bound, and compares faiss (``IndexFlatIP``) when importable.

Search at a million (``--million``, also part of the full run): on a
1,000,000 x 512 float32 gallery, the single-query latency (median of 30
queries, top-5) and the 1,000-query throughput (queries/s, top-5) of
``inference.search.topk_search``, beside faiss's exact ``IndexFlatIP`` on the
same vectors in the same run (``pip install faiss-cpu``, the ``bench``
extra), and the single-query latency of ``inference.exact_index.ExactIndex``
(int8 scan + float32 re-rank, same answers; its build time and memory too).
Goals: throughput >= faiss flat, latency <= 50 ms on 2 cores.

    .venv/bin/python bench/eval.py            # 10k, 100k, 1M-gallery
    .venv/bin/python bench/eval.py --quick    # 10k only
    .venv/bin/python bench/eval.py --million  # the 1M latency / throughput comparison only
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.reference import reference_line  # noqa: E402
from ffem_cli.evaluate.retrieval import evaluate_retrieval  # noqa: E402
from ffem_cli.inference.exact_index import ExactIndex  # noqa: E402
from ffem_cli.inference.search import DEFAULT_BLOCK_BYTES, _block_sizes, topk_search  # noqa: E402

DIM = 512


def clustered(n: int, dim: int, seed: int, noise: float = 2.5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` unit vectors in ``n // 10`` identities; ``noise`` sets how often the nearest is another identity."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, max(n // 10, 1), n)
    centres = rng.standard_normal((max(n // 10, 1), dim), dtype=np.float32)
    x = centres[labels] + noise * rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


def matmul_rate(rows: int, cols: int, dim: int, seconds: float = 3.0) -> float:
    """GFLOP/s of ``numpy.matmul`` (rows x dim) @ (dim x cols) float32, output buffer reused."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, dim), dtype=np.float32)
    b = rng.standard_normal((cols, dim), dtype=np.float32)
    out = np.empty((rows, cols), dtype=np.float32)
    np.matmul(a, b.T, out=out)  # warm up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        np.matmul(a, b.T, out=out)
        calls += 1
    return 2.0 * rows * cols * dim * calls / (time.perf_counter() - start) / 1e9


def bench_recall(n: int) -> dict:
    x, labels = clustered(n, DIM, seed=n)
    tracemalloc.start()
    start = time.perf_counter()
    result = evaluate_retrieval(x, labels, ks=(1,))
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    q_block, g_block = _block_sizes(n, n, DEFAULT_BLOCK_BYTES)
    flops = 2.0 * result.num_queries * n * DIM
    return {"n": n, "recall@1": result.metrics["recall@1"], "seconds": seconds, "gflops": flops / seconds / 1e9,
            "peak_mib": peak / 2**20, "blocks": (q_block, g_block)}  # fmt: skip


def million_gallery(gallery_size: int = 1_000_000) -> np.ndarray:
    """``gallery_size`` random unit 512-d float32 vectors (seeded)."""
    rng = np.random.default_rng(7)
    gallery = np.empty((gallery_size, DIM), dtype=np.float32)
    for start in range(0, gallery_size, 100_000):  # fill in chunks to keep the float64 temporaries small
        chunk = rng.standard_normal((min(100_000, gallery_size - start), DIM), dtype=np.float32)
        gallery[start : start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return gallery


def bench_million(gallery: np.ndarray, queries: int = 4096) -> dict:
    rng = np.random.default_rng(8)
    gallery_size = len(gallery)
    q = gallery[:queries] + 0.05 * rng.standard_normal((queries, DIM), dtype=np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    tracemalloc.start()
    start = time.perf_counter()
    _, indices = topk_search(q, gallery, 5)
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"gallery_gib": gallery.nbytes / 2**30, "seconds": seconds, "gflops": 2.0 * queries * gallery_size * DIM / seconds / 1e9,
            "search_peak_mib": peak / 2**20, "found_self": float(np.mean(indices[:, 0] == np.arange(queries)))}  # fmt: skip


def noisy_queries(gallery: np.ndarray, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(gallery), count, replace=False)
    q = gallery[picks] + 0.05 * rng.standard_normal((count, DIM), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True), picks


def latency_and_throughput(search, gallery: np.ndarray, singles: int = 30, batch: int = 1000) -> dict:
    """Median single-query seconds and queries/s of a batch for ``search(queries) -> indices (Q, 5)``."""
    single_q, single_truth = noisy_queries(gallery, singles, seed=11)
    search(single_q[:1])  # warm up
    times = []
    found = 0
    for q, truth in zip(single_q, single_truth, strict=True):
        start = time.perf_counter()
        indices = search(q[None])
        times.append(time.perf_counter() - start)
        found += int(indices[0, 0] == truth)
    batch_q, batch_truth = noisy_queries(gallery, batch, seed=12)
    start = time.perf_counter()
    indices = search(batch_q)
    seconds = time.perf_counter() - start
    found += int(np.sum(indices[:, 0] == batch_truth))
    return {"latency_ms": 1000 * float(np.median(times)), "qps": batch / seconds, "found": found / (singles + batch)}


def bench_million_search(gallery: np.ndarray) -> None:
    """ffem's searches vs faiss IndexFlatIP on the same 1M x 512 gallery: latency and throughput.

    ``topk_search`` is the float32 block scan every command uses; ``ExactIndex``
    is the build-once index for serving (int8 scan + exact float32 re-rank),
    checked here to return the float32 scan's answers."""
    blocks = latency_and_throughput(lambda q: topk_search(q, gallery, 5)[1], gallery)
    print(f"1M x {DIM} gallery, top-5, ffem topk_search (float32 BLAS blocks + argpartition): "
          f"single query {blocks['latency_ms']:.1f} ms (median of 30), 1,000 queries {blocks['qps']:.1f} queries/s, "
          f"true match first {blocks['found']:.3f}")  # fmt: skip
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    index = ExactIndex(gallery)
    build = time.perf_counter() - start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    exact = latency_and_throughput(lambda q: index.search(q, 5)[1], gallery)
    check_q, _ = noisy_queries(gallery, 30, seed=13)
    same = sum(np.array_equal(index.search(q[None], 5)[1], topk_search(q[None], gallery, 5)[1]) for q in check_q)
    print(f"  ffem ExactIndex (int8 scan + float32 re-rank): built in {build:.1f} s, peak RSS +{rss_after - rss_before:.2f} GiB; "
          f"single query {exact['latency_ms']:.1f} ms, 1,000 queries {exact['qps']:.1f} queries/s (float32 blocks), "
          f"top-5 identical to topk_search on {same}/30 queries")  # fmt: skip
    try:
        import faiss
    except ImportError:
        print("  faiss: not installed (pip install faiss-cpu, or the bench extra, to compare)")
        return
    flat = faiss.IndexFlatIP(DIM)
    flat.add(gallery)
    other = latency_and_throughput(lambda q: flat.search(q, 5)[1], gallery)
    print(f"  faiss {faiss.__version__} IndexFlatIP ({faiss.omp_get_max_threads()} threads): single query "
          f"{other['latency_ms']:.1f} ms, 1,000 queries {other['qps']:.1f} queries/s, true match first {other['found']:.3f}")  # fmt: skip
    print(f"  throughput ffem / faiss: {blocks['qps'] / other['qps']:.2f} (goal >= 1); single-query latency: "
          f"ExactIndex {exact['latency_ms']:.1f} ms, float32 scan {blocks['latency_ms']:.1f} ms (goal <= 50 ms), "
          f"faiss / ExactIndex latency {other['latency_ms'] / exact['latency_ms']:.2f}")  # fmt: skip


def bench_faiss(n: int) -> dict | None:
    try:
        import faiss
    except ImportError:
        return None
    x, labels = clustered(n, DIM, seed=n)
    start = time.perf_counter()
    index = faiss.IndexFlatIP(DIM)
    index.add(x)
    _, found = index.search(x, 2)  # the first hit is (almost always) the query itself
    seconds = time.perf_counter() - start
    nearest = np.where(found[:, 0] == np.arange(n), found[:, 1], found[:, 0])
    counts = np.bincount(labels)
    queries = counts[labels] > 1
    return {"n": n, "seconds": seconds, "recall@1": float(np.mean(labels[nearest][queries] == labels[queries]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k only")
    parser.add_argument("--million", action="store_true", help="only the 1M-gallery latency / throughput comparison")
    args = parser.parse_args()
    print(reference_line())
    if args.million:
        print(f"ffem search at a million: {DIM}-d float32, {os.cpu_count()} CPUs, numpy {np.__version__}")
        bench_million_search(million_gallery())
        return
    sizes = [10_000] if args.quick else [10_000, 100_000]
    print(f"ffem search benchmark: {DIM}-d float32, {os.cpu_count()} CPUs, numpy {np.__version__}")
    q_block, g_block = _block_sizes(sizes[-1], sizes[-1], DEFAULT_BLOCK_BYTES)
    q_small, g_small = _block_sizes(10_000, 10_000, DEFAULT_BLOCK_BYTES)
    shapes = {(q_small, g_small), (q_block, g_block)}
    rates = {shape: matmul_rate(*shape, DIM) for shape in shapes}
    for (rows, cols), rate in rates.items():
        print(f"numpy matmul ({rows}x{DIM}) @ ({DIM}x{cols}): {rate:8.1f} GFLOP/s")
    for n in sizes:
        r = bench_recall(n)
        rate = rates[r["blocks"]]
        print(f"leave-one-out Recall@1, N={n:>7,}: recall@1 {r['recall@1']:.4f}  {r['seconds']:7.2f} s  "
              f"{r['gflops']:7.1f} GFLOP/s = {r['gflops'] / rate:.2f} x matmul  search peak {r['peak_mib']:.0f} MiB")  # fmt: skip
        f = bench_faiss(n)
        if f is None:
            print("  faiss: not installed (pip install faiss-cpu to compare)")
        else:
            print(f"  faiss IndexFlatIP, N={n:,}: {f['seconds']:.2f} s (recall@1 {f['recall@1']:.4f}) = "
                  f"{r['seconds'] / f['seconds']:.2f} x ffem's speed")  # fmt: skip
    if not args.quick:
        gallery = million_gallery()
        bench_million_search(gallery)
        m = bench_million(gallery)
        print(f"1M x {DIM} gallery ({m['gallery_gib']:.2f} GiB), 4096 queries, top-5: {m['seconds']:.1f} s, "
              f"{m['gflops']:.1f} GFLOP/s, search peak {m['search_peak_mib']:.0f} MiB beyond the gallery, "
              f"self found first {m['found_self']:.3f}")  # fmt: skip
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"process peak RSS: {peak_rss:.0f} MiB")


if __name__ == "__main__":
    main()
