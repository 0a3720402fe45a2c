"""Data-size ablation (paper Fig. 6): mean PSNR and SSIM against the number of training pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fastscan.baselines import method_colour, method_label, method_sort_key
from fastscan.report.style import _METRIC_AXIS_LABELS, _placeholder, _pyplot, _save

_NO_ABLATION = (
    "No data-size ablation results: the optional files results/ablation/{model}/metrics.tsv do not exist. "
    "List models under the config key 'ablation' and run the workflow to fill Table III and Fig. 6."
)


def plot_ablation(table: pd.DataFrame, out_png: str | Path) -> Path:
    """Mean PSNR and SSIM against the number of training pairs (paper Fig. 6).

    Parameters
    ----------
    table : pandas.DataFrame
        Table III (:func:`fastscan.metrics.ablation_table`).
    out_png : str or Path
        PNG to write; a labelled placeholder when `table` is empty.

    Returns
    -------
    Path
        `out_png`.

    Notes
    -----
    One row of panels per (ablation, sample): learned methods as lines with
    error bars (sample SD over test images) at each training-set size on a
    logarithmic axis; methods without a number of pairs (interpolation
    baselines, classical cascade) as dashed horizontal lines at their mean.
    """
    if table.empty:
        return _placeholder(out_png, _NO_ABLATION)
    plt = _pyplot()
    from matplotlib.lines import Line2D

    blocks = list(table.groupby(["ablation", "sample"], sort=True))
    fig, axes = plt.subplots(len(blocks), 2, figsize=(10, 3.6 * len(blocks)), squeeze=False, layout="constrained")
    handles: dict[str, Any] = {}
    for row, ((ablation, sample), block) in zip(axes, blocks, strict=True):
        sized = block[block["pairs"].notna()]
        all_positive = bool(len(sized)) and bool((sized["pairs"] > 0).all())
        for ax, metric in zip(row, ("psnr", "ssim"), strict=True):
            for method in sorted(block["method"].unique(), key=method_sort_key):
                part = block[block["method"] == method]
                colour = method_colour(method)
                if part["pairs"].isna().all():
                    mean = float(part[f"{metric}_mean"].iloc[0])
                    if np.isfinite(mean):
                        ax.axhline(mean, color=colour, linestyle="--", linewidth=1.3)
                        handles.setdefault(method, Line2D([], [], color=colour, linestyle="--", label=method_label(method)))
                    continue
                part = part[part["pairs"].notna()].sort_values("pairs")
                x = part["pairs"].to_numpy(dtype=np.float64)
                y = part[f"{metric}_mean"].to_numpy(dtype=np.float64)
                err = np.nan_to_num(part[f"{metric}_sd"].to_numpy(dtype=np.float64))
                ax.errorbar(x, y, yerr=err, color=colour, marker="o", markersize=4, capsize=3, linewidth=1.5)
                handles.setdefault(method, Line2D([], [], color=colour, marker="o", label=method_label(method)))
            if all_positive:
                ax.set_xscale("log")
            ax.set_xlabel("Training pairs (LR/HR tiles)" + (", log scale" if all_positive else ""))
            ax.set_ylabel(_METRIC_AXIS_LABELS[metric])
            ax.set_title(f"{ablation} · {sample}", fontsize=10)
            ax.grid(alpha=0.3, which="both")
    ordered = [handles[m] for m in sorted(handles, key=method_sort_key)]
    axes[0, 1].legend(handles=ordered, fontsize=7, loc="best")
    return _save(fig, out_png)
