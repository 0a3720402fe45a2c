"""What a model directory says about the model, as the package needs it: the architecture's
keyword arguments, the tiling and valid input sizes, the training data, the frame corrections
the network expects, the versions and the metrics table; and :class:`ExportError`."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("fastscan.export")

#: Architecture keys of ``model.json`` that :class:`fastscan.torch_generator.FastscanGenerator` takes.
ARCH_KWARGS = ("variant", "scale", "n_in", "n_out", "blur", "self_attention", "norm_type", "y_range", "residual", "hr_head", "base_sigma")

#: Largest LR test tile: the test tensors only show and check the model, the user's tiles may be larger.
MAX_TEST_TILE = 128


class ExportError(ValueError):
    """A model cannot be exported, or the export options are wrong."""


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
    (:func:`fastscan.restore.receptive.model_tiling`); sizes are ``min + n * step`` with ``step`` the U-Net's
    alignment and ``min`` the smallest aligned size larger than twice the overlap, so a tile keeps
    an interior after its halo is cropped.
    """
    from fastscan.restore.receptive import model_tiling

    tiling = model_tiling(model, meta, scale=int(kwargs["scale"]), tile=None, overlap=None, device="cpu")
    tile, overlap = tiling.tile, tiling.overlap
    step = _input_align(kwargs)
    smallest = step * (2 * int(overlap) // step + 1)
    test = smallest + step * max(0, math.ceil((min(int(tile), MAX_TEST_TILE) - smallest) / step))
    return {"tile": int(tile), "overlap": int(overlap), "min": smallest, "step": step, "test": test}


def _metrics_rows(metrics: str | os.PathLike | None, model_dir: str | os.PathLike) -> tuple[list[dict[str, Any]], str | None]:
    """Mean PSNR/SSIM per method of the model's test images, and the table they came from.

    The table is ``metrics`` when given (a table that is missing, unreadable or holds no row of
    this model is an error); else ``metrics.tsv`` in the model directory; else, for a model where
    the workflow puts it (``results/models/NAME``), the project's ``results/report/metrics.tsv``.
    A table found rather than given gives no metrics, with a warning, where it cannot be read or
    holds none of this model's rows, and the project's table also where it is older than the
    model's weights (scores of an earlier model of that name). Only the rows of this model (the
    directory's name) count, summarised as the report does (:func:`fastscan.metrics.summarise_methods`).
    """
    model_dir = Path(model_dir).resolve()  # "." names a model too
    if metrics:
        return _read_metrics(Path(metrics), model_dir.name)
    own, project = model_dir / "metrics.tsv", model_dir.parent.parent / "report" / "metrics.tsv"
    if own.is_file():
        path = own
    elif model_dir.parent.name == "models" and project.is_file():
        path = project
        weights = model_dir / "generator.pth"
        if weights.is_file() and project.stat().st_mtime < weights.stat().st_mtime:
            log.warning("%s is older than %s: its scores are of an earlier model, not shown (rerun the workflow's metrics rule)", project, weights)
            return [], None
    else:
        return [], None
    try:
        return _read_metrics(path, model_dir.name)
    except ExportError as exc:
        log.warning("%s; no metrics shown", exc)
        return [], None


def _read_metrics(path: Path, model: str) -> tuple[list[dict[str, Any]], str]:
    """:func:`_metrics_rows` of one table, refusing what cannot be used, naming the table."""
    from fastscan.metrics import read_metrics_tsv, summarise_methods

    if not path.is_file():
        raise ExportError(f"{path}: the metrics table does not exist (it is written by the workflow's metrics rule)")
    try:
        table = read_metrics_tsv(path)
    except ValueError as exc:  # names the table and what it lacks
        raise ExportError(str(exc)) from exc
    except Exception as exc:  # pandas' parser errors have no common base
        raise ExportError(f"{path}: cannot read the metrics table ({exc})") from exc
    mine = table["model"] == model
    if not mine.any():
        others = sorted(table["model"].unique())
        raise ExportError(f"{path}: the metrics table holds no rows of model {model!r} (its models: {', '.join(others[:5]) or 'none'})")
    summary = summarise_methods(table[mine])
    rows = [
        {"method": str(r.method), "images": int(r.n), "psnr_mean": float(r.psnr_mean), "ssim_mean": float(r.ssim_mean)} for r in summary.itertuples(index=False)
    ]
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
        "gan_steps": meta.get("gan_steps"),
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
