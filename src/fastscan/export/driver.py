"""The driver of ``fastscan export``, :func:`export_model`: load and check the model, cut and
restore the test tile, check the plain-torch architecture, then write, validate and put in place
the package (see :mod:`fastscan.export`)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastscan.export.description import _build_description, _default_description, _rdf_name
from fastscan.export.documents import _cover, _readme
from fastscan.export.model import ExportError, _geometry_config, _metrics_rows, _training_summary, _versions, architecture_kwargs, export_tiling
from fastscan.export.sample import _test_tile, as_batch
from fastscan.export.validate import _validate_package
from fastscan.export.weights import _plain_generator, _write_weights

log = logging.getLogger("fastscan.export")

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
        Per-image metrics table (``results/report/metrics.tsv``); default ``MODEL_DIR/metrics.tsv``,
        else the project's table for a model under ``results/models/`` (see
        :func:`~fastscan.export.model._metrics_rows`).
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
    try:  # checked first: the error names the extras to install
        import torch  # noqa: F401
        from bioimageio.spec import save_bioimageio_package  # noqa: F401
        from bioimageio.spec.model import v0_5  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"exporting needs bioimageio.spec and torch ({exc}): pip install 'fastscan[ml,export]'") from exc

    model_dir = Path(model_dir)
    out = Path(out)
    _check_output_path(out)
    if sample is not None and not isinstance(sample, np.ndarray) and not Path(sample).is_file():
        raise ExportError(f"{sample}: the sample image does not exist")
    model, meta, kwargs, scale, norm_lr = _load_model(model_dir)
    tiling = export_tiling(model, meta, kwargs)
    raw, test_source = _test_tile(sample, meta, tiling["test"], norm_lr, frames=kwargs["n_in"])
    x, restored = _restore_tile(model, raw, norm_lr, scale=scale, size=tiling["test"])
    plain, max_diff = _plain_generator(model_dir, kwargs, x, restored)
    fields = _package_fields(model_dir, name=name, description=description, authors=authors, license=license, tags=tags, version=version)
    metric_rows, metrics_source = _metrics_rows(metrics, model_dir)
    facts = {
        "model_dir": model_dir,
        "meta": meta,
        "kwargs": kwargs,
        "tiling": tiling,
        "scale": scale,
        "norm_lr": norm_lr,
        "training": _training_summary(meta),
        "metrics": metric_rows,
        "metrics_source": metrics_source,
        "test_source": test_source,
    }
    formats, onnx_note, status = _write_package(out, raw=raw, restored=restored, x=x, plain=plain, fields=fields, facts=facts, onnx=onnx, test=test)
    size = out.stat().st_size
    log.info("wrote %s (%.1f MB; weights %s; test %s)", out, size / 1e6, ", ".join(formats), status or "not run")
    return {"path": str(out), "formats": formats, "bytes": size, "tiling": tiling, "max_abs_diff": max_diff, "onnx_note": onnx_note, "test": status}


def _check_output_path(out: Path) -> None:
    if out.name.endswith("/") or not out.name.endswith(".zip"):
        raise ExportError(f"{out}: the package must be a .zip file (NAME.bioimageio.zip)")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give the path of the .zip file to write")


def _load_model(model_dir: Path) -> tuple[Any, dict[str, Any], dict[str, Any], int, list[float]]:
    """fastscan's generator on the CPU, its ``model.json``, the plain-torch architecture's keyword
    arguments, the scale and the LR normalisation range; refused when it cannot be exported."""
    from fastscan.models import load_generator, model_frames

    model, meta = load_generator(model_dir, device="cpu")
    kwargs = architecture_kwargs(meta, model_dir / "model.json")
    scale = int(meta["scale"])
    # One channel in, or the frames of a temporal window (resolve_architecture ties n_in to
    # architecture.frames); one channel out.
    if kwargs["n_in"] != model_frames(meta) or kwargs["n_out"] != 1:
        raise ExportError(
            f"{model_dir / 'model.json'}: only generators of one channel, or of one temporal window of one channel, can be exported "
            f"(n_in {kwargs['n_in']}, frames {model_frames(meta)}, n_out {kwargs['n_out']})"
        )
    norm_lr = [float(v) for v in meta["normalisation"]["lr"]]
    if norm_lr[1] <= norm_lr[0]:
        raise ExportError(f"{model_dir / 'model.json'}: normalisation.lr {norm_lr} is not an increasing range (low, high); retrain the model")
    return model, meta, kwargs, scale, norm_lr


def _restore_tile(model: Any, raw: np.ndarray, norm_lr: Sequence[float], *, scale: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The normalised tile (``(Y, X)``, or a temporal window ``(frames, Y, X)``) and fastscan's own
    restoration of it: its normalisation, its tile engine, float32 (the package's test output)."""
    from fastscan.dataset import normalise
    from fastscan.restore.engine import predict_image

    x = normalise(raw, *norm_lr)
    restored = predict_image(model, x, scale=scale, tile=size, overlap=0, batch_size=1, precision="float32")
    return x, restored


