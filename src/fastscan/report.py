"""Figures and tables embedded in the Snakemake HTML report.

Every figure uses the method order and colours of :mod:`fastscan.baselines`, so
a method looks the same wherever it appears. Figures are written with the Agg
backend (no display needed on cluster nodes) and, like the tables, to a
temporary sibling that is renamed into place.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import ndimage

from fastscan.atomic import atomic_path, write_text
from fastscan.baselines import (
    METHOD_COLOURS,
    method_colour,
    method_label,
    method_sort_key,
    upsample,
)
from fastscan.hallucination import DEFAULT_K, departure_map, hallucination_table
from fastscan.metrics import (
    ablation_table,
    generalisation_table,
    psnr,
    read_metrics_tsv,
    read_optional_metrics,
    ssim,
    summarise,
    write_tsv,
)
from fastscan.photons import curve_from_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "REPORT_FILES",
    "plot_ablation",
    "plot_example_panels",
    "plot_hallucination_panels",
    "plot_metric_boxes",
    "plot_slide_thumbnails",
    "plot_training_curves",
    "registration_qc_table",
    "table_html",
    "write_report_figures",
]

logger = logging.getLogger(__name__)

#: Files :func:`write_report_figures` writes into its ``out_dir``, in the order returned.
REPORT_FILES: tuple[str, ...] = (
    "summary.tsv",
    "summary.html",
    "psnr_boxes.png",
    "ssim_boxes.png",
    "examples.png",
    "hallucination.png",
    "hallucination.tsv",
    "hallucination.html",
    "ablation.tsv",
    "ablation.html",
    "ablation.png",
    "generalisation.tsv",
    "generalisation.html",
    "training_curves.png",
    "registration_qc.html",
    "slides.png",
)

_METRIC_AXIS_LABELS: dict[str, str] = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM (unitless)",
    "nrmse": "NRMSE (unitless)",
}

_STAGE_ORDER: tuple[str, ...] = ("mse", "critic", "gan", "finetune")
_STAGE_COLOURS: dict[str, str] = {
    "mse": METHOD_COLOURS["mse"],
    "critic": "#0072B2",
    "gan": METHOD_COLOURS["gan"],
    "finetune": METHOD_COLOURS["finetuned"],
}
_STAGE_LABELS: dict[str, str] = {
    "mse": "Generator (MSE)",
    "critic": "Critic",
    "gan": "GAN",
    "finetune": "Fine-tuning",
}
_CURVE_COLUMNS: tuple[str, ...] = ("stage", "epoch", "train_loss", "valid_loss", "valid_psnr")
_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")

_MAX_EXAMPLE_ROWS = 3
_INSET_SIZE = 64
_INSET_FRACTION = 0.42
_DPI = 150


def _pyplot() -> Any:
    # Report jobs run on headless nodes; Agg must be chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, out_png: str | Path) -> Path:
    plt = _pyplot()
    out = Path(out_png)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    logger.info("wrote %s", out)
    return out


def _write_text(text: str, path: Path) -> Path:
    write_text(path, text)
    logger.info("wrote %s", path)
    return path


def _placeholder(out_png: str | Path, message: str) -> Path:
    # The rule declares every figure as an output, so missing data still yields a (labelled) file.
    plt = _pyplot()
    import textwrap

    fig, ax = plt.subplots(figsize=(6.5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, textwrap.fill(message, 75), ha="center", va="center", fontsize=9)
    logger.warning("%s: %s", out_png, message)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- box plots


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
        methods = sorted(group["method"].unique(), key=method_sort_key)
        data, ticks = [], []
        for method in methods:
            values = group.loc[group["method"] == method, metric].to_numpy(dtype=np.float64)
            finite = values[np.isfinite(values)]
            if finite.size < values.size:
                logger.warning(
                    "%s/%s/%s: %d non-finite %s values not drawn",
                    model,
                    sample,
                    method,
                    values.size - finite.size,
                    metric,
                )
            data.append(finite)
            ticks.append(f"{method_label(method)}\n(n={finite.size})")
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
    for ax in axes[:, 0]:
        ax.set_ylabel(_METRIC_AXIS_LABELS[metric])
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- example panels


def _brightest_variance_region(image: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """Top-left corner and size of the `size` x `size` window of largest intensity variance."""
    img = np.asarray(image, dtype=np.float64)
    size = max(1, min(size, *img.shape))
    mean = ndimage.uniform_filter(img, size=size, mode="reflect")
    mean_sq = ndimage.uniform_filter(img * img, size=size, mode="reflect")
    var = mean_sq - mean * mean
    # uniform_filter centres the window at size // 2; keep only windows fully inside the image.
    half = size // 2
    valid = var[half : img.shape[0] - size + half + 1, half : img.shape[1] - size + half + 1]
    y0, x0 = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y0), int(x0), size, size


def _nice_bar_length(width_um: float) -> float:
    """Largest 1-2-5 length not exceeding a quarter of the image width."""
    target = width_um / 4
    best = 0.0
    for decade in range(-2, 5):
        for m in (1, 2, 5):
            length = m * 10.0**decade
            if length <= target:
                best = length
    return best


def _store_name(path: Path, attrs: dict[str, Any]) -> str:
    parts = [str(attrs[k]) for k in ("sample", "session", "fov") if k in attrs]
    if len(parts) == 3:
        return " / ".join(parts)
    # Restored stores live at .../{sample}/{session}/{fov}.zarr.
    tail = [*path.parts[-3:-1], path.name.removesuffix(".zarr")]
    return " / ".join(tail)


def _load_example(path: Path, frame_index: int) -> dict[str, Any]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    nested = dict(group.attrs).get("fastscan", {})
    attrs = dict(nested) if isinstance(nested, dict) else {}
    lr_arr = group["lr"]
    n_frames = lr_arr.shape[0]
    if not -n_frames <= frame_index < n_frames:
        raise ValueError(f"{path}: frame_index {frame_index} out of range for {n_frames} restored frames")
    hr = np.asarray(group["hr"][...], dtype=np.float64)
    lr = np.asarray(lr_arr[frame_index], dtype=np.float64)
    scale = int(attrs.get("scale", hr.shape[0] // lr.shape[0]))
    if (lr.shape[0] * scale, lr.shape[1] * scale) != hr.shape:
        raise ValueError(f"{path}: 'lr' frame {lr.shape} upsampled by scale {scale} does not match 'hr' {hr.shape}")
    images: dict[str, np.ndarray] = {"bilinear": upsample(lr, scale=scale, order=1).astype(np.float64)}
    for method in attrs.get("methods", []):
        if method not in group:
            raise ValueError(f"{path}: array {method!r} listed in fastscan.methods is missing")
        image = np.asarray(group[method][frame_index], dtype=np.float64)
        if image.shape != hr.shape:
            raise ValueError(f"{path}: array {method!r} frame shape {image.shape} differs from 'hr' {hr.shape}")
        images[str(method)] = image
    frames = list(attrs.get("frames", range(n_frames)))
    pixel = attrs.get("hr_pixel_size_um")
    return {
        "name": _store_name(path, attrs),
        "frame": int(frames[frame_index]),
        # Nearest-neighbour keeps the LR pixels visible, which is the point of showing the input.
        "input": np.kron(lr, np.ones((scale, scale))),
        "lr_shape": lr.shape,
        "hr": hr,
        "images": images,
        "pixel_um": (float(pixel[0]), float(pixel[1])) if pixel is not None else None,
    }


def _inset_bounds(region: tuple[int, int, int, int], shape: tuple[int, int]) -> list[float]:
    # Put the magnified view in the corner farthest from the region it magnifies, so it hides nothing of it.
    y0, x0, h, w = region
    cy, cx = (y0 + h / 2) / shape[0], (x0 + w / 2) / shape[1]
    left = 1 - _INSET_FRACTION if cx < 0.5 else 0.0
    bottom = 0.0 if cy < 0.5 else 1 - _INSET_FRACTION  # image rows run downwards
    return [left, bottom, _INSET_FRACTION, _INSET_FRACTION]


def _draw_scale_bar(ax: Axes, *, pixel_um: tuple[float, float], shape: tuple[int, int], right: bool) -> None:
    from matplotlib.patches import Rectangle

    width_um = shape[1] * pixel_um[1]
    length_um = _nice_bar_length(width_um)
    if length_um <= 0:
        return
    length_px = length_um / pixel_um[1]
    margin = 0.04 * shape[1]
    height = max(1.0, 0.015 * shape[0])
    x = shape[1] - margin - length_px if right else margin
    y = shape[0] - margin - height
    ax.add_patch(Rectangle((x - 0.5, y - 0.5), length_px, height, color="white", linewidth=0))
    label = f"{length_um:g} µm"
    ax.text(x + length_px / 2 - 0.5, y - 0.5 - height, label, color="white", ha="center", va="bottom", fontsize=7)


def _imshow_with_inset(
    ax: Axes,
    image: np.ndarray,
    *,
    region: tuple[int, int, int, int],
    bounds: list[float],
    vmin: float,
    vmax: float,
    cmap: str = "gray",
    overlay: np.ndarray | None = None,
) -> Any:
    """Show `image` with a yellow box at `region` and that region magnified in an inset."""
    from matplotlib.patches import Rectangle

    y0, x0, h, w = region
    shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="antialiased")
    if overlay is not None:
        ax.imshow(overlay, interpolation="nearest")
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, edgecolor="yellow", linewidth=0.8))
    axins = ax.inset_axes(bounds)
    axins.imshow(image[y0 : y0 + h, x0 : x0 + w], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if overlay is not None:
        axins.imshow(overlay[y0 : y0 + h, x0 : x0 + w], interpolation="nearest")
    axins.set_xticks([])
    axins.set_yticks([])
    for spine in axins.spines.values():
        spine.set_edgecolor("yellow")
        spine.set_linewidth(1.0)
    return shown


def _check_region(region: tuple[int, int, int, int], shape: tuple[int, ...], name: str) -> None:
    y0, x0, h, w = region
    if y0 < 0 or x0 < 0 or h < 1 or w < 1 or y0 + h > shape[0] or x0 + w > shape[1]:
        raise ValueError(f"inset {region} does not fit the HR image {shape} of {name}")


def plot_example_panels(
    restored_zarr_paths: Sequence[str | Path],
    out_png: str | Path,
    *,
    frame_index: int = 0,
    inset: tuple[int, int, int, int] | None = None,
    max_rows: int = _MAX_EXAMPLE_ROWS,
) -> Path:
    """Example restorations side by side, with a magnified inset.

    Rows are FOVs (the first `max_rows` of `restored_zarr_paths`); columns are the
    LR input (nearest-neighbour upsampled, so its pixels stay visible),
    bilinear, each learned method of the store in
    :data:`fastscan.baselines.METHODS` order, and the HR ground truth.

    Parameters
    ----------
    restored_zarr_paths : sequence of str or Path
        Restored FOV stores (layout in ``docs/architecture.md``).
    out_png : str or Path
        PNG to write.
    frame_index : int, optional
        Position among the store's restored frames (not the original frame
        number, which is read from ``fastscan.frames`` and shown).
    inset : tuple of int, optional
        ``(y0, x0, height, width)`` of the magnified region in HR pixels, the
        same for every row. By default each row uses the 64 x 64 HR window of
        largest intensity variance (the most structured one; in fluorescence
        that is where bright structures meet background).
    max_rows : int, optional
        Most FOVs shown.

    Returns
    -------
    Path
        `out_png`.

    Notes
    -----
    Every panel of a row shares one grey scale, the 0.5th to 99.5th
    percentiles of that row's HR target, so brightness differences between
    methods are real. Panel titles give PSNR (dB) and SSIM against the HR
    target on the normalised scale (``data_range=1``). A scale bar is drawn on
    the ground-truth panel when the store has ``fastscan.hr_pixel_size_um``
    (``[y, x]``).
    """
    paths = [Path(p) for p in restored_zarr_paths]
    if len(paths) > max_rows:
        logger.info("showing the first %d of %d restored FOVs", max_rows, len(paths))
        paths = paths[:max_rows]
    if not paths:
        return _placeholder(out_png, "No restored FOVs to show.")
    examples = [_load_example(p, frame_index) for p in paths]
    methods = sorted({m for ex in examples for m in ex["images"]}, key=method_sort_key)
    columns = ["input", *methods, "target"]

    plt = _pyplot()

    fig, axes = plt.subplots(
        len(examples),
        len(columns),
        figsize=(2.5 * len(columns), 2.85 * len(examples)),
        squeeze=False,
        layout="constrained",
    )
    for row, ex in zip(axes, examples, strict=True):
        hr = ex["hr"]
        vmin, vmax = (float(v) for v in np.percentile(hr, [0.5, 99.5]))
        if vmax <= vmin:
            vmax = vmin + 1e-6
        if inset is not None:
            region = tuple(int(v) for v in inset)
        else:
            # 64 px on a 512 px target; small images get a quarter of their side so the inset still magnifies.
            region = _brightest_variance_region(hr, min(_INSET_SIZE, min(hr.shape) // 4))
        _check_region(region, hr.shape, ex["name"])
        bounds = _inset_bounds(region, hr.shape)
        shown = {"input": ex["input"], **ex["images"], "target": hr}
        for ax, column in zip(row, columns, strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            if column not in shown:
                # An all-NaN image keeps the panel the same size and aspect as its neighbours.
                ax.imshow(np.full(hr.shape, np.nan), cmap="gray")
                ax.set_facecolor("#eeeeee")
                ax.text(0.5, 0.5, "not restored", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                ax.set_title(f"{method_label(column)}\n", fontsize=8)
                continue
            image = shown[column]
            _imshow_with_inset(ax, image, region=region, bounds=bounds, vmin=vmin, vmax=vmax)
            if column == "input":
                title = f"Input (LR {ex['lr_shape'][0]}×{ex['lr_shape'][1]})\nnearest-neighbour"
            elif column == "target":
                title = "Ground truth (HR)\n"
                if ex["pixel_um"] is not None:
                    # Keep the bar off the inset when the inset sits in a bottom corner.
                    bar_right = bounds[1] == 0.0 and bounds[0] == 0.0
                    _draw_scale_bar(ax, pixel_um=ex["pixel_um"], shape=hr.shape, right=bar_right)
            else:
                title = f"{method_label(column)}\n{psnr(image, hr):.2f} dB · SSIM {ssim(image, hr):.3f}"
            ax.set_title(title, fontsize=8)
            if column not in ("input", "target"):
                # Titles stay black for legibility; the frame carries the method's colour as in the box plots.
                for spine in ax.spines.values():
                    spine.set_edgecolor(method_colour(column))
                    spine.set_linewidth(2.0)
        row[0].set_ylabel(f"{ex['name']}\nframe {ex['frame']}", fontsize=8)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- hallucination panels

_FLAG_RGBA: tuple[float, float, float, float] = (0.0, 0.85, 1.0, 0.9)  # cyan: absent from magma and grey


def _most_flagged_region(flagged: np.ndarray, size: int) -> tuple[int, int, int, int] | None:
    """The `size` x `size` window holding the most flagged pixels (None if none is flagged)."""
    if not flagged.any():
        return None
    size = max(1, min(size, *flagged.shape))
    counts = ndimage.uniform_filter(flagged.astype(np.float64), size=size, mode="constant")
    half = size // 2
    valid = counts[half : flagged.shape[0] - size + half + 1, half : flagged.shape[1] - size + half + 1]
    y0, x0 = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y0), int(x0), size, size


def plot_hallucination_panels(
    restored_zarr_paths: Sequence[str | Path],
    out_png: str | Path,
    *,
    frame_index: int = 0,
    k: float = DEFAULT_K,
    noise: str = "residual",
    max_rows: int = _MAX_EXAMPLE_ROWS,
) -> Path:
    """Where the GAN departs from the MSE generator beyond the noise level.

    Rows are FOVs (the first `max_rows` stores holding both ``mse`` and
    ``gan``); columns are the LR input (nearest-neighbour), the MSE generator,
    the GAN, the map of ``|GAN - MSE|`` with the flagged pixels
    (:func:`fastscan.hallucination.departure_map`) in cyan, and the HR target.
    The magnified inset sits on the window with the most flagged pixels (the
    window of largest target variance if none is flagged), at the same place
    in every panel of a row.

    Parameters
    ----------
    restored_zarr_paths : sequence of str or Path
        Restored FOV stores (layout in ``docs/architecture.md``).
    out_png : str or Path
        PNG to write.
    frame_index : int, optional
        Position among the store's restored frames.
    k, noise : optional
        Threshold multiple and noise estimate of
        :func:`fastscan.hallucination.departure_map`.
    max_rows : int, optional
        Most FOVs shown.

    Returns
    -------
    Path
        `out_png`.
    """
    examples = []
    for path in (Path(p) for p in restored_zarr_paths):
        ex = _load_example(path, frame_index)
        if "mse" in ex["images"] and "gan" in ex["images"]:
            examples.append(ex)
        else:
            logger.info("%s: no 'mse' and 'gan' to compare; not in the departure figure", path)
        if len(examples) == max_rows:
            break
    if not examples:
        return _placeholder(out_png, "No restored FOVs with both the MSE generator and the GAN to compare.")

    plt = _pyplot()
    columns = ("input", "mse", "gan", "departure", "target")
    fig, axes = plt.subplots(
        len(examples),
        len(columns),
        figsize=(2.5 * len(columns) + 0.6, 2.85 * len(examples)),
        squeeze=False,
        layout="constrained",
    )
    for row, ex in zip(axes, examples, strict=True):
        hr = ex["hr"]
        mse, gan = ex["images"]["mse"], ex["images"]["gan"]
        result = departure_map(gan, mse, target=hr, k=k, noise=noise)
        vmin, vmax = (float(v) for v in np.percentile(hr, [0.5, 99.5]))
        if vmax <= vmin:
            vmax = vmin + 1e-6
        side = min(_INSET_SIZE, min(hr.shape) // 4)
        region = _most_flagged_region(result.flagged, side) or _brightest_variance_region(hr, side)
        bounds = _inset_bounds(region, hr.shape)
        overlay = np.zeros((*hr.shape, 4))
        overlay[result.flagged] = _FLAG_RGBA
        # The colour scale ends at twice the threshold so that the threshold sits mid-scale on every row.
        dmax = max(2 * result.threshold, 1e-6)
        for ax, column in zip(row, columns, strict=True):
            ax.set_xticks([])
            ax.set_yticks([])
            if column == "departure":
                shown = _imshow_with_inset(ax, result.difference, region=region, bounds=bounds, vmin=0.0, vmax=dmax, cmap="magma", overlay=overlay)
                away = f", {100 * result.flagged_away_share:.0f} % further from HR" if np.isfinite(result.flagged_away_share) else ""
                ax.set_title(
                    f"|GAN − MSE|, flagged (cyan) {100 * result.fraction_flagged:.2f} %\n"
                    f"> {result.threshold:.3f} = {k:g} × noise sd {result.noise_sd:.3f}{away}",
                    fontsize=7,
                )
                bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
                bar.set_label("|GAN − MSE| (normalised HR units)", fontsize=7)
                bar.ax.tick_params(labelsize=6)
                continue
            image = {"input": ex["input"], "target": hr}.get(column)
            if image is None:
                image = ex["images"][column]
            _imshow_with_inset(ax, image, region=region, bounds=bounds, vmin=vmin, vmax=vmax)
            if column == "input":
                title = f"Input (LR {ex['lr_shape'][0]}×{ex['lr_shape'][1]})\nnearest-neighbour"
            elif column == "target":
                title = "Ground truth (HR)\n"
                if ex["pixel_um"] is not None:
                    _draw_scale_bar(ax, pixel_um=ex["pixel_um"], shape=hr.shape, right=bounds[1] == 0.0 and bounds[0] == 0.0)
            else:
                title = f"{method_label(column)}\n{psnr(image, hr):.2f} dB · SSIM {ssim(image, hr):.3f}"
                for spine in ax.spines.values():
                    spine.set_edgecolor(method_colour(column))
                    spine.set_linewidth(2.0)
            ax.set_title(title, fontsize=8)
        row[0].set_ylabel(f"{ex['name']}\nframe {ex['frame']}", fontsize=8)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- training curves


def _read_curves(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype={"stage": str})
    missing = [c for c in _CURVE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: training-curve table lacks columns {missing}")
    for c in _CURVE_COLUMNS[1:]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _stage_colour(stage: str, extra: dict[str, str]) -> str:
    if stage in _STAGE_COLOURS:
        return _STAGE_COLOURS[stage]
    if stage not in extra:
        palette = ("#56B4E9", "#009E73", "#F0E442", "#999999")
        extra[stage] = palette[len(extra) % len(palette)]
    return extra[stage]


def _stage_rank(stage: str) -> tuple[int, str]:
    return (_STAGE_ORDER.index(stage), "") if stage in _STAGE_ORDER else (len(_STAGE_ORDER), stage)


def _curve_runs(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Group curve files by training run.

    Each stage writes its own file (``results/train/{model}/mse/curves.tsv``,
    ``.../critic/curves.tsv``, ``results/models/{model}/curves.tsv``); a file
    whose folder is named after a stage belongs to the run of the folder above.
    """
    runs: dict[str, list[Path]] = {}
    for path in paths:
        # The stage-1 and critic files live under results/train/, the GAN's under results/models/:
        # only the model's folder name ties them together.
        folder = path.parent.parent if path.parent.name in _STAGE_ORDER else path.parent
        runs.setdefault(folder.name, []).append(path)
    return runs


