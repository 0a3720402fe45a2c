"""The package's documents: the README (input, output, weights, training data, validation,
use, citation) and the cover image (input | restored)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastscan.export.description import PAPER, window_channel_names
from fastscan.export.model import _geometry_config, _versions
from fastscan.train import describe_gan_steps


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
    """The README of the package, in Markdown."""
    lines = _readme_input(name, meta, kwargs, tiling)
    lines += _readme_output(meta, tiling, formats, onnx_note)
    lines += _readme_training(training, metrics, metrics_source, test_source)
    lines += _readme_use(int(kwargs["n_in"]))
    return "\n".join(lines)


def _readme_input(name: str, meta: Mapping[str, Any], kwargs: Mapping[str, Any], tiling: Mapping[str, int]) -> list[str]:
    """Title, summary and the input section, with the frame corrections the network expects."""
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
        ("- One channel" if int(kwargs["n_in"]) == 1 else f"- {int(kwargs['n_in'])} channels (a temporal window, below)")
        + ", raw intensities of frames acquired with the scanner settings of the training data, float32; "
        f"y and x of {tiling['min']} + n * {tiling['step']} px.",
        f"- Normalised inside the package with the model's fixed training statistics: (v - {norm['lr'][0]:g}) / "
        f"({norm['lr'][1]:g} - {norm['lr'][0]:g}) (`scale_linear`), never with per-image percentiles: the network "
        "learnt the intensity scale of its training data.",
    ]
    frames = int(kwargs["n_in"])
    if frames > 1:
        half = frames // 2
        lines += [
            f"- **A temporal window of {frames} frames.** The {frames} input channels are consecutive frames of one "
            f"registered series (`{', '.join(window_channel_names(frames))}`); the middle one is restored, and the "
            f"neighbours are context only. At the series' ends the window is reflected (for the first frame: frames "
            f"{', '.join(str(abs(d)) for d in range(-half, half + 1))}), and a one-frame series repeats its frame. The "
            "frames must be aligned: remove the series' drift before stacking them. `fastscan restore --series` builds "
            "the windows itself.",
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
    return lines


def _readme_output(meta: Mapping[str, Any], tiling: Mapping[str, int], formats: Sequence[str], onnx_note: str | None) -> list[str]:
    """The output's units and tiling, and the weight formats."""
    norm = meta["normalisation"]
    s = int(meta["scale"])
    lines = [
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
    return lines


def _readme_training(training: Mapping[str, Any], metrics: list[dict[str, Any]], metrics_source: str | None, test_source: str) -> list[str]:
    """The training data and the validation metrics (or how to validate without them)."""
    lines = [
        "",
        "## Training data",
        "",
        f"- Dataset: {training.get('dataset') or 'not recorded'}; LR tiles of {training.get('tile_lr_px') or '?'} px; "
        f"tile counts {json.dumps(training.get('tiles')) if training.get('tiles') else 'not recorded'}.",
        f"- Stage {training.get('stage') or '?'}; epochs {json.dumps(training.get('epochs') or {})}; seed {training.get('seed')}.",
        *([f"- GAN stage: {describe_gan_steps(training['gan_steps'])}."] if training.get("gan_steps") else []),
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
    return lines


def _readme_use(frames: int = 1) -> list[str]:
    """How to run the package in Fiji, napari, ilastik and Python, and the citation."""
    image = "a single-channel image" if frames == 1 else f"a stack of {frames} consecutive registered frames as channels (the middle one is restored)"
    return [
        "",
        "## Use",
        "",
        f"- Fiji: install deepImageJ, open this .zip with *DeepImageJ Install Model*, run it on {image}; "
        "TorchScript weights run in deepImageJ's PyTorch engine.",
        "- napari: the bioimage.io plugin (napari-bioimageio / bioimageio.core) runs the package on a layer.",
        "- ilastik: the Neural Network Workflow loads the .zip.",
        "- Python: `bioimageio.core.predict(model='this.zip', inputs=frame)`"
        + ("." if frames == 1 else f", `frame` of shape ({frames}, y, x) with the restored frame in the middle (batch and channel axes: (1, {frames}, y, x))."),
        "",
        "## Citation",
        "",
        f"{PAPER['text']} doi:{PAPER['doi']}",
        "",
    ]