def _package_fields(
    model_dir: Path,
    *,
    name: str | None,
    description: str | None,
    authors: Sequence[Mapping[str, str]] | None,
    license: str | None,
    tags: Sequence[str] | None,
    version: str | None,
) -> dict[str, Any]:
    """The package's name, description, authors, licence, tags and version; :data:`EXPORT_DEFAULTS`
    for those not given (the description's default is written with the package)."""
    defaults = EXPORT_DEFAULTS
    return {
        "name": _rdf_name(name or f"fastscan {model_dir.name}"),
        "description": description,
        "authors": list(authors) if authors else list(defaults["authors"]),
        "license": license or defaults["license"],
        "tags": list(tags) if tags else list(defaults["tags"]),
        "version": version,
    }


def _write_package(
    out: Path, *, raw: np.ndarray, restored: np.ndarray, x: np.ndarray, plain: Any, fields: dict[str, Any], facts: dict[str, Any], onnx: bool, test: bool
) -> tuple[list[str], str | None, str | None]:
    """Write the package's files in a temporary folder next to ``out``, save and validate the
    package there and put it in place atomically. Returns the weight formats, the ONNX note and
    the test status."""
    import torch
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5

    from fastscan import __version__
    from fastscan.atomic import atomic_path

    meta, scale, norm_lr, model_dir = facts["meta"], facts["scale"], facts["norm_lr"], facts["model_dir"]
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = _write_test_files(work, raw, restored, norm_lr, scale)
        formats, onnx_note = _write_weights(work, files, model_dir, plain, x, onnx=onnx)
        readme = _readme(
            name=fields["name"],
            meta=meta,
            kwargs=facts["kwargs"],
            tiling=facts["tiling"],
            training=facts["training"],
            metrics=facts["metrics"],
            metrics_source=facts["metrics_source"],
            formats=formats,
            onnx_note=onnx_note,
            test_source=facts["test_source"],
        )
        files["readme"] = work / "README.md"
        files["readme"].write_text(readme, encoding="utf-8")
        geo = _geometry_config(meta)
        descr = _build_description(
            v0_5=v0_5,
            **{**fields, "description": fields["description"] or _default_description(scale, geo, facts["kwargs"]["n_in"])},
            files=files,
            formats=formats,
            kwargs=facts["kwargs"],
            tiling=facts["tiling"],
            meta=meta,
            scale=scale,
            norm_lr=norm_lr,
            training=facts["training"],
            metrics=facts["metrics"],
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
        with atomic_path(out) as tmp:
            os.replace(package, tmp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return formats, onnx_note, status


def _write_test_files(work: Path, raw: np.ndarray, restored: np.ndarray, norm_lr: Sequence[float], scale: int) -> dict[str, Path]:
    """The test tensors (input and fastscan's restoration) and the cover, written into ``work``."""
    files: dict[str, Path] = {}
    files["input"] = work / "test_input.npy"
    np.save(files["input"], as_batch(raw).astype(np.float32))
    files["output"] = work / "test_output.npy"
    np.save(files["output"], restored[None, None].astype(np.float32))
    files["cover"] = work / "cover.png"
    _cover(files["cover"], raw if raw.ndim == 2 else raw[len(raw) // 2], restored, norm_lr, scale)
    return files
