"""Export a trained generator as a bioimage.io model package, and describe a model directory.

``fastscan export MODEL_DIR --out NAME.bioimageio.zip`` writes a package of the bioimage.io model
specification 0.5 (written and validated with ``bioimageio.spec``) that Fiji (deepImageJ), napari
and ilastik (through ``bioimageio.core``) run without fastscan:

- weights ``pytorch_state_dict`` (fastscan's own ``generator.pth``, unchanged, with the
  architecture :mod:`fastscan.torch_generator`, a file that imports only torch),
  ``torchscript`` (traced) and ``onnx`` (when the ``onnx`` package is installed);
- input ``batch, channel, y, x``: raw intensities of one channel, normalised by a fixed
  ``scale_linear`` with the model's own statistics (``model.json`` ``normalisation.lr``), never by
  per-image percentiles; y and x of ``min + n * step`` px;
- output ``batch, channel, y, x`` tied to the input at the model's scale (``SizeReference``), in
  the model's normalised HR units (the units of fastscan's restored OME-Zarr stores), with a halo of
  the tile overlap fastscan uses times the scale;
- test tensors, a cover (input | restored), a README (training data, metrics, validation),
  the paper's citation, the licence and the authors of the ``export`` configuration;
- ``config.fastscan``: normalisation, scale, tiling, and the frame corrections the network expects
  (line phase and resonant field fraction): the model was trained on frames whose fitted scan
  model was undone, so frames must arrive corrected.

Nothing is downloaded: the description names no URL and no GitHub user, the only fields that
``bioimageio.spec`` checks over the network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ExportError", "EXPORT_DEFAULTS", "PAPER", "architecture_kwargs", "export_model", "export_tiling", "model_info"]

#: The paper the generator follows (cited in every package).
PAPER = {
    "text": "Fang L, Monroe F, Novak SW, et al. Deep learning-based point-scanning super-resolution imaging. Nature Methods 18, 406-416 (2021).",
    "doi": "10.1038/s41592-021-01080-z",
}

#: Defaults of the workflow's optional ``export`` configuration section (and of ``fastscan export``).
EXPORT_DEFAULTS: dict[str, Any] = {
    "authors": [{"name": "fastscan contributors"}],
    "license": "BSD-3-Clause",
    "name": None,
    "description": None,
    "tags": ["super-resolution", "denoising", "laser-scanning-microscopy", "resonant-scanning", "2d", "pytorch", "fastscan"],
    "version": None,
    "onnx": True,
    "test": True,
}

#: Architecture keys of ``model.json`` that :class:`fastscan.torch_generator.FastscanGenerator` takes.
ARCH_KWARGS = ("variant", "scale", "n_in", "n_out", "blur", "self_attention", "norm_type", "y_range", "residual", "hr_head", "base_sigma")

#: Largest LR test tile: the test tensors only show and check the model, the user's tiles may be larger.
MAX_TEST_TILE = 128

#: Agreement the export demands between fastscan's generator and the plain-torch architecture on
#: the test tile before writing anything: both compute the same float32 operations (the weight
#: norm through the same kernel), so they agree to rounding (0 on the CPU in the tests); 1e-4 in
#: normalised HR units is 0.01 % of the training HR range and far below any real mismatch.
ARCH_TOLERANCE = 1e-4

#: Reproducibility tolerance written into the package (``config.bioimageio``): the test output is
#: fastscan's float32 restoration; other BLAS/oneDNN/cuDNN builds and GPUs sum convolutions in
#: another order (about 1e-6 relative here, up to 1e-4 with TF32 on Ampere and later GPUs).
#: 1e-3 of the HR training range stays invisible in a restored image.
PACKAGE_TOLERANCE = {"relative_tolerance": 1e-3, "absolute_tolerance": 1e-3, "mismatched_elements_per_million": 100}


class ExportError(ValueError):
    """A model cannot be exported, or the export options are wrong."""


# --------------------------------------------------------------------------------------------
# what the package says about the model


def architecture_kwargs(meta: Mapping[str, Any], path: str | os.PathLike = "model.json") -> dict[str, Any]:
    """The keyword arguments of :class:`~fastscan.torch_generator.FastscanGenerator` for a model."""
    from fastscan.models import resolve_architecture
    from fastscan.torch_generator import NORM_TYPES

    arch = dict(meta.get("architecture") or {})
    # As fastscan.models.load_generator: models written before these keys existed had neither.
    arch.setdefault("residual", False)
    arch.setdefault("hr_head", 0)
    arch.setdefault("base_sigma", 0.0)
    arch = resolve_architecture(arch)
    if arch["arch"] != "resnet34":
        raise ExportError(f"{path}: architecture.arch {arch['arch']!r} cannot be exported (only resnet34 is implemented)")
    if arch["norm_type"] not in NORM_TYPES:
        raise ExportError(f"{path}: architecture.norm_type {arch['norm_type']!r} is not one of {list(NORM_TYPES)}")
    return {k: arch[k] for k in ARCH_KWARGS}


def _input_align(kwargs: Mapping[str, Any]) -> int:
    """LR px that y and x must be a multiple of: the U-Net halves its input five times, and the
    faithful variant's U-Net runs on the tile resized by the scale."""
    input_scale = int(kwargs["scale"]) if kwargs["variant"] == "faithful" else 1
    return 32 // math.gcd(32, input_scale)


