"""Generator and critic construction, and loading of trained weights.

The generator follows the fastai super-resolution recipe the paper used: a ``DynamicUnet`` on a
ResNet34 encoder with blur, self-attention and weight normalisation. Its input is the LR tile
resized to the HR grid (bilinear), so the module here takes the LR tile itself and does that
resize first: training, inference and the baselines then share one definition of "resized".

Weights are stored as plain ``state_dict`` files and read with ``torch.load(weights_only=True)``:
a pickled learner can run arbitrary code when loaded, a state dict cannot.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

#: torchvision's file name for the ImageNet ResNet34 weights in the torch hub cache.
RESNET34_HUB_FILE = "resnet34-b627a593.pth"

#: Architecture settings a generator is built from; stored in ``model.json`` so that inference
#: rebuilds exactly the network that was trained.
DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "arch": "resnet34",
    "variant": "faithful",
    "n_in": 1,
    "n_out": 1,
    "scale": 2,
    "blur": True,
    "self_attention": True,
    "norm_type": "Weight",
    "y_range": [-0.5, 2.0],
    "img_size": [128, 128],
}


class ModelError(ValueError):
    """A model directory, weights file or architecture description cannot be used."""


class UpsampledUnet(nn.Module):
    """Resize the LR input to the HR grid, then run the U-Net (the paper's generator).

    Parameters
    ----------
    unet : nn.Module
        The fastai ``DynamicUnet``.
    scale : int
        HR pixels per LR pixel.
    """

    def __init__(self, unet: nn.Module, *, scale: int) -> None:
        super().__init__()
        self.scale = int(scale)
        self.unet = unet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # align_corners=False keeps pixel areas aligned: LR pixel i covers HR pixels
        # scale*i .. scale*i+scale-1, which is how the registered HR target is defined.
        up = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.unet(up)


def find_pretrained_weights(weights: str | os.PathLike | None) -> Path | None:
    """Locate local ImageNet ResNet34 weights without any network access.

    Parameters
    ----------
    weights : path-like or None
        A file named in the configuration. Takes precedence over the hub cache.

    Returns
    -------
    Path or None
        The file to load, or None when neither the named file nor the torch hub cache has one.
    """
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(
                f"pretrained weights file {path} does not exist: download torchvision's "
                f"{RESNET34_HUB_FILE} on a machine with internet access and set train.weights to it"
            )
        return path
    hub = Path(torch.hub.get_dir()) / "checkpoints" / RESNET34_HUB_FILE
    return hub if hub.is_file() else None


def _resnet_body(*, arch: str, n_in: int, pretrained: bool, weights: str | None) -> nn.Module:
    import torchvision
    from fastai.vision.learner import create_body

    if arch != "resnet34":
        raise ModelError(f"unsupported encoder {arch!r}: only 'resnet34' is implemented")
    model = torchvision.models.resnet34(weights=None)
    if pretrained:
        path = find_pretrained_weights(weights)
        if path is None:
            hub = Path(torch.hub.get_dir()) / "checkpoints" / RESNET34_HUB_FILE
            raise ModelError(
                "train.pretrained is true but no ImageNet ResNet34 weights were found: put "
                f"torchvision's {RESNET34_HUB_FILE} at {hub} or name the file in train.weights "
                "(jobs never download), or set train.pretrained: false"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        log.info("encoder initialised from %s", path)
    # create_body sums the RGB filters of the first convolution for a single-channel input,
    # which keeps the pretrained response to intensity.
    return create_body(model, n_in=n_in, pretrained=pretrained, cut=-2)


def resolve_architecture(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge architecture overrides into :data:`DEFAULT_ARCHITECTURE`, rejecting unknown keys."""
    arch = dict(DEFAULT_ARCHITECTURE)
    for key, value in (overrides or {}).items():
        if key not in arch:
            raise ModelError(f"unknown architecture key {key!r}; known: {sorted(arch)}")
        arch[key] = value
    if arch["variant"] != "faithful":
        raise ModelError(f"unknown generator variant {arch['variant']!r}; known: ['faithful']")
    return arch


def build_generator(
    architecture: dict[str, Any] | None = None,
    *,
    pretrained: bool = False,
    weights: str | None = None,
) -> UpsampledUnet:
    """Build the generator described by ``architecture``.

    Parameters
    ----------
    architecture : dict, optional
        Keys of :data:`DEFAULT_ARCHITECTURE`; missing keys take the defaults.
    pretrained : bool
        Initialise the encoder with ImageNet weights from a local file (see
        :func:`find_pretrained_weights`); fails at once when none is present.
    weights : str, optional
        Path of the local ResNet34 weights file.
    """
    from fastai.layers import NormType
    from fastai.vision.models.unet import DynamicUnet

    arch = resolve_architecture(architecture)
    body = _resnet_body(arch=arch["arch"], n_in=arch["n_in"], pretrained=pretrained, weights=weights)
    y_range = tuple(arch["y_range"]) if arch["y_range"] is not None else None
    unet = DynamicUnet(
        body,
        arch["n_out"],
        tuple(arch["img_size"]),
        blur=arch["blur"],
        self_attention=arch["self_attention"],
        norm_type=getattr(NormType, arch["norm_type"]) if arch["norm_type"] else None,
        y_range=y_range,
    )
    return UpsampledUnet(unet, scale=arch["scale"])


def generator_splitter(model: UpsampledUnet) -> list:
    """Parameter groups for discriminative learning rates: encoder, then the rest."""
    encoder = model.unet[0]
    enc_ids = {id(p) for p in encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in enc_ids]
    return [list(encoder.parameters()), rest]


def build_critic(*, n_channels: int = 1, nf: int = 128, n_blocks: int = 3, dropout: float = 0.15) -> nn.Module:
    """fastai's ``gan_critic`` (patch critic with self-attention and spectral norm)."""
    from fastai.vision.gan import gan_critic

    return gan_critic(n_channels=n_channels, nf=nf, n_blocks=n_blocks, p=dropout)


def save_state_dict(model: nn.Module, path: str | os.PathLike) -> None:
    """Write ``model.state_dict()`` atomically (a killed job never leaves a truncated file)."""
    from fastscan.atomic import atomic_path

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``, explaining a refusal."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError or RuntimeError depending on content
        raise ModelError(
            f"{path} is not a plain state_dict and was refused by torch.load(weights_only=True) "
            f"(a pickle that carries code or objects cannot be loaded safely): {exc}"
        ) from exc


def read_model_json(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``model.json`` of a model directory."""
    path = Path(model_dir) / "model.json"
    if not path.is_file():
        raise ModelError(
            f"model directory {model_dir} has no model.json: it is not a fastscan model "
            "(train one with the workflow's train_gan rule)"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from exc


def load_generator(model_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[UpsampledUnet, dict]:
    """Rebuild a trained generator from ``model.json`` and ``generator.pth``.

    Returns
    -------
    model : UpsampledUnet
        In eval mode on ``device``.
    meta : dict
        The content of ``model.json``.
    """
    meta = read_model_json(model_dir)
    model = build_generator(meta.get("architecture"), pretrained=False)
    state = load_state_dict(Path(model_dir) / "generator.pth")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"{Path(model_dir) / 'generator.pth'} does not match model.json's architecture: {exc}") from exc
    return model.to(device).eval(), meta


def write_model_json(model_dir: str | os.PathLike, meta: dict[str, Any]) -> None:
    """Write ``model.json`` atomically."""
    from fastscan.atomic import write_text

    write_text(Path(model_dir) / "model.json", json.dumps(meta, indent=2, default=str))


def library_versions() -> dict[str, str]:
    """Versions of the libraries a trained model depends on (written into ``model.json``)."""
    import importlib.metadata as md

    out = {}
    for name in ("fastscan", "torch", "torchvision", "fastai", "numpy", "zarr"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out
