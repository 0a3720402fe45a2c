"""The bioimage.io description of the package (``rdf.yaml``): tensors, weights, the
``config`` with fastscan's own fields, the training data and the citation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The paper the generator follows (cited in every package).
PAPER = {
    "text": "Fang L, Monroe F, Novak SW, et al. Deep learning-based point-scanning super-resolution imaging. Nature Methods 18, 406-416 (2021).",
    "doi": "10.1038/s41592-021-01080-z",
}

#: Reproducibility tolerance written into the package (``config.bioimageio``): the test output is
#: fastscan's float32 restoration; other BLAS/oneDNN/cuDNN builds and GPUs sum convolutions in
#: another order (about 1e-6 relative here, up to 1e-4 with TF32 on Ampere and later GPUs).
#: 1e-3 of the HR training range stays invisible in a restored image.
PACKAGE_TOLERANCE = {"relative_tolerance": 1e-3, "absolute_tolerance": 1e-3, "mismatched_elements_per_million": 100}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rdf_name(name: str) -> str:
    """A name bioimage.io accepts: letters, digits, ``_+- ()``, at most 128 characters."""
    import re
    import string

    allowed = set(string.ascii_letters + string.digits + "_+- ()")
    clean = "".join(c if c in allowed else "-" for c in name)
    clean = re.sub(r"-{2,}", "-", clean).strip("- ")[:128]
    return clean if len(clean) >= 5 else f"fastscan {clean}".strip()  # the spec wants 5 characters or more


def _default_description(scale: int, geometry: Mapping[str, Any], frames: int = 1) -> str:
    """The package's description when none is given."""
    return (
        f"Restores fast laser-scanning microscopy frames (denoising and {scale}x super-resolution, Fang et al. 2021). "
        + ("Frames must already be line-phase and resonance corrected (config.fastscan.input_corrections). " if geometry["required"] else "")
        + (
            "Input: raw intensities of one channel"
            if frames == 1
            else f"Input: {frames} consecutive registered frames of one channel as channels, the middle one restored (config.fastscan.temporal_window)"
        )
        + "; output: normalised HR units."
    )


def _build_description(*, v0_5: Any, files: Mapping[str, Path], **k: Any) -> Any:
    """The ``ModelDescr`` (validated by pydantic as it is built)."""
    from bioimageio.spec import ValidationContext

    inputs = _inputs(v0_5, files, tiling=k["tiling"], norm_lr=k["norm_lr"], frames=k["kwargs"]["n_in"])
    outputs = _outputs(v0_5, files, tiling=k["tiling"], scale=k["scale"])
    weights = _weights(v0_5, files, formats=k["formats"], kwargs=k["kwargs"], torch_version=k["torch_version"])
    config = _config(v0_5, **k)
    dataset = _dataset(k["name"], k["training"])
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


def window_channel_names(frames: int) -> list[str]:
    """Names of the input channels: ``raw``, or the frames of a temporal window around the
    restored frame ``t`` (``t_minus_1``, ``t``, ``t_plus_1`` for three)."""
    if frames == 1:
        return ["raw"]
    half = frames // 2
    return [f"t_minus_{-d}" if d < 0 else f"t_plus_{d}" if d > 0 else "t" for d in range(-half, half + 1)]


def _inputs(v0_5: Any, files: Mapping[str, Path], *, tiling: Mapping[str, int], norm_lr: Sequence[float], frames: int = 1) -> list[Any]:
    """The one input tensor: raw intensities, normalised by the model's fixed ``scale_linear``
    (one gain for every frame of a temporal window: they share the detector)."""
    gain = 1.0 / (norm_lr[1] - norm_lr[0])
    space = {"scale": 1.0}
    what = (
        "raw intensities of one channel (fast frames, scanner settings of the training data)"
        if frames == 1
        # (bioimage.io allows 128 characters here; the README says the rest)
        else f"raw intensities of {frames} consecutive registered fast frames of one channel; the middle one is restored"
    )
    inputs = [
        v0_5.InputTensorDescr(
            id=v0_5.TensorId("raw"),
            description=what,
            axes=[
                v0_5.BatchAxis(),
                v0_5.ChannelAxis(channel_names=[v0_5.Identifier(n) for n in window_channel_names(frames)]),
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
    return inputs


def _outputs(v0_5: Any, files: Mapping[str, Path], *, tiling: Mapping[str, int], scale: int) -> list[Any]:
    """The one output tensor, tied to the input at the model's scale, with the overlap as halo."""
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
    return outputs


def _weights(v0_5: Any, files: Mapping[str, Path], *, formats: Sequence[str], kwargs: Mapping[str, Any], torch_version: str) -> dict[str, Any]:
    """The weight formats' descriptions, the state dict with its architecture file first."""
    state = v0_5.PytorchStateDictWeightsDescr(
        source=files["state"],
        architecture=v0_5.ArchitectureFromFileDescr(source=files["arch"], callable=v0_5.Identifier("FastscanGenerator"), kwargs=dict(kwargs)),
        pytorch_version=v0_5.Version(torch_version.split("+")[0]),
    )
    weights = {
        "pytorch_state_dict": state,
        "torchscript": v0_5.TorchscriptWeightsDescr(
            source=files["torchscript"], pytorch_version=v0_5.Version(torch_version.split("+")[0]), parent="pytorch_state_dict"
        ),
    }
    if "onnx" in formats:
        weights["onnx"] = v0_5.OnnxWeightsDescr(source=files["onnx"], opset_version=18, parent="pytorch_state_dict")
    return weights


def _config(v0_5: Any, **k: Any) -> Any:
    """``config``: bioimage.io's reproducibility tolerance and model facts, and fastscan's own fields."""
    tiling, scale, kwargs = k["tiling"], k["scale"], k["kwargs"]
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
        "temporal_window": {
            "frames": int(kwargs["n_in"]),
            "channels": window_channel_names(int(kwargs["n_in"])),
            "restored": "the middle frame; series ends reflected (frame -1 is frame 1)",
        },
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
    return config


def _dataset(name: str, training: Mapping[str, Any]) -> Any:
    """The training data, described from ``model.json``."""
    from bioimageio.spec.dataset.v0_3 import DatasetDescr

    dataset = DatasetDescr(
        name=_rdf_name(f"{name} training data"),
        description=(
            f"Registered pairs of fast LR series and slow HR scans, tiled at {training.get('tile_lr_px') or '?'} LR px "
            f"(counts {json.dumps(training.get('tiles'))}), from {training.get('dataset') or 'a dataset not recorded in model.json'}."
        ),
        format_version="0.3.0",
        type="dataset",
    )
    return dataset