def export_tiling(model: Any, meta: Mapping[str, Any], kwargs: Mapping[str, Any]) -> dict[str, int]:
    """Tile, overlap (LR px) and the valid input sizes of the package.

    The tile and overlap are the ones ``fastscan restore`` chooses for this model
    (:func:`fastscan.restore.receptive.auto_tiling`); sizes are ``min + n * step`` with ``step`` the U-Net's
    alignment and ``min`` the smallest aligned size larger than twice the overlap, so a tile keeps
    an interior after its halo is cropped.
    """
    from fastscan.restore.receptive import auto_tiling, training_context

    input_scale = int(getattr(model, "input_scale", kwargs["scale"]))
    tile, overlap = auto_tiling(model, device="cpu", input_scale=input_scale, context=training_context(meta))
    step = _input_align(kwargs)
    smallest = step * (2 * int(overlap) // step + 1)
    test = smallest + step * max(0, math.ceil((min(int(tile), MAX_TEST_TILE) - smallest) / step))
    return {"tile": int(tile), "overlap": int(overlap), "min": smallest, "step": step, "test": test}


def _dataset_tile(meta: Mapping[str, Any]) -> np.ndarray | None:
    """The most textured of the first validation tiles of the model's dataset store (raw LR
    intensities, in the model's input geometry), or None when the store is not at hand."""
    import zarr

    path = (meta.get("dataset") or {}).get("path")
    if not path or not Path(path).is_dir():
        return None
    try:
        from fastscan.dataset import read_dataset

        group, tiles, _ = read_dataset(path)
        rows = tiles.index[tiles["split"] == "val"].tolist()[:64] or tiles.index.tolist()[:64]
        if not rows:
            return None
        lr = group["lr"]
        stack = np.stack([np.asarray(lr[int(i)], dtype=np.float32) for i in rows])
    except (OSError, KeyError, ValueError, zarr.errors.BaseZarrError) as exc:
        log.warning("%s: cannot read a test tile from the dataset store (%s); using a synthetic one", path, exc)
        return None
    return stack[int(np.argmax(stack.reshape(len(stack), -1).std(axis=1)))]


def _synthetic_tile(size: int, low: float, high: float, seed: int = 0) -> np.ndarray:
    """A smooth random texture over the model's LR range (raw intensities)."""
    from scipy import ndimage as ndi

    texture = ndi.gaussian_filter(np.random.default_rng(seed).random((size, size)), 2.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return (low + texture * (high - low)).astype(np.float32)


def _read_sample(path: str | os.PathLike) -> np.ndarray:
    """A 2-D image from a ``.npy`` or TIFF file (the first plane of a stack)."""
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"{p}: the sample image does not exist")
    try:
        if p.suffix == ".npy":
            arr = np.load(p, allow_pickle=False)
        else:
            import tifffile

            arr = tifffile.imread(p, key=0)
    except Exception as exc:  # numpy and tifffile raise many kinds for files they cannot read
        raise ExportError(f"{p}: cannot read the sample image ({exc}); give a .npy or TIFF file of one channel") from exc
    arr = np.squeeze(np.asarray(arr))
    while arr.ndim > 2:
        arr = arr[0]
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise ExportError(f"{p}: the sample image must be a 2-D grayscale image, got shape {arr.shape} of {arr.dtype}")
    return arr.astype(np.float32)


def _fit(tile: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` x ``size`` centre crop of ``tile``, reflect-padded where it is smaller."""
    out = tile
    for axis in (0, 1):
        n = out.shape[axis]
        if n >= size:
            start = (n - size) // 2
            out = np.take(out, range(start, start + size), axis=axis)
        else:
            pad = [(0, 0), (0, 0)]
            pad[axis] = ((size - n) // 2, size - n - (size - n) // 2)
            out = np.pad(out, pad, mode="reflect" if n > 1 else "edge")
    return np.ascontiguousarray(out, dtype=np.float32)


def _metrics_rows(metrics: str | os.PathLike | None, model_dir: Path, model: str) -> tuple[list[dict[str, Any]], str | None]:
    """Mean PSNR/SSIM per method of the model's test images, from a per-image metrics table
    (``results/report/metrics.tsv``, or ``metrics.tsv`` in the model directory)."""
    import pandas as pd

    path = Path(metrics) if metrics else model_dir / "metrics.tsv"
    if not path.is_file():
        if metrics:
            raise ExportError(f"{path}: the metrics table does not exist (it is written by the workflow's metrics rule)")
        return [], None
    try:
        table = pd.read_csv(path, sep="\t")
    except Exception as exc:  # pandas' parser errors have no common base
        raise ExportError(f"{path}: cannot read the metrics table ({exc})") from exc
    need = {"method", "psnr", "ssim"}
    if not need <= set(table.columns):
        raise ExportError(f"{path}: the metrics table lacks the columns {sorted(need - set(table.columns))} (see fastscan.metrics.METRIC_COLUMNS)")
    if "model" in table.columns and (table["model"].astype(str) == model).any():
        table = table[table["model"].astype(str) == model]
    rows = []
    for method, part in table.groupby("method", sort=False):
        rows.append(
            {
                "method": str(method),
                "images": int(len(part)),
                "psnr_mean": float(part["psnr"].mean()),
                "ssim_mean": float(part["ssim"].mean()),
            }
        )
    return rows, str(path)


def _training_summary(meta: Mapping[str, Any]) -> dict[str, Any]:
    """What ``model.json`` says about the training data."""
    ds = dict(meta.get("dataset") or {})
    cfg = dict(meta.get("config") or {})
    return {
        "dataset": ds.get("path"),
        "tile_lr_px": ds.get("tile"),
        "tiles": ds.get("counts"),
        "stage": meta.get("stage"),
        "epochs": {k: (cfg.get(k) or {}).get("epochs") for k in ("generator", "critic", "gan") if isinstance(cfg.get(k), dict)},
        "pretrained_encoder": cfg.get("pretrained"),
        "seed": meta.get("seed"),
    }


def _geometry_config(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The frame corrections the network expects, for ``config.fastscan.input_corrections``."""
    geo = dict(meta.get("geometry") or {})
    if geo.get("correct"):
        return {
            "required": True,
            "line_phase_px": {
                "value": None,
                "per_acquisition": True,
                "description": "line phase of the odd (backward) lines in LR px, measured on each series "
                "(fastscan.register.estimate_line_phase on the mean frame); undo it symmetrically between both scan directions",
            },
            "field_fraction": {
                "value": float(geo["field_fraction"]),
                "per_acquisition": False,
                "description": "resonant scanner field fraction: the median fitted on the training FOVs (a property of the "
                "scanner setting); undo the sinusoidal line warp with it (fastscan.geometry.correct_frames)",
            },
        }
    return {
        "required": False,
        "description": "this model was trained on frames as acquired (no line phase or resonant warp correction): give it "
        "frames from the same scanner settings as acquired",
        "line_phase_px": {"value": None, "per_acquisition": True},
        "field_fraction": {"value": None, "per_acquisition": True},
    }


def _versions(meta: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (meta.get("versions") or {}).items()}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# the package's files


def _cover(path: Path, raw: np.ndarray, restored: np.ndarray, norm_lr: Sequence[float], scale: int) -> None:
    """``input | restored`` side by side, both on the model's normalised scale (0..1 shown)."""
    from PIL import Image

    lr = (raw - norm_lr[0]) / max(norm_lr[1] - norm_lr[0], 1e-6)
    lr = np.kron(lr, np.ones((scale, scale), np.float32))  # nearest neighbour: the pixels as acquired
    both = np.concatenate([lr, np.full((lr.shape[0], max(2, lr.shape[1] // 64)), 1.0, np.float32), restored], axis=1)
    img = (np.clip(both, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(img, mode="L")
    if im.width < 512:  # covers are shown at a few hundred pixels
        k = math.ceil(512 / im.width)
        im = im.resize((im.width * k, im.height * k), Image.NEAREST)
    im.save(path)


def _readme(
    *,
    name: str,
    meta: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    tiling: Mapping[str, int],
    training: Mapping[str, Any],
    metrics: list[dict[str, Any]],
    metrics_source: str | None,
    formats: Sequence[str],
    onnx_note: str | None,
    test_source: str,
) -> str:
    norm = meta["normalisation"]
    s = int(meta["scale"])
    geo = _geometry_config(meta)
    lines = [
        f"# {name}",
        "",
        "Restores fast, video-rate laser-scanning microscopy frames to the quality of slow, high-resolution scans: a "
        f"U-Net GAN generator (ResNet34 encoder, fastai DynamicUnet, variant `{kwargs['variant']}`) that denoises and "
        f"upsamples by {s} (Fang et al., Nature Methods 2021). Trained and exported by fastscan "
        f"{_versions(meta).get('fastscan', 'unknown')}.",
        "",
        "## Input",
        "",
        f"- One channel, raw intensities of frames acquired with the scanner settings of the training data, float32; "
        f"y and x of {tiling['min']} + n * {tiling['step']} px.",
        f"- Normalised inside the package with the model's fixed training statistics: (v - {norm['lr'][0]:g}) / "
        f"({norm['lr'][1]:g} - {norm['lr'][0]:g}) (`scale_linear`), never with per-image percentiles: the network "
        "learnt the intensity scale of its training data.",
    ]
    if geo["required"]:
        lines += [
            "- **Frames must already be line-phase and resonance corrected.** The network was trained on frames whose "
            "line phase (the offset between forward and backward lines) was undone symmetrically and whose resonant "
            f"line warp was undone with field fraction {geo['field_fraction']['value']:g} "
            "(`config.fastscan.input_corrections`). The line phase differs between acquisitions: measure it on each "
            "series. `fastscan restore --series` does both corrections itself.",
        ]
    else:
        lines += ["- Frames as acquired: this model was trained without line phase or resonant warp correction."]
    lines += [
        "",
        "## Output",
        "",
        f"- {s} times the input's y and x, in the model's normalised HR units: 0 and 1 are the "
        f"{norm.get('percentiles', ['low', 'high'])} percentiles of the training HR targets ({norm['hr'][0]:g} and "
        f"{norm['hr'][1]:g} in HR detector units; multiply by {norm['hr'][1] - norm['hr'][0]:g} and add {norm['hr'][0]:g} "
        "to get those). fastscan's restored OME-Zarr stores use the same units.",
        f"- Tiles: fastscan restores this model in LR tiles of {tiling['tile']} px overlapping by {tiling['overlap']} px; "
        f"the output halo ({tiling['overlap'] * s} px each side) is that overlap and should be cropped when tiling.",
        "",
        "## Weights",
        "",
        f"Formats: {', '.join(formats)}. `pytorch_state_dict` is fastscan's `generator.pth` unchanged, with "
        "`torch_generator.py` (torch only) as its architecture; `torchscript` is traced from it.",
    ]
    if onnx_note:
        lines += ["", onnx_note]
    lines += [
        "",
        "## Training data",
        "",
        f"- Dataset: {training.get('dataset') or 'not recorded'}; LR tiles of {training.get('tile_lr_px') or '?'} px; "
        f"tile counts {json.dumps(training.get('tiles')) if training.get('tiles') else 'not recorded'}.",
        f"- Stage {training.get('stage') or '?'}; epochs {json.dumps(training.get('epochs') or {})}; seed {training.get('seed')}.",
        f"- Test tensors: {test_source}.",
        "",
        "## Validation",
        "",
    ]
    if metrics:
        lines += [
            f"Held-out test images (from `{metrics_source}`), against the registered HR target on the normalised HR scale (data range 1):",
            "",
            "| method | images | PSNR (dB) | SSIM |",
            "|---|---|---|---|",
        ]
        lines += [f"| {r['method']} | {r['images']} | {r['psnr_mean']:.2f} | {r['ssim_mean']:.3f} |" for r in metrics]
    else:
        lines += [
            "No metrics table was available at export. Validate on held-out pairs of your own: restore the fast frames and "
            "compare with slow HR scans of the same field (PSNR and SSIM on the normalised HR scale, data range 1), as "
            "fastscan's metrics rule does."
        ]
    lines += [
        "",
        "## Use",
        "",
        "- Fiji: install deepImageJ, open this .zip with *DeepImageJ Install Model*, run it on a single-channel image; "
        "TorchScript weights run in deepImageJ's PyTorch engine.",
        "- napari: the bioimage.io plugin (napari-bioimageio / bioimageio.core) runs the package on a layer.",
        "- ilastik: the Neural Network Workflow loads the .zip.",
        "- Python: `bioimageio.core.predict(model='this.zip', inputs=frame)`.",
        "",
        "## Citation",
        "",
        f"{PAPER['text']} doi:{PAPER['doi']}",
        "",
    ]
    return "\n".join(lines)


def _export_onnx(plain: Any, example: Any, path: Path) -> str | None:
    """Write ONNX weights with dynamic batch, y and x; the reason when that is not possible."""
    try:
        import onnx  # noqa: F401
        import torch
    except ImportError:
        return "onnx is not installed (pip install 'fastscan[export]')"
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                plain,
                (example,),
                str(path),
                input_names=["input"],
                output_names=["output"],
                opset_version=18,
                dynamic_axes={"input": {0: "batch", 2: "y", 3: "x"}, "output": {0: "batch", 2: "y_out", 3: "x_out"}},
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many kinds; the package is still useful without ONNX
        return f"torch.onnx.export failed: {type(exc).__name__}: {str(exc)[:300]}"
    return None


def _check_output_path(out: Path) -> None:
    if out.name.endswith("/") or not out.name.endswith(".zip"):
        raise ExportError(f"{out}: the package must be a .zip file (NAME.bioimageio.zip)")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give the path of the .zip file to write")


def _rdf_name(name: str) -> str:
    """A name bioimage.io accepts: letters, digits, ``_+- ()``, at most 128 characters."""
    import re
    import string

    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    clean = "".join(c if c in allowed else "-" for c in name)
    clean = re.sub(r"-{2,}", "-", clean).strip("- ")[:128]
    return clean if len(clean) >= 5 else f"fastscan {clean}".strip()  # the spec wants 5 characters or more


def export_model(
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    description: str | None = None,
    authors: Sequence[Mapping[str, str]] | None = None,
    license: str | None = None,
    tags: Sequence[str] | None = None,
    version: str | None = None,
    sample: str | os.PathLike | np.ndarray | None = None,
    metrics: str | os.PathLike | None = None,
    onnx: bool = True,
    test: bool = True,
) -> dict[str, Any]:
    """Write the bioimage.io package of a trained generator.

    Parameters
    ----------
    model_dir : path-like
        ``generator.pth`` + ``model.json``.
    out : path-like
        ``NAME.bioimageio.zip``; written atomically (a temporary file renamed at the end).
    name, description, authors, license, tags, version
        Package fields; None takes :data:`EXPORT_DEFAULTS` (name: the model directory's name).
        ``authors``: dicts with ``name`` and optionally ``affiliation``, ``email``, ``orcid``.
    sample : path-like or ndarray, optional
        A raw 2-D LR image (``.npy`` or TIFF) to cut the test tile from, already in the model's
        input geometry; default: a validation tile of the model's dataset store, else a synthetic
        texture over the model's LR range.
    metrics : path-like, optional
        Per-image metrics table (``results/report/metrics.tsv``); default ``MODEL_DIR/metrics.tsv``
        when present.
    onnx : bool
        Add ONNX weights when the ``onnx`` package is installed.
    test : bool
        Run ``bioimageio.core``'s model test on the written package (every weight format
        reproduces the test output); a failure removes the package and raises.

    Returns
    -------
    dict
        ``path``, ``formats``, ``bytes``, ``tiling``, ``max_abs_diff`` (plain-torch architecture
        against fastscan's generator on the test tile), ``onnx_note`` and ``test`` (the
        ``bioimageio.core`` status, or None).
    """
    try:
        import torch
        from bioimageio.spec import save_bioimageio_package
        from bioimageio.spec.model import v0_5
    except ImportError as exc:
        raise ExportError(f"exporting needs bioimageio.spec and torch ({exc}): pip install 'fastscan[ml,export]'") from exc

    from fastscan import __version__
    from fastscan.dataset import normalise
    from fastscan.models import load_generator, load_state_dict
    from fastscan.restore.engine import predict_image
    from fastscan.torch_generator import FastscanGenerator

    model_dir = Path(model_dir)
    out = Path(out)
    _check_output_path(out)
    if sample is not None and not isinstance(sample, np.ndarray) and not Path(sample).is_file():
        raise ExportError(f"{sample}: the sample image does not exist")
    model, meta = load_generator(model_dir, device="cpu")
    kwargs = architecture_kwargs(meta, model_dir / "model.json")
    scale = int(meta["scale"])
    if kwargs["n_in"] != 1 or kwargs["n_out"] != 1:
        raise ExportError(f"{model_dir / 'model.json'}: only single-channel generators can be exported (n_in {kwargs['n_in']}, n_out {kwargs['n_out']})")
    norm_lr = [float(v) for v in meta["normalisation"]["lr"]]
    if norm_lr[1] <= norm_lr[0]:
        raise ExportError(f"{model_dir / 'model.json'}: normalisation.lr {norm_lr} is not an increasing range (low, high); retrain the model")
    tiling = export_tiling(model, meta, kwargs)
    size = tiling["test"]

    if isinstance(sample, np.ndarray):
        raw, test_source = np.asarray(sample, np.float32), "a tile of the image given to the export"
    elif sample is not None:
        raw, test_source = _read_sample(sample), f"a tile of {Path(sample).name}"
    else:
        raw = _dataset_tile(meta)
        test_source = "the most textured validation tile of the training dataset"
        if raw is None:
            raw = _synthetic_tile(size, *norm_lr)
            test_source = "a synthetic smooth texture over the model's LR range (no dataset store was at hand)"
    raw = _fit(raw, size)

    # fastscan's own restoration of the tile: its normalisation, its tile engine, float32.
    x = normalise(raw, *norm_lr)
    restored = predict_image(model, x, scale=scale, tile=size, overlap=0, batch_size=1, precision="float32")

    plain = FastscanGenerator(**kwargs).eval()
    state = load_state_dict(model_dir / "generator.pth")
    plain.load_state_dict(state, strict=True)
    with torch.inference_mode():
        plain_out = plain(torch.from_numpy(x)[None, None]).numpy()[0, 0]
    max_diff = float(np.abs(plain_out - restored).max())
    if not max_diff <= ARCH_TOLERANCE:
        raise ExportError(
            f"{model_dir / 'generator.pth'}: the plain-torch architecture (fastscan/torch_generator.py) differs from fastscan's "
            f"generator by {max_diff:.3g} on the test tile (more than {ARCH_TOLERANCE:g}): the package would not reproduce the model"
        )

    defaults = EXPORT_DEFAULTS
    name = _rdf_name(name or f"fastscan {model_dir.name}")
    authors = list(authors) if authors else list(defaults["authors"])
    license = license or defaults["license"]
    tags = list(tags) if tags else list(defaults["tags"])
    metric_rows, metrics_source = _metrics_rows(metrics, model_dir, model_dir.name)
    training = _training_summary(meta)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files: dict[str, Path] = {}
        files["input"] = work / "test_input.npy"
        np.save(files["input"], raw[None, None].astype(np.float32))
        files["output"] = work / "test_output.npy"
        np.save(files["output"], restored[None, None].astype(np.float32))
        files["cover"] = work / "cover.png"
        _cover(files["cover"], raw, restored, norm_lr, scale)
        files["arch"] = work / "torch_generator.py"
        shutil.copyfile(Path(__file__).with_name("torch_generator.py"), files["arch"])
        files["state"] = work / "generator.pth"
        shutil.copyfile(model_dir / "generator.pth", files["state"])
        files["torchscript"] = work / "generator.torchscript.pt"
        example = torch.from_numpy(x)[None, None]
        import warnings

        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings of the size checks, which hold for every valid size
            traced = torch.jit.trace(plain, example, check_trace=False)
        traced.save(str(files["torchscript"]))
        formats = ["pytorch_state_dict", "torchscript"]
        onnx_note = None
        if onnx:
            files["onnx"] = work / "generator.onnx"
            reason = _export_onnx(plain, example, files["onnx"])
            if reason is None:
                formats.append("onnx")
            else:
                onnx_note = f"No ONNX weights: {reason}."
                log.warning("%s", onnx_note)
        else:
            onnx_note = "No ONNX weights: left out at export (onnx: false)."

        readme = _readme(
            name=name,
            meta=meta,
            kwargs=kwargs,
            tiling=tiling,
            training=training,
            metrics=metric_rows,
            metrics_source=metrics_source,
            formats=formats,
            onnx_note=onnx_note,
            test_source=test_source,
        )
        files["readme"] = work / "README.md"
        files["readme"].write_text(readme, encoding="utf-8")

        geo = _geometry_config(meta)
        default_description = (
            f"Restores fast laser-scanning microscopy frames (denoising and {scale}x super-resolution, Fang et al. 2021). "
            + ("Frames must already be line-phase and resonance corrected (config.fastscan.input_corrections). " if geo["required"] else "")
            + "Input: raw intensities of one channel; output: normalised HR units."
        )
        descr = _build_description(
            v0_5=v0_5,
            name=name,
            description=description or default_description,
            authors=authors,
            license=license,
            tags=tags,
            version=version,
            files=files,
            formats=formats,
            kwargs=kwargs,
            tiling=tiling,
            meta=meta,
            scale=scale,
            norm_lr=norm_lr,
            training=training,
            metrics=metric_rows,
            versions={"fastscan_export": __version__, **_versions(meta)},
            torch_version=torch.__version__,
            geometry=geo,
            model_dir=model_dir,
        )
        package = work / "package.zip"
        # Stored, not deflated: float32 weights shrink by about a tenth, and every consumer (and
        # bioimageio.core's test, 14 s of 39 s for the test model) would inflate them on each load.
        save_bioimageio_package(descr, output_path=package, compression=zipfile.ZIP_STORED)
        status = _validate_package(package, formats if test else None)
        from fastscan.atomic import atomic_path

        with atomic_path(out) as tmp:
            os.replace(package, tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        "path": str(out),
        "formats": formats,
        "bytes": out.stat().st_size,
        "tiling": tiling,
        "max_abs_diff": max_diff,
        "onnx_note": onnx_note,
        "test": status,
    }
    log.info("wrote %s (%.1f MB; weights %s; test %s)", out, summary["bytes"] / 1e6, ", ".join(formats), status or "not run")
    return summary


def _build_description(*, v0_5: Any, files: Mapping[str, Path], **k: Any) -> Any:
    """The ``ModelDescr`` (validated by pydantic as it is built)."""
    from bioimageio.spec import ValidationContext
    from bioimageio.spec.dataset.v0_3 import DatasetDescr

    tiling, scale, norm_lr, kwargs = k["tiling"], k["scale"], k["norm_lr"], k["kwargs"]
    gain = 1.0 / (norm_lr[1] - norm_lr[0])
    space = {"scale": 1.0}
    inputs = [
        v0_5.InputTensorDescr(
            id=v0_5.TensorId("raw"),
            description="raw intensities of one channel (fast frames, scanner settings of the training data)",
            axes=[
                v0_5.BatchAxis(),
                v0_5.ChannelAxis(channel_names=[v0_5.Identifier("raw")]),
                v0_5.SpaceInputAxis(id=v0_5.AxisId("y"), size=v0_5.ParameterizedSize(min=tiling["min"], step=tiling["step"]), **space),
                v0_5.SpaceInputAxis(id=v0_5.AxisId("x"), size=v0_5.ParameterizedSize(min=tiling["min"], step=tiling["step"]), **space),
            ],
            test_tensor=v0_5.FileDescr(source=files["input"]),
            data=v0_5.IntervalOrRatioDataDescr(type="float32"),
            preprocessing=[
                v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")),
                v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=gain, offset=-norm_lr[0] * gain)),
            ],
        )
    ]
    out_axes = []
    for axis in ("y", "x"):
        out_axes.append(
            v0_5.SpaceOutputAxisWithHalo(
                id=v0_5.AxisId(axis),
                size=v0_5.SizeReference(tensor_id=v0_5.TensorId("raw"), axis_id=v0_5.AxisId(axis)),
                halo=tiling["overlap"] * scale,
                scale=1.0 / scale,
            )
        )
    outputs = [
        v0_5.OutputTensorDescr(
            id=v0_5.TensorId("restored"),
            description="restored HR image in normalised HR units (0..1: the training HR range)",
            axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=[v0_5.Identifier("restored")]), *out_axes],
            test_tensor=v0_5.FileDescr(source=files["output"]),
            data=v0_5.IntervalOrRatioDataDescr(type="float32"),
            postprocessing=[v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))],
        )
    ]
    state = v0_5.PytorchStateDictWeightsDescr(
        source=files["state"],
        architecture=v0_5.ArchitectureFromFileDescr(source=files["arch"], callable=v0_5.Identifier("FastscanGenerator"), kwargs=dict(kwargs)),
        pytorch_version=v0_5.Version(k["torch_version"].split("+")[0]),
    )
    weights = {
        "pytorch_state_dict": state,
        "torchscript": v0_5.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=v0_5.Version(k["torch_version"].split("+")[0]), parent="pytorch_state_dict"
        ),
    }
    if "onnx" in k["formats"]:
        weights["onnx"] = v0_5.OnnxWeightsDescr(source=files["onnx"], opset_version=18, parent="pytorch_state_dict")
    meta = k["meta"]
    training = k["training"]
    fastscan_cfg = {
        "model": k["model_dir"].name,
        "model_digest": _digest(k["model_dir"] / "generator.pth"),
        "versions": k["versions"],
        "variant": kwargs["variant"],
        "scale": scale,
        "normalisation": meta["normalisation"],
        "output_units": "normalised HR: (v - hr_low) / (hr_high - hr_low) with normalisation.hr",
        "tiling": {"tile_lr_px": tiling["tile"], "overlap_lr_px": tiling["overlap"]},
        "input_corrections": k["geometry"],
        "training": training,
        "metrics": k["metrics"],
    }
    tolerance = v0_5.ReproducibilityTolerance(**PACKAGE_TOLERANCE)
    config = v0_5.Config(
        bioimageio=v0_5.BioimageioConfig(
            reproducibility_tolerance=[tolerance],
            architecture_type="U-Net GAN generator",
            architecture_description="fastai DynamicUnet on a ResNet34 encoder with blur, self-attention and weight "
            f"normalisation; variant {kwargs['variant']}, residual to the bilinear upsampling: {kwargs['residual']}",
            modality="laser-scanning fluorescence microscopy (resonant / fast point scanning)",
            task="super-resolution and denoising",
        ),
        fastscan=fastscan_cfg,
    )
    dataset = DatasetDescr(
        name=_rdf_name(f"{k['name']} training data"),
        description=(
            f"Registered pairs of fast LR series and slow HR scans, tiled at {training.get('tile_lr_px') or '?'} LR px "
            f"(counts {json.dumps(training.get('tiles'))}), from {training.get('dataset') or 'a dataset not recorded in model.json'}."
        ),
        format_version="0.3.0",
        type="dataset",
    )
    with ValidationContext(perform_io_checks=True):
        return v0_5.ModelDescr(
            name=k["name"],
            description=k["description"],
            authors=[v0_5.Author(**dict(a)) for a in k["authors"]],
            cite=[v0_5.CiteEntry(text=PAPER["text"], doi=v0_5.Doi(PAPER["doi"]))],
            license=v0_5.LicenseId(k["license"]),
            tags=k["tags"],
            version=k["version"],
            documentation=v0_5.FileDescr(source=files["readme"]),
            covers=[v0_5.FileDescr(source=files["cover"])],
            inputs=inputs,
            outputs=outputs,
            weights=v0_5.WeightsDescr(**weights),
            training_data=dataset,
            config=config,
        )


def _validate_package(package: Path, formats: Sequence[str] | None) -> str | None:
    """Reload the written package (static validation) and, with ``formats``, run bioimageio.core's model test."""
    from bioimageio.spec import InvalidDescr, load_model_description

    descr = load_model_description(package, perform_io_checks=True)
    if isinstance(descr, InvalidDescr):
        raise ExportError(
            f"{package}: the written package does not validate:\n{descr.validation_summary.display_str() if hasattr(descr.validation_summary, 'display_str') else descr.validation_summary}"
        )
    if formats is None:
        return None
    try:
        from bioimageio.core import test_model
    except ImportError as exc:
        raise ExportError(f"testing the package needs bioimageio.core ({exc}): pip install 'fastscan[export]', or export without the test") from exc
    summary = test_model(package, devices=["cpu"])
    if summary.status != "passed":
        failed = [f"{d.name}: {e.msg}" for d in summary.details if d.status == "failed" for e in d.errors] or [
            d.name for d in summary.details if d.status == "failed"
        ]
        raise ExportError(f"bioimageio.core's model test failed on the package: {'; '.join(failed)[:2000]}")
    return str(summary.status)


# --------------------------------------------------------------------------------------------
# fastscan info


def model_info(model_dir: str | os.PathLike, *, metrics: str | os.PathLike | None = None) -> str:
    """A readable account of a model directory: what it was trained on, how it normalises, its
    input geometry and scale, its metrics (``MODEL_DIR/metrics.tsv`` or ``metrics``) and the
    fastscan version that made it."""
    from fastscan.models import ModelError, read_model_json

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"{model_dir}: not a folder; give a model directory (generator.pth + model.json)")
    meta = read_model_json(model_dir)
    weights = model_dir / "generator.pth"
    arch = dict(meta.get("architecture") or {})
    norm = meta.get("normalisation") or {}
    geo = meta.get("geometry") or {}
    training = _training_summary(meta)
    versions = _versions(meta)
    lines = [
        f"model          {model_dir}",
        f"weights        {weights} ({weights.stat().st_size / 1e6:.1f} MB)"
        if weights.is_file()
        else f"weights        {weights}: missing (copy generator.pth into the folder)",
        f"made by        fastscan {versions.get('fastscan', 'unknown (model.json has no versions)')}"
        + (f", torch {versions['torch']}, fastai {versions.get('fastai', '?')}" if "torch" in versions else ""),
        f"stage          {meta.get('stage', 'unknown')}",
        f"generator      {arch.get('variant', 'faithful')} ResNet34 U-Net, scale {meta.get('scale', arch.get('scale', '?'))}, "
        f"self-attention {arch.get('self_attention', True)}, residual {arch.get('residual', False)}",
        f"normalisation  LR {norm.get('lr')} -> [0, 1], HR {norm.get('hr')} -> [0, 1]"
        + (f" (percentiles {norm['percentiles']})" if norm.get("percentiles") else ""),
    ]
    if geo.get("correct"):
        lines.append(f"geometry       frames corrected before the network: line phase (per series) and resonant warp, field fraction {geo['field_fraction']:g}")
    else:
        lines.append("geometry       frames used as acquired (no line phase or resonant warp correction)")
    if training["dataset"] or training["tiles"]:
        lines.append(f"training data  {training['dataset'] or '?'}: LR tiles of {training['tile_lr_px'] or '?'} px, counts {json.dumps(training['tiles'])}")
    else:
        lines.append("training data  not recorded in model.json")
    if training["epochs"]:
        lines.append(f"epochs         {json.dumps(training['epochs'])}")
    curves = meta.get("curves") or []
    last = next((c for c in reversed(curves) if isinstance(c, dict) and c.get("valid_psnr") is not None), None)
    if last is not None:
        lines.append(f"last epoch     {last.get('stage', '?')} epoch {last.get('epoch', '?')}: validation PSNR {float(last['valid_psnr']):.2f} dB")
    try:
        rows, source = _metrics_rows(metrics, model_dir, model_dir.name)
    except ExportError as exc:
        raise ModelError(str(exc)) from exc
    if rows:
        lines.append(f"metrics        {source}")
        lines += [f"  {r['method']:<12} {r['images']:>4} images  PSNR {r['psnr_mean']:6.2f} dB  SSIM {r['ssim_mean']:.3f}" for r in rows]
    else:
        lines.append("metrics        none at hand (give --metrics results/report/metrics.tsv)")
    return "\n".join(lines)
