"""``fastscan info``: a readable account of a model directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastscan.export.model import ExportError, _metrics_rows, _training_summary, _versions
from fastscan.train import describe_gan_steps


def model_info(model_dir: str | os.PathLike, *, metrics: str | os.PathLike | None = None) -> str:
    """A readable account of a model directory: what it was trained on, how it normalises, its
    input geometry and scale, its metrics (``metrics``, or found as
    :func:`~fastscan.export.model._metrics_rows` says) and the fastscan version that made it."""
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
        f"self-attention {arch.get('self_attention', True)}, residual {arch.get('residual', False)}"
        + (f", temporal window of {arch['frames']} frames" if int(arch.get("frames", 1)) > 1 else ""),
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
    if training["gan_steps"]:
        lines.append(f"gan stage      {describe_gan_steps(training['gan_steps'])}")
    curves = meta.get("curves") or []
    last = next((c for c in reversed(curves) if isinstance(c, dict) and c.get("valid_psnr") is not None), None)
    if last is not None:
        lines.append(f"last epoch     {last.get('stage', '?')} epoch {last.get('epoch', '?')}: validation PSNR {float(last['valid_psnr']):.2f} dB")
    try:
        rows, source = _metrics_rows(metrics, model_dir)
    except ExportError as exc:
        raise ModelError(str(exc)) from exc
    if rows:
        lines.append(f"metrics        {source}")
        lines += [f"  {r['method']:<12} {r['images']:>4} images  PSNR {r['psnr_mean']:6.2f} dB  SSIM {r['ssim_mean']:.3f}" for r in rows]
    else:
        lines.append("metrics        none at hand (give --metrics with a table the workflow's metrics rule wrote)")
    return "\n".join(lines)
