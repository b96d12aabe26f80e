"""Evaluation pictures as PNG files (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_png(path: Path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    """ROC curves ``{label: (fpr, tpr)}``: linear axes on the left, log false-accept rate on the right."""
    plt = _pyplot()
    figure, (linear, log) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=100)
    for label, (fpr, tpr) in curves.items():
        linear.plot(fpr, tpr, label=label, linewidth=1.5)
        positive = fpr > 0
        log.plot(fpr[positive], tpr[positive], label=label, linewidth=1.5)
    linear.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    linear.set(xlabel="false accept rate", ylabel="true accept rate", xlim=(0, 1), ylim=(0, 1.01), title="ROC")
    log.set_xscale("log")
    log.set(xlabel="false accept rate (log)", ylabel="true accept rate", ylim=(0, 1.01), title="ROC, low FAR")
    for axis in (linear, log):
        axis.grid(alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def group_bars_png(
    path: Path,
    groups: Sequence[str],
    series: Mapping[str, tuple[Sequence[float], Sequence[float] | None]],
    title: str,
    ylabel: str = "score",
) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per ``series`` ``{name: (values, errors)}``."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(groups) * len(series)), 4.5), dpi=100)
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (name, (values, errors)) in enumerate(series.items()):
        offset = (i - (len(series) - 1) / 2) * width
        bars = axis.bar(x + offset, values, width, yerr=errors, capsize=4, label=name)
        axis.bar_label(bars, labels=[f"{v:.3f}" for v in values], fontsize=8, padding=2)
    axis.set_xticks(x, groups)
    axis.set(ylabel=ylabel, ylim=(0, 1.2), title=title)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="upper right", ncol=len(series), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def score_histogram_png(
    path: Path, scores: Mapping[str, np.ndarray], title: str, xlabel: str = "cosine similarity"
) -> None:
    """Overlaid histograms of similarity scores ``{label: scores}`` on shared bins over [-1, 1]."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4.5), dpi=100)
    bins = np.linspace(-1.0, 1.0, 81)
    for label, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        axis.hist(values, bins=bins, alpha=0.55, label=f"{label} ({values.size})")
    axis.set(xlabel=xlabel, ylabel="queries", title=title)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def det_png(
    path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], points: Mapping[str, tuple[float, float]], title: str
) -> None:
    """DET curves ``{label: (false-accept rate, false-reject rate)}`` on normal-deviate axes, with marked ``points``.

    ``path``: a file name or a binary file object. Rates of exactly 0 or 1 fall off the axes.
    """
    from scipy.stats import norm

    plt = _pyplot()
    ticks = np.array([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5])
    low = 1e-7
    figure, axis = plt.subplots(figsize=(6.5, 5.5), dpi=100)
    for label, (far, frr) in curves.items():
        far, frr = np.asarray(far, np.float64), np.asarray(frr, np.float64)
        shown = (far > 0) & (frr > 0) & (far < 1) & (frr < 1)
        axis.plot(norm.ppf(far[shown]), norm.ppf(frr[shown]), label=label, linewidth=1.5)
    for name, (far, frr) in points.items():
        x, y = norm.ppf(np.clip([far, frr], low, 1 - low))
        axis.plot(x, y, "o", markersize=5)
        axis.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    deviates = norm.ppf(ticks)
    labels = [f"{t:g}" for t in ticks]
    axis.set_xticks(deviates, labels)
    axis.set_yticks(deviates, labels)
    axis.set(xlim=(norm.ppf(low), norm.ppf(0.6)), ylim=(norm.ppf(low), norm.ppf(0.6)),
             xlabel="false accept rate", ylabel="false reject rate", title=title)  # fmt: skip
    axis.grid(alpha=0.3)
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def dir_fpir_png(path, curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str) -> None:
    """Open-set curves ``{label: (FPIR, DIR)}``: detection and identification rate against false-positive identification rate (log)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.8), dpi=100)
    for label, (fpir, dir_) in curves.items():
        shown = np.asarray(fpir) > 0
        axis.plot(np.asarray(fpir)[shown], np.asarray(dir_)[shown], label=label, linewidth=1.5, drawstyle="steps-post")
    axis.set_xscale("log")
    axis.set(xlabel="false positive identification rate (FPIR, log)", ylabel="detection and identification rate (DIR)",
             ylim=(0, 1.01), title=title)  # fmt: skip
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
