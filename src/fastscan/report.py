"""Figures and tables embedded in the Snakemake HTML report.

Every figure uses the method order and colours of :mod:`fastscan.baselines`, so
a method looks the same wherever it appears. Figures are written with the Agg
backend (no display needed on cluster nodes) and, like the tables, to a
temporary sibling that is renamed into place.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import ndimage

from fastscan.atomic import atomic_path, write_text
from fastscan.baselines import METHOD_COLOURS, method_colour, method_label, method_sort_key, upsample
from fastscan.metrics import psnr, read_metrics_tsv, ssim, summarise, write_tsv

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "REPORT_FILES",
    "plot_example_panels",
    "plot_metric_boxes",
    "plot_training_curves",
    "registration_qc_table",
    "write_report_figures",
]

logger = logging.getLogger(__name__)

#: Files :func:`write_report_figures` writes into its ``out_dir``, in the order returned.
REPORT_FILES: tuple[str, ...] = (
    "summary.tsv",
    "psnr_boxes.png",
    "ssim_boxes.png",
    "examples.png",
    "training_curves.png",
    "registration_qc.html",
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
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
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
            ax.scatter(
                pos + jitter, values, s=8, color="black", alpha=0.45, linewidths=0, zorder=3, rasterized=True
            )
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


def plot_example_panels(
    restored_zarr_paths: Sequence[str | Path],
    out_png: str | Path,
    *,
    frame_index: int = 0,
    inset: tuple[int, int, int, int] | None = None,
) -> Path:
    """Example restorations side by side, with a magnified inset.

    Rows are FOVs (the first three of `restored_zarr_paths`); columns are the
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
    if len(paths) > _MAX_EXAMPLE_ROWS:
        logger.info("showing the first %d of %d restored FOVs", _MAX_EXAMPLE_ROWS, len(paths))
        paths = paths[:_MAX_EXAMPLE_ROWS]
    if not paths:
        return _placeholder(out_png, "No restored FOVs to show.")
    examples = [_load_example(p, frame_index) for p in paths]
    methods = sorted({m for ex in examples for m in ex["images"]}, key=method_sort_key)
    columns = ["input", *methods, "target"]

    plt = _pyplot()
    from matplotlib.patches import Rectangle

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
        y0, x0, h, w = region
        if y0 < 0 or x0 < 0 or h < 1 or w < 1 or y0 + h > hr.shape[0] or x0 + w > hr.shape[1]:
            raise ValueError(f"inset {region} does not fit the HR image {hr.shape} of {ex['name']}")
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
            ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="antialiased")
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, edgecolor="yellow", linewidth=0.8))
            axins = ax.inset_axes(bounds)
            axins.imshow(image[y0 : y0 + h, x0 : x0 + w], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
            axins.set_xticks([])
            axins.set_yticks([])
            for spine in axins.spines.values():
                spine.set_edgecolor("yellow")
                spine.set_linewidth(1.0)
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
            if column in METHOD_COLOURS:
                # Titles stay black for legibility; the frame carries the method's colour as in the box plots.
                for spine in ax.spines.values():
                    spine.set_edgecolor(method_colour(column))
                    spine.set_linewidth(2.0)
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


def _curve_labels(paths: Sequence[Path]) -> list[str]:
    """Shortest labels telling the files apart: the path parts they do not share."""
    if len(paths) == 1:
        return [""]
    split = [[*p.parent.parts, p.stem] for p in paths]
    lead = 0
    while all(len(s) > lead + 1 for s in split) and len({s[lead] for s in split}) == 1:
        lead += 1
    trail = 0
    while all(len(s) - lead > trail + 1 for s in split) and len({s[-1 - trail] for s in split}) == 1:
        trail += 1
    labels = ["/".join(s[lead : len(s) - trail]) for s in split]
    return labels if len(set(labels)) == len(labels) else [str(p) for p in paths]


def _stage_colour(stage: str, extra: dict[str, str]) -> str:
    if stage in _STAGE_COLOURS:
        return _STAGE_COLOURS[stage]
    if stage not in extra:
        palette = ("#56B4E9", "#009E73", "#F0E442", "#999999")
        extra[stage] = palette[len(extra) % len(palette)]
    return extra[stage]


def _stage_rank(stage: str) -> tuple[int, str]:
    return (_STAGE_ORDER.index(stage), "") if stage in _STAGE_ORDER else (len(_STAGE_ORDER), stage)


def plot_training_curves(curve_tsvs: Sequence[str | Path], out_png: str | Path) -> Path:
    """Training and validation losses and validation PSNR of the training stages.

    Parameters
    ----------
    curve_tsvs : sequence of str or Path
        Tab-separated tables with columns ``stage, epoch, train_loss,
        valid_loss, valid_psnr`` (one row per epoch; ``valid_psnr`` may be
        empty or NaN, e.g. for the critic). Several files are told apart by
        marker shape and the parts of their paths that differ.
    out_png : str or Path
        PNG to write.

    Returns
    -------
    Path
        `out_png`.

    Notes
    -----
    Stages are laid end to end in the order mse, critic, gan (then any other),
    each occupying as many epochs as it has rows, so the x axis counts epochs
    over the whole schedule; stage colour is fixed. Losses use a log axis
    (symmetric log if a loss is not positive, as some GAN losses can be).
    """
    paths = [Path(p) for p in curve_tsvs]
    if not paths:
        return _placeholder(out_png, "No training curves to plot.")
    tables = [_read_curves(p) for p in paths]
    labels = _curve_labels(paths)

    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    extra_colours: dict[str, str] = {}
    stages_seen: list[str] = []
    any_nonpositive = False
    for i, (df, label) in enumerate(zip(tables, labels, strict=True)):
        marker = _MARKERS[i % len(_MARKERS)]
        offset = 0
        for stage in sorted(df["stage"].dropna().unique(), key=_stage_rank):
            # Rows keep file order inside a stage: progressive resizing may restart the epoch counter.
            part = df[df["stage"] == stage]
            x = offset + np.arange(1, len(part) + 1)
            colour = _stage_colour(stage, extra_colours)
            if stage not in stages_seen:
                stages_seen.append(stage)
            for column, style in (("train_loss", "-"), ("valid_loss", "--")):
                y = part[column].to_numpy(dtype=np.float64)
                any_nonpositive |= bool(np.any(y[np.isfinite(y)] <= 0))
                ax_loss.plot(x, y, linestyle=style, marker=marker, markersize=3, color=colour)
            y = part["valid_psnr"].to_numpy(dtype=np.float64)
            if np.isfinite(y).any():
                ax_psnr.plot(x, y, linestyle="-", marker=marker, markersize=3, color=colour)
            if len(tables) == 1:
                for ax in (ax_loss, ax_psnr):
                    ax.axvspan(offset + 0.5, offset + len(part) + 0.5, color=colour, alpha=0.06, linewidth=0)
            offset += len(part)
    if any_nonpositive:
        ax_loss.set_yscale("symlog", linthresh=1e-3)
    else:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("Loss (log scale)")
    ax_psnr.set_ylabel("Validation PSNR (dB)")
    for ax in (ax_loss, ax_psnr):
        ax.set_xlabel("Epoch (stages in sequence)")
        ax.grid(alpha=0.3)
    ax_loss.set_title("Losses", fontsize=10)
    ax_psnr.set_title("Validation PSNR", fontsize=10)

    stage_handles = [
        Line2D([], [], color=_stage_colour(s, extra_colours), linewidth=2, label=_STAGE_LABELS.get(s, s))
        for s in sorted(stages_seen, key=_stage_rank)
    ]
    style_handles = [
        Line2D([], [], color="black", linestyle="-", label="training"),
        Line2D([], [], color="black", linestyle="--", label="validation"),
    ]
    file_handles = (
        [
            Line2D([], [], color="black", marker=_MARKERS[i % len(_MARKERS)], linestyle="none", label=label)
            for i, label in enumerate(labels)
        ]
        if len(tables) > 1
        else []
    )
    ax_loss.legend(handles=stage_handles + style_handles, fontsize=7, loc="best")
    if file_handles:
        ax_psnr.legend(handles=file_handles, fontsize=7, loc="best")
    return _save(fig, out_png)


# --------------------------------------------------------------------------- registration QC

_FALSE_WORDS = frozenset({"false", "0", "no", "f", "n", "fail", "failed"})
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
        column as written plus a ``status`` column; failed rows are shaded.
    """
    df = pd.read_csv(qc_tsv, sep="\t", dtype=str, keep_default_na=False)
    failed = _qc_failed(df) if len(df) else pd.Series([], dtype=bool)
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
    return summary + "\n" + table


# --------------------------------------------------------------------------- all at once


def _pick_examples(restored: Sequence[Path]) -> list[Path]:
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
    return chosen[:_MAX_EXAMPLE_ROWS]


def write_report_figures(
    *,
    metrics_tsv: str | Path,
    restored: Sequence[str | Path],
    curves: Sequence[str | Path],
    qc_tsv: str | Path | None,
    out_dir: str | Path,
) -> list[Path]:
    """Write every report figure and table into `out_dir`.

    Parameters
    ----------
    metrics_tsv : str or Path
        Per-image metrics (``results/report/metrics.tsv``).
    restored : sequence of str or Path
        Restored FOV stores; up to three are shown, one per sample first
        (the sample is read from the ``.../{sample}/{session}/{fov}.zarr`` path).
    curves : sequence of str or Path
        Training-curve tables (see :func:`plot_training_curves`).
    qc_tsv : str or Path or None
        Registration QC table; ``None`` writes a note instead of the table.
    out_dir : str or Path
        Directory for the outputs (created if needed).

    Returns
    -------
    list of Path
        ``out_dir`` joined with each name of :data:`REPORT_FILES`, in that
        order: ``summary.tsv`` (Table II from :func:`fastscan.metrics.summarise`),
        ``psnr_boxes.png``, ``ssim_boxes.png``, ``examples.png``,
        ``training_curves.png``, ``registration_qc.html``. Every file is
        written even when its input is empty, so they can all be declared as
        rule outputs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = read_metrics_tsv(metrics_tsv)
    written = [write_tsv(summarise(df), out / "summary.tsv")]
    written.append(plot_metric_boxes(df, out / "psnr_boxes.png", metric="psnr"))
    written.append(plot_metric_boxes(df, out / "ssim_boxes.png", metric="ssim"))
    written.append(plot_example_panels(_pick_examples([Path(p) for p in restored]), out / "examples.png"))
    written.append(plot_training_curves(list(curves), out / "training_curves.png"))
    fragment = (
        registration_qc_table(qc_tsv) if qc_tsv is not None else "<p>No registration QC table was given.</p>"
    )
    page = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Registration QC</title></head>\n'
        f"<body>\n{fragment}\n</body></html>\n"
    )
    written.append(_write_text(page, out / "registration_qc.html"))
    return written
