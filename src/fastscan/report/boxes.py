"""Box plots of one metric per method (paper Fig. 5), from the per-image metrics table."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fastscan.baselines import method_colour, method_label, method_sort_key
from fastscan.report.style import _METRIC_AXIS_LABELS, _placeholder, _pyplot, _save

if TYPE_CHECKING:
    from matplotlib.axes import Axes

logger = logging.getLogger(__name__)


def _finite_by_method(group: pd.DataFrame, methods: list[str], *, metric: str, where: str) -> list[np.ndarray]:
    """The finite values of `metric` of each method, in `methods` order; how many were dropped is logged."""
    data = []
    for method in methods:
        values = group.loc[group["method"] == method, metric].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size < values.size:
            logger.warning(
                "%s/%s: %d non-finite %s values not drawn",
                where,
                method,
                values.size - finite.size,
                metric,
            )
        data.append(finite)
    return data


def _draw_box_panel(ax: Axes, group: pd.DataFrame, *, metric: str, title: tuple[str, str], rng: np.random.Generator) -> None:
    """One (model, sample) panel: a box per method in its colour, the images as jittered points."""
    model, sample = title
    methods = sorted(group["method"].unique(), key=method_sort_key)
    data = _finite_by_method(group, methods, metric=metric, where=f"{model}/{sample}")
    ticks = [f"{method_label(method)}\n(n={values.size})" for method, values in zip(methods, data, strict=True)]
    positions = np.arange(1, len(methods) + 1)
    boxes = ax.boxplot(
        data,
        positions=positions,
        widths=0.6,
        patch_artist=True,
        showfliers=False,
        medianprops={"color": "black", "linewidth": 1.5},
    )
    for patch, method in zip(boxes["boxes"], methods, strict=True):
        patch.set_facecolor(method_colour(method))
        patch.set_alpha(0.75)
    for pos, values in zip(positions, data, strict=True):
        jitter = rng.uniform(-0.15, 0.15, size=values.size)
        ax.scatter(pos + jitter, values, s=8, color="black", alpha=0.45, linewidths=0, zorder=3, rasterized=True)
    ax.set_xticks(positions, ticks, rotation=30, ha="right", fontsize=8)
    ax.set_title(f"{model} · {sample}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def plot_metric_boxes(df: pd.DataFrame, out_png: str | Path, *, metric: str) -> Path:
    """Box plots of one metric per method (paper Fig. 5).

    One panel per (model, sample) present in `df`; within a panel, one box per
    method in :data:`fastscan.baselines.METHODS` order with the method's fixed
    colour, the individual images overlaid as points, and the number of images
    in each tick label.

    Parameters
    ----------
    df : pandas.DataFrame
        Per-image metrics (:data:`fastscan.metrics.METRIC_COLUMNS`).
    out_png : str or Path
        PNG to write.
    metric : {"psnr", "ssim", "nrmse"}
        Column to plot.

    Returns
    -------
    Path
        `out_png`.

    Notes
    -----
    Non-finite values (the infinite PSNR of an exact reconstruction) cannot be
    drawn; they are left out, the ``n`` in the tick label counts only what is
    drawn, and a warning is logged.
    """
    if metric not in _METRIC_AXIS_LABELS:
        raise ValueError(f"metric must be one of {sorted(_METRIC_AXIS_LABELS)}, got {metric!r}")
    missing = [c for c in ("model", "sample", "method", metric) if c not in df.columns]
    if missing:
        raise ValueError(f"plot_metric_boxes: metrics table lacks columns {missing}")
    if df.empty:
        return _placeholder(out_png, f"No {metric.upper()} values to plot.")

    plt = _pyplot()
    panels = list(df.groupby(["model", "sample"], sort=True))
    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    n_methods = df["method"].nunique()
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(max(3.5, 0.9 * n_methods + 1.2) * ncols, 3.8 * nrows),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    rng = np.random.default_rng(0)  # jitter only; fixed so reruns give identical figures
    for ax, ((model, sample), group) in zip(axes.flat, panels, strict=False):
        _draw_box_panel(ax, group, metric=metric, title=(model, sample), rng=rng)
    for ax in axes[:, 0]:
        ax.set_ylabel(_METRIC_AXIS_LABELS[metric])
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    return _save(fig, out_png)
