"""Image panels: example restorations (Fig. 4/7), the GAN's departures from the MSE generator, slide thumbnails.

These figures read the restored stores themselves (Zarr, OME-Zarr) rather than a metrics table,
and share how an image is shown: one grey scale per row, a magnified inset at the same place in
every panel of a row, and a scale bar from the store's pixel size.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from fastscan.baselines import method_colour, method_label, method_sort_key, upsample
from fastscan.hallucination import DEFAULT_K, Departure, departure_map
from fastscan.metrics import psnr, ssim
from fastscan.report.style import _placeholder, _pyplot, _save

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_MAX_EXAMPLE_ROWS = 3
_INSET_SIZE = 64
_INSET_FRACTION = 0.42


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


def _grey_range(hr: np.ndarray) -> tuple[float, float]:
    """The grey scale of a row: the 0.5th to 99.5th percentiles of its HR target."""
    vmin, vmax = (float(v) for v in np.percentile(hr, [0.5, 99.5]))
    if vmax <= vmin:
        vmax = vmin + 1e-6
    return vmin, vmax


def _example_region(hr: np.ndarray, inset: tuple[int, int, int, int] | None, name: str) -> tuple[int, int, int, int]:
    """The magnified region of a row: `inset` as given, or the most structured window."""
    if inset is not None:
        region = tuple(int(v) for v in inset)
    else:
        # 64 px on a 512 px target; small images get a quarter of their side so the inset still magnifies.
        region = _brightest_variance_region(hr, min(_INSET_SIZE, min(hr.shape) // 4))
    _check_region(region, hr.shape, name)
    return region


def _draw_not_restored(ax: Axes, shape: tuple[int, ...], column: str) -> None:
    # An all-NaN image keeps the panel the same size and aspect as its neighbours.
    ax.imshow(np.full(shape, np.nan), cmap="gray")
    ax.set_facecolor("#eeeeee")
    ax.text(0.5, 0.5, "not restored", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    ax.set_title(f"{method_label(column)}\n", fontsize=8)


def _label_image_panel(ax: Axes, column: str, ex: dict[str, Any], image: np.ndarray, bounds: list[float]) -> None:
    """Title an input, method or target panel; the target gets the scale bar, a method its colour as the frame."""
    hr = ex["hr"]
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


def _draw_example_row(row: Sequence[Axes], ex: dict[str, Any], columns: list[str], *, inset: tuple[int, int, int, int] | None) -> None:
    """One FOV: every column on the row's grey scale, the same region magnified in each."""
    hr = ex["hr"]
    vmin, vmax = _grey_range(hr)
    region = _example_region(hr, inset, ex["name"])
    bounds = _inset_bounds(region, hr.shape)
    shown = {"input": ex["input"], **ex["images"], "target": hr}
    for ax, column in zip(row, columns, strict=True):
        ax.set_xticks([])
        ax.set_yticks([])
        if column not in shown:
            _draw_not_restored(ax, hr.shape, column)
            continue
        image = shown[column]
        _imshow_with_inset(ax, image, region=region, bounds=bounds, vmin=vmin, vmax=vmax)
        _label_image_panel(ax, column, ex, image, bounds)
    row[0].set_ylabel(f"{ex['name']}\nframe {ex['frame']}", fontsize=8)


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
        _draw_example_row(row, ex, columns, inset=inset)
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


def _departure_examples(paths: Sequence[Path], frame_index: int, max_rows: int) -> list[dict[str, Any]]:
    """The first `max_rows` stores holding both ``mse`` and ``gan``, loaded (no store past them is read)."""
    examples = []
    for path in paths:
        ex = _load_example(path, frame_index)
        if "mse" in ex["images"] and "gan" in ex["images"]:
            examples.append(ex)
        else:
            logger.info("%s: no 'mse' and 'gan' to compare; not in the departure figure", path)
        if len(examples) == max_rows:
            break
    return examples


def _draw_departure_panel(
    fig: Figure,
    ax: Axes,
    result: Departure,
    *,
    region: tuple[int, int, int, int],
    bounds: list[float],
    k: float,
) -> None:
    """``|GAN - MSE|`` on its own colour scale, the flagged pixels in cyan, and the threshold in the title."""
    overlay = np.zeros((*result.difference.shape, 4))
    overlay[result.flagged] = _FLAG_RGBA
    # The colour scale ends at twice the threshold so that the threshold sits mid-scale on every row.
    dmax = max(2 * result.threshold, 1e-6)
    shown = _imshow_with_inset(ax, result.difference, region=region, bounds=bounds, vmin=0.0, vmax=dmax, cmap="magma", overlay=overlay)
    away = f", {100 * result.flagged_away_share:.0f} % further from HR" if np.isfinite(result.flagged_away_share) else ""
    ax.set_title(
        f"|GAN − MSE|, flagged (cyan) {100 * result.fraction_flagged:.2f} %\n> {result.threshold:.3f} = {k:g} × noise sd {result.noise_sd:.3f}{away}",
        fontsize=7,
    )
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    bar.set_label("|GAN − MSE| (normalised HR units)", fontsize=7)
    bar.ax.tick_params(labelsize=6)


def _draw_departure_row(fig: Figure, row: Sequence[Axes], ex: dict[str, Any], columns: Sequence[str], *, k: float, noise: str) -> None:
    """One FOV: input, MSE, GAN, their departure map and the target, the most flagged window magnified."""
    hr = ex["hr"]
    mse, gan = ex["images"]["mse"], ex["images"]["gan"]
    result = departure_map(gan, mse, target=hr, k=k, noise=noise)
    vmin, vmax = _grey_range(hr)
    side = min(_INSET_SIZE, min(hr.shape) // 4)
    region = _most_flagged_region(result.flagged, side) or _brightest_variance_region(hr, side)
    bounds = _inset_bounds(region, hr.shape)
    for ax, column in zip(row, columns, strict=True):
        ax.set_xticks([])
        ax.set_yticks([])
        if column == "departure":
            _draw_departure_panel(fig, ax, result, region=region, bounds=bounds, k=k)
            continue
        image = {"input": ex["input"], "target": hr}.get(column)
        if image is None:
            image = ex["images"][column]
        _imshow_with_inset(ax, image, region=region, bounds=bounds, vmin=vmin, vmax=vmax)
        _label_image_panel(ax, column, ex, image, bounds)
    row[0].set_ylabel(f"{ex['name']}\nframe {ex['frame']}", fontsize=8)


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
    examples = _departure_examples([Path(p) for p in restored_zarr_paths], frame_index, max_rows)
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
        _draw_departure_row(fig, row, ex, columns, k=k, noise=noise)
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
