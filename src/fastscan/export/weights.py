"""The package's weight formats: fastscan's state dict with the plain-torch architecture
(checked against fastscan's generator first), TorchScript traced from it, and ONNX."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fastscan.export.model import ExportError
from fastscan.export.sample import as_batch

log = logging.getLogger("fastscan.export")

#: Agreement the export demands between fastscan's generator and the plain-torch architecture on
#: the test tile before writing anything: both compute the same float32 operations (the weight
#: norm through the same kernel), so they agree to rounding (0 on the CPU in the tests); 1e-4 in
#: normalised HR units is 0.01 % of the training HR range and far below any real mismatch.
ARCH_TOLERANCE = 1e-4


def _plain_generator(model_dir: Path, kwargs: dict[str, Any], x: np.ndarray, restored: np.ndarray) -> tuple[Any, float]:
    """The plain-torch architecture with the model's state dict, and its largest difference from
    fastscan's restoration ``restored`` of the normalised tile ``x``; refused above
    :data:`ARCH_TOLERANCE`."""
    import torch

    from fastscan.models import load_state_dict
    from fastscan.torch_generator import FastscanGenerator

    plain = FastscanGenerator(**kwargs).eval()
    state = load_state_dict(model_dir / "generator.pth")
    plain.load_state_dict(state, strict=True)
    with torch.inference_mode():
        plain_out = plain(torch.from_numpy(as_batch(x))).numpy()[0, 0]
    max_diff = float(np.abs(plain_out - restored).max())
    if not max_diff <= ARCH_TOLERANCE:
        raise ExportError(
            f"{model_dir / 'generator.pth'}: the plain-torch architecture (fastscan/torch_generator.py) differs from fastscan's "
            f"generator by {max_diff:.3g} on the test tile (more than {ARCH_TOLERANCE:g}): the package would not reproduce the model"
        )
    return plain, max_diff


def _write_weights(work: Path, files: dict[str, Path], model_dir: Path, plain: Any, x: np.ndarray, *, onnx: bool) -> tuple[list[str], str | None]:
    """Write the weight files into ``work`` (their paths into ``files``): the formats written and
    why ONNX is missing, if it is."""
    import torch

    from fastscan import torch_generator

    files["arch"] = work / "torch_generator.py"
    shutil.copyfile(torch_generator.__file__, files["arch"])
    files["state"] = work / "generator.pth"
    shutil.copyfile(model_dir / "generator.pth", files["state"])
    files["torchscript"] = work / "generator.torchscript.pt"
    example = torch.from_numpy(as_batch(x))
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
    return formats, onnx_note


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