def plot_training_curves(curve_tsvs: Sequence[str | Path] | Mapping[str, Sequence[str | Path]], out_png: str | Path) -> Path:
    """Training and validation losses and validation PSNR of the training stages.

    Parameters
    ----------
    curve_tsvs : sequence of str or Path, or mapping
        Tab-separated tables with columns ``stage, epoch, train_loss,
        valid_loss, valid_psnr`` (one row per epoch; ``valid_psnr`` may be
        empty or NaN, e.g. for the critic). A mapping gives the files of each
        training run under its name; a sequence is grouped into runs by
        :func:`_curve_runs` (the stage folders of one model form one run).
        Several runs are told apart by marker shape.
    out_png : str or Path
        PNG to write.

    Returns
    -------
    Path
        `out_png`.

    Notes
    -----
    Within a run, the stages are laid end to end in the order mse, critic,
    gan (then any other), each occupying as many epochs as it has rows, so
    the x axis counts epochs over the whole schedule; stage colour is fixed
    and, for a single run, each stage's span is shaded and named. Losses use
    a log axis (symmetric log if a loss is not positive, as some GAN losses
    can be).
    """
    if isinstance(curve_tsvs, Mapping):
        runs = {str(name): [Path(p) for p in files] for name, files in curve_tsvs.items()}
    else:
        runs = _curve_runs([Path(p) for p in curve_tsvs])
    runs = {name: files for name, files in runs.items() if files}
    if not runs:
        return _placeholder(out_png, "No training curves to plot.")
    tables = [pd.concat([_read_curves(p) for p in files], ignore_index=True) for files in runs.values()]
    labels = list(runs) if len(runs) > 1 else [""]

    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    extra_colours: dict[str, str] = {}
    stages_seen: list[str] = []
    any_nonpositive = False
    for i, (df, _label) in enumerate(zip(tables, labels, strict=True)):
        marker = _MARKERS[i % len(_MARKERS)]
        offset = 0
        for stage in sorted(df["stage"].dropna().unique(), key=_stage_rank):
            # Rows keep file order inside a stage: progressive resizing may restart the epoch counter.
            part = df[df["stage"] == stage]
            x = offset + np.arange(1, len(part) + 1)
            colour = _stage_colour(stage, extra_colours)
            if stage not in stages_seen:
                stages_seen.append(stage)
            # Open markers for validation keep the two apart when a stage has a single epoch (no line).
            for column, style, face in (("train_loss", "-", colour), ("valid_loss", "--", "none")):
                y = part[column].to_numpy(dtype=np.float64)
                any_nonpositive |= bool(np.any(y[np.isfinite(y)] <= 0))
                ax_loss.plot(x, y, linestyle=style, marker=marker, markersize=4, color=colour, markerfacecolor=face)
            y = part["valid_psnr"].to_numpy(dtype=np.float64)
            if np.isfinite(y).any():
                ax_psnr.plot(x, y, linestyle="-", marker=marker, markersize=3, color=colour)
            if len(tables) == 1:
                for ax in (ax_loss, ax_psnr):
                    ax.axvspan(offset + 0.5, offset + len(part) + 0.5, color=colour, alpha=0.08, linewidth=0)
                    ax.text(
                        offset + 0.5 + len(part) / 2,
                        1.01,
                        _STAGE_LABELS.get(stage, stage),
                        transform=ax.get_xaxis_transform(),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color=colour,
                    )
            offset += len(part)
    if any_nonpositive:
        ax_loss.set_yscale("symlog", linthresh=1e-3)
    else:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("Loss (log scale)")
    ax_psnr.set_ylabel("Validation PSNR (dB)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_psnr):
        ax.set_xlabel("Cumulative epoch (generator, then critic, then GAN)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    # Titles sit above the stage names drawn along the top edge.
    ax_loss.set_title("Losses", fontsize=10, pad=14)
    ax_psnr.set_title("Validation PSNR", fontsize=10, pad=14)

    stage_handles = [
        Line2D([], [], color=_stage_colour(s, extra_colours), linewidth=2, label=_STAGE_LABELS.get(s, s)) for s in sorted(stages_seen, key=_stage_rank)
    ]
    style_handles = [
        Line2D([], [], color="black", linestyle="-", marker="o", markersize=4, label="training"),
        Line2D([], [], color="black", linestyle="--", marker="o", markersize=4, markerfacecolor="none", label="validation"),
    ]
    file_handles = (
        [Line2D([], [], color="black", marker=_MARKERS[i % len(_MARKERS)], linestyle="none", label=label) for i, label in enumerate(labels)]
        if len(tables) > 1
        else []
    )
    ax_loss.legend(handles=stage_handles + style_handles, fontsize=7, loc="best")
    if file_handles:
        ax_psnr.legend(handles=file_handles, fontsize=7, loc="best")
    return _save(fig, out_png)


# --------------------------------------------------------------------------- registration QC

_FALSE_WORDS = frozenset({"false", "0", "no", "f", "n", "fail", "failed"})
# Columns of the QC table drawn rather than printed, and the most FOVs the photon plot shows.
_QC_PLOTTED = ("photon_curve",)
_MAX_PHOTON_PANELS = 12
_TRUE_WORDS = frozenset({"true", "1", "yes", "t", "y", "pass", "passed"})


def _qc_failed(df: pd.DataFrame) -> pd.Series:
    if "passed" in df.columns:
        words = df["passed"].fillna("").astype(str).str.strip().str.lower()
        # A FOV whose QC was never decided is not known to be good.
        return ~words.isin(_TRUE_WORDS)
    if {"ncc", "min_ncc"} <= set(df.columns):
        ncc = pd.to_numeric(df["ncc"], errors="coerce")
        min_ncc = pd.to_numeric(df["min_ncc"], errors="coerce")
        return ~(ncc >= min_ncc)
    raise ValueError("registration QC table needs a 'passed' column, or 'ncc' and 'min_ncc'")


def registration_qc_table(qc_tsv: str | Path) -> str:
    """Render the registration QC table as a small HTML fragment.

    Parameters
    ----------
    qc_tsv : str or Path
        Tab-separated QC table, one row per FOV (``results/qc/registration.tsv``).
        A FOV fails when ``passed`` is not true (``True``/``true``/``1``/``yes``),
        or, without a ``passed`` column, when ``ncc < min_ncc``. The file is
        only read.

    Returns
    -------
    str
        A ``<p>`` with the count of failed FOVs and a ``<table>`` with every
        column as written (``photons_at_median``: photons per pixel at the
        median signal of the FOV) plus a ``status`` column; failed rows are
        shaded. With a ``photon_curve`` column, that column is drawn instead
        of printed: an inline PNG of each FOV's temporal mean-variance curve
        and its fitted photon transfer line (:mod:`fastscan.photons`), at most
        12 FOVs.
    """
    df = pd.read_csv(qc_tsv, sep="\t", dtype=str, keep_default_na=False)
    failed = _qc_failed(df) if len(df) else pd.Series([], dtype=bool)
    figure = _photon_curve_figure(df) if "photon_curve" in df.columns else ""
    df = df.drop(columns=[c for c in _QC_PLOTTED if c in df.columns])
    n_failed = int(failed.sum())
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in [*df.columns, "status"])
    body = []
    for (_, row), bad in zip(df.iterrows(), failed, strict=True):
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        status = '<td style="color:#b00000;font-weight:bold">FAILED</td>' if bad else "<td>passed</td>"
        style = ' class="failed" style="background:#fde0dc"' if bad else ""
        body.append(f"<tr{style}>{cells}{status}</tr>")
    summary = f"<p>{n_failed} of {len(df)} FOV{'s' if len(df) != 1 else ''} failed registration QC.</p>"
    table = (
        '<table class="fastscan-qc" style="border-collapse:collapse;font-family:sans-serif;font-size:small" '
        'border="1" cellpadding="3">'
        f"<thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
    if n_failed:
        logger.warning("%d of %d FOVs failed registration QC", n_failed, len(df))
    return summary + "\n" + table + figure


def _qc_number(row: pd.Series, column: str) -> float:
    try:
        return float(row.get(column, ""))
    except (TypeError, ValueError):
        return math.nan


def _photon_curve_figure(df: pd.DataFrame) -> str:
    """Small multiples of the FOVs' mean-variance curves with their lines, as an inline PNG.

    Each panel shows the binned temporal variance against the mean signal (points) and the
    photon transfer line ``gain * (mean - offset) + read_noise**2`` of the QC row; its title
    gives the photons per pixel at the median signal. FOVs without a curve (one frame) are
    listed in a note.
    """
    panels, missing = [], []
    for _, row in df.iterrows():
        label = "/".join(str(row.get(k, "")) for k in ("sample", "session", "fov"))
        try:
            mean, variance = curve_from_text(row.get("photon_curve", ""))
        except ValueError as exc:
            logger.warning("registration QC row %s: %s", label, exc)
            mean = np.empty(0)
        if mean.size == 0:
            missing.append(label)
            continue
        panels.append((label, mean, variance, row))
    note = (
        f"<p>No photon transfer curve for {len(missing)} FOV(s) (fewer than 2 frames, or no usable pixels): {html.escape(', '.join(missing))}.</p>"
        if missing
        else ""
    )
    if not panels:
        return "\n" + note if note else ""
    shown = panels[:_MAX_PHOTON_PANELS]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        ax.set_axis_off()
    for ax, (label, mean, variance, row) in zip(axes.ravel(), shown, strict=False):
        ax.plot(mean, variance, "o", ms=2.5, color="#0072B2")
        gain = _qc_number(row, "gain_adu_per_photon")
        offset = _qc_number(row, "offset_adu")
        read = _qc_number(row, "read_noise_adu")
        if all(math.isfinite(v) for v in (gain, offset, read)):
            x = np.array([min(mean.min(), offset), mean.max()])
            ax.plot(x, gain * (x - offset) + read**2, "-", lw=1, color="#D55E00")
        photons = _qc_number(row, "photons_at_median")
        title = f"{label}\n{photons:.3g} photons at median" if math.isfinite(photons) else label
        ax.set_title(title, fontsize=6)
        ax.tick_params(labelsize=5)
        ax.set_xlabel("mean (ADU)", fontsize=6)
        ax.set_ylabel("variance (ADU²)", fontsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    more = f" (the first {_MAX_PHOTON_PANELS} of {len(panels)} FOVs)" if len(panels) > _MAX_PHOTON_PANELS else ""
    return (
        "\n<h4>Photon calibration</h4>\n<p>Temporal variance against mean signal per FOV "
        "(binned pixels) and the fitted photon transfer line "
        f"var = gain (mean - offset) + read noise²{more}.</p>\n"
        f'<img alt="photon transfer curves" src="data:image/png;base64,{encoded}">' + note
    )


# --------------------------------------------------------------------------- tables as HTML

_TABLE_STYLE = (
    "<style>body{font-family:sans-serif;font-size:small}"
    "table{border-collapse:collapse;margin-bottom:1em}th,td{border:1px solid #999;padding:3px 6px}"
    "th{background:#eee}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "td.best{font-weight:bold}p.note{color:#555}</style>"
)
_STAT_FORMATS: dict[str, tuple[str, str]] = {
    "psnr": ("PSNR (dB)", "{:.2f}"),
    "ssim": ("SSIM", "{:.3f}"),
    "nrmse": ("NRMSE", "{:.3f}"),
}
_GROUP_HEADERS: dict[str, str] = {
    "model": "Model",
    "sample": "Sample",
    "ablation": "Ablation",
    "finetune": "Fine-tuning run",
}


def _html_page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>{_TABLE_STYLE}</head>\n<body>\n"
        f"<h3>{html.escape(title)}</h3>\n{body}\n</body></html>\n"
    )


def _mean_sd(mean: Any, sd: Any, fmt: str) -> str:
    if mean is None or pd.isna(mean) or not np.isfinite(float(mean)):
        return "–"
    text = fmt.format(float(mean))
    if sd is not None and not pd.isna(sd) and np.isfinite(float(sd)):
        text += " ± " + fmt.format(float(sd))
    return text


def table_html(table: pd.DataFrame, *, title: str, empty_note: str) -> str:
    """Render a summary table (Table II, III or IV) as an HTML page.

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`fastscan.metrics.summarise`,
        :func:`~fastscan.metrics.ablation_table` or
        :func:`~fastscan.metrics.generalisation_table`.
    title : str
        Heading of the page.
    empty_note : str
        Paragraph shown instead of a table when `table` has no rows.

    Returns
    -------
    str
        A complete HTML document: one row per method (and number of pairs),
        metrics as ``mean ± sd`` over images with the number of images ``n``;
        within each block of rows sharing the grouping columns the best PSNR
        and SSIM means (and the lowest NRMSE) are set in bold.
    """
    if table.empty:
        return _html_page(title, f'<p class="note">{html.escape(empty_note)}</p>')
    groups = [c for c in ("ablation", "finetune", "model", "sample") if c in table.columns]
    header = [_GROUP_HEADERS[c] for c in groups] + ["Method", "Training pairs", "n"]
    header += [label for label, _ in _STAT_FORMATS.values()]
    best: dict[tuple[Any, str], float] = {}
    for key, block in table.groupby(groups, sort=False) if groups else [((), table)]:
        for metric in _STAT_FORMATS:
            values = pd.to_numeric(block[f"{metric}_mean"], errors="coerce")
            values = values[np.isfinite(values)]
            if len(values):
                best[(key, metric)] = float(values.min() if metric == "nrmse" else values.max())
    body = []
    for _, row in table.iterrows():
        key = tuple(row[c] for c in groups)
        key = key[0] if len(key) == 1 else key
        cells = [f"<td>{html.escape(str(row[c]))}</td>" for c in groups]
        colour = method_colour(str(row["method"]))
        cells.append(f'<td><span style="color:{colour}">&#9632;</span> {html.escape(str(row["label"]))}</td>')
        pairs = row.get("pairs")
        cells.append(f'<td class="num">{"–" if pairs is None or pd.isna(pairs) else int(pairs)}</td>')
        cells.append(f'<td class="num">{int(row["n"])}</td>')
        for metric, (_, fmt) in _STAT_FORMATS.items():
            mean = row[f"{metric}_mean"]
            is_best = (key, metric) in best and not pd.isna(mean) and float(mean) == best[(key, metric)]
            cls = "num best" if is_best else "num"
            cells.append(f'<td class="{cls}">{_mean_sd(mean, row[f"{metric}_sd"], fmt)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    note = (
        '<p class="note">Mean ± sample standard deviation over the test images (frames); n counts the '
        "images. Bold: best value in each block. Infinite PSNR (exact reconstruction) is left out of the "
        "PSNR statistics.</p>"
    )
    return _html_page(title, f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n{note}")


def hallucination_html(table: pd.DataFrame) -> str:
    """Render the per-image departure table (:func:`fastscan.hallucination.hallucination_table`) as HTML."""
    title = "Departure of the GAN from the MSE generator beyond the noise level"
    if table.empty:
        return _html_page(title, '<p class="note">No restored test image has both the MSE generator and the GAN.</p>')
    summary = table.groupby(["model", "sample"], sort=True)["fraction_flagged"].agg(["mean", "max", "size"]).reset_index()
    lines = "".join(
        f"<li>{html.escape(str(r['model']))} · {html.escape(str(r['sample']))}: {100 * r['mean']:.2f} % of pixels "
        f"flagged on average (worst image {100 * r['max']:.2f} %, {int(r['size'])} images)</li>"
        for _, r in summary.iterrows()
    )
    header = ["Image", "Noise estimate", "Noise sd", "Threshold", "Flagged pixels", "Flagged further from HR"]
    rows = []
    for _, r in table.iterrows():
        image = f"{r['model']} / {r['sample']} / {r['session']} / {r['fov']}, frame {r['frame']}"
        away = r["flagged_away_share"]
        rows.append(
            "<tr>"
            f"<td>{html.escape(image)}</td><td>{html.escape(str(r['noise']))}</td>"
            f'<td class="num">{r["noise_sd"]:.4f}</td>'
            f'<td class="num">{r["threshold"]:.4f} ({r["k"]:g} × sd)</td>'
            f'<td class="num">{100 * r["fraction_flagged"]:.2f} %</td>'
            f'<td class="num">{"–" if pd.isna(away) else f"{100 * away:.0f} %"}</td>'
            "</tr>"
        )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return _html_page(
        title,
        f"<ul>{lines}</ul>\n<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
    )


# --------------------------------------------------------------------------- data-size ablation (Fig. 6)

_NO_ABLATION = (
    "No data-size ablation results: the optional files results/ablation/{model}/metrics.tsv do not exist. "
    "List models under the config key 'ablation' and run the workflow to fill Table III and Fig. 6."
)
_NO_FINETUNE = (
    "No generalisation results: the optional files results/finetune/{name}/metrics.tsv do not exist. "
    "Configure fine-tuning under the config key 'finetune' and run the workflow to fill Table IV."
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


# --------------------------------------------------------------------------- restored slides


def _lowest_level(path: Path) -> tuple[np.ndarray, tuple[float, float] | None, dict[str, Any]]:
    """The smallest pyramid level of an OME-Zarr image as (Y, X), its pixel size in µm, and info."""
    import zarr

    group = zarr.open_group(str(path), mode="r")
    attrs = dict(group.attrs)
    # NGFF 0.5 nests the metadata under "ome"; 0.4 keeps it at the top level.
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, Mapping) else None
    if not multiscales:
        raise ValueError(f"{path}: no OME-Zarr multiscales metadata in the group attributes")
    ms = multiscales[0]
    datasets = ms.get("datasets") or []
    if not datasets:
        raise ValueError(f"{path}: multiscales[0] lists no datasets")
    axes = [a.get("name", "") if isinstance(a, Mapping) else str(a) for a in ms.get("axes", [])]
    lowest, full = datasets[-1], datasets[0]
    arr = group[lowest["path"]]
    if not axes:
        axes = ["y", "x"] if arr.ndim == 2 else [f"dim{i}" for i in range(arr.ndim - 2)] + ["y", "x"]
    if arr.ndim != len(axes) or "y" not in axes or "x" not in axes:
        raise ValueError(f"{path}: level {lowest['path']!r} of shape {arr.shape} does not match axes {axes}")
    iy, ix = axes.index("y"), axes.index("x")
    # Only the spatial axes are shown: the first channel / plane / time point of the others.
    index = tuple(slice(None) if i in (iy, ix) else 0 for i in range(arr.ndim))
    image = np.asarray(arr[index], dtype=np.float64)
    if iy > ix:
        image = image.T

    def _scale(dataset: Mapping[str, Any]) -> tuple[float, float] | None:
        for transform in dataset.get("coordinateTransformations", []):
            if transform.get("type") == "scale":
                values = transform["scale"]
                return float(values[iy]), float(values[ix])
        return None

    info = {
        "level": str(lowest["path"]),
        "levels": len(datasets),
        "full_shape": tuple(int(v) for i, v in enumerate(group[full["path"]].shape) if i in (iy, ix)),
        "full_pixel_um": _scale(full),
    }
    return image, _scale(lowest), info


def plot_slide_thumbnails(slide_paths: Sequence[str | Path], out_png: str | Path, *, max_side: int = 1024) -> Path:
    """Thumbnails of restored whole slides, from the lowest pyramid level of each OME-Zarr.

    Parameters
    ----------
    slide_paths : sequence of str or Path
        Restored slides (``results/restore/slides/{slide}.ome.zarr``).
    out_png : str or Path
        PNG to write; a labelled placeholder without slides.
    max_side : int, optional
        The lowest level is subsampled by an integer step until its longer side
        is at most this many pixels (the figure cannot show more).

    Returns
    -------
    Path
        `out_png`.
    """
    paths = [Path(p) for p in slide_paths]
    if not paths:
        return _placeholder(out_png, "No whole slides were restored (config slides sheet is empty).")
    levels = [_lowest_level(p) for p in paths]
    plt = _pyplot()
    ncols = min(len(paths), 3)
    nrows = math.ceil(len(paths) / ncols)
    aspect = max(image.shape[0] / max(image.shape[1], 1) for image, _, _ in levels)
    height = min(max(4.6 * aspect, 1.5), 9.0) + 0.6  # room for the two-line title
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, height * nrows), squeeze=False, layout="constrained")
    for ax, path, (image, pixel, info) in zip(axes.flat, paths, levels, strict=False):
        step = max(1, math.ceil(max(image.shape) / max_side))
        if step > 1:
            image = image[::step, ::step]
            pixel = (pixel[0] * step, pixel[1] * step) if pixel is not None else None
        finite = image[np.isfinite(image)]
        vmin, vmax = (float(v) for v in np.percentile(finite, [0.5, 99.5])) if finite.size else (0.0, 1.0)
        if vmax <= vmin:
            vmax = vmin + 1e-6
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="antialiased")
        ax.set_xticks([])
        ax.set_yticks([])
        name = path.name.removesuffix(".zarr").removesuffix(".ome")
        full = info["full_shape"]
        full_px = info["full_pixel_um"]
        detail = f"{full[0]}×{full[1]} px" + (f" at {full_px[1]:g} µm/px" if full_px else "")
        ax.set_title(f"{name}\nrestored {detail}; shown: lowest pyramid level ({info['level']})", fontsize=8)
        if pixel is not None:
            _draw_scale_bar(ax, pixel_um=pixel, shape=image.shape, right=True)
    for ax in list(axes.flat)[len(paths) :]:
        ax.set_visible(False)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- all at once


def _pick_examples(restored: Sequence[Path], n: int = _MAX_EXAMPLE_ROWS) -> list[Path]:
    # Prefer one FOV per sample so that the example figure shows the variety of structures.
    chosen: list[Path] = []
    samples: set[str] = set()
    for path in restored:
        sample = path.parts[-3] if len(path.parts) >= 3 else str(path)
        if sample not in samples:
            chosen.append(path)
            samples.add(sample)
    for path in restored:
        if path not in chosen:
            chosen.append(path)
    return chosen[:n]


def write_report_figures(
    *,
    metrics_tsv: str | Path,
    restored: Sequence[str | Path],
    curves: Sequence[str | Path] | Mapping[str, Sequence[str | Path]],
    qc_tsv: str | Path | None,
    out_dir: str | Path,
    ablation_metrics: Sequence[str | Path] = (),
    finetune_metrics: Sequence[str | Path] = (),
    slides: Sequence[str | Path] = (),
    example_fovs: int = _MAX_EXAMPLE_ROWS,
    hallucination_k: float = DEFAULT_K,
) -> list[Path]:
    """Write every report figure and table into `out_dir`.

    Parameters
    ----------
    metrics_tsv : str or Path
        Per-image metrics (``results/report/metrics.tsv``).
    restored : sequence of str or Path
        Restored FOV stores; up to `example_fovs` are shown, one per sample
        first (the sample is read from the ``.../{sample}/{session}/{fov}.zarr``
        path). All of them enter the departure table.
    curves : sequence of str or Path, or mapping
        Training-curve tables (see :func:`plot_training_curves`).
    qc_tsv : str or Path or None
        Registration QC table; ``None`` writes a note instead of the table.
    out_dir : str or Path
        Directory for the outputs (created if needed).
    ablation_metrics, finetune_metrics : sequence of str or Path, optional
        Per-image metrics of the data-size ablation
        (``results/ablation/{model}/metrics.tsv``) and of the fine-tuning runs
        (``results/finetune/{name}/metrics.tsv``). Optional: files that do not
        exist are skipped, and with none the tables and Fig. 6 say so.
    slides : sequence of str or Path, optional
        Restored whole-slide OME-Zarr images for the thumbnails.
    example_fovs : int, optional
        FOVs shown in the example and departure figures.
    hallucination_k : float, optional
        Departure threshold in multiples of the noise level.

    Returns
    -------
    list of Path
        ``out_dir`` joined with each name of :data:`REPORT_FILES`, in that
        order: ``summary.tsv`` / ``.html`` (Table II), the box plots
        (Fig. 5), ``examples.png`` (Fig. 4/7), the departure figure and table
        ``hallucination.png`` / ``.tsv`` / ``.html``, ``ablation.tsv`` /
        ``.html`` (Table III) and ``ablation.png`` (Fig. 6),
        ``generalisation.tsv`` / ``.html`` (Table IV),
        ``training_curves.png``, ``registration_qc.html`` and ``slides.png``.
        Every file is written even when its input is empty, so they can all be
        declared as rule outputs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = read_metrics_tsv(metrics_tsv)
    restored_paths = [Path(p) for p in restored]
    examples = _pick_examples(restored_paths, len(restored_paths))

    summary = summarise(df)
    written = [write_tsv(summary, out / "summary.tsv")]
    written.append(
        _write_text(
            table_html(
                summary,
                title="Table II: test-set metrics per method",
                empty_note="No test images were restored, so there are no metrics.",
            ),
            out / "summary.html",
        )
    )
    written.append(plot_metric_boxes(df, out / "psnr_boxes.png", metric="psnr"))
    written.append(plot_metric_boxes(df, out / "ssim_boxes.png", metric="ssim"))
    written.append(plot_example_panels(examples, out / "examples.png", max_rows=example_fovs))

    written.append(plot_hallucination_panels(examples, out / "hallucination.png", k=hallucination_k, max_rows=example_fovs))
    departures = hallucination_table(restored_paths, k=hallucination_k)
    written.append(write_tsv(departures, out / "hallucination.tsv"))
    written.append(_write_text(hallucination_html(departures), out / "hallucination.html"))

    ablation = ablation_table(read_optional_metrics(list(ablation_metrics), key="ablation"))
    written.append(write_tsv(ablation, out / "ablation.tsv"))
    written.append(
        _write_text(
            table_html(ablation, title="Table III: metrics against the number of training pairs", empty_note=_NO_ABLATION),
            out / "ablation.html",
        )
    )
    written.append(plot_ablation(ablation, out / "ablation.png"))

    generalisation = generalisation_table(read_optional_metrics(list(finetune_metrics), key="finetune"))
    written.append(write_tsv(generalisation, out / "generalisation.tsv"))
    written.append(
        _write_text(
            table_html(
                generalisation,
                title="Table IV: generalisation to another sample, as is and fine-tuned",
                empty_note=_NO_FINETUNE,
            ),
            out / "generalisation.html",
        )
    )

    written.append(plot_training_curves(curves, out / "training_curves.png"))
    fragment = registration_qc_table(qc_tsv) if qc_tsv is not None else "<p>No registration QC table was given.</p>"
    page = f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Registration QC</title></head>\n<body>\n{fragment}\n</body></html>\n'
    written.append(_write_text(page, out / "registration_qc.html"))
    written.append(plot_slide_thumbnails(list(slides), out / "slides.png"))
    return written
