"""Generator and critic construction, and loading of trained weights.

The generator follows the fastai super-resolution recipe the paper used: a ``DynamicUnet`` on a
ResNet34 encoder with blur, self-attention and weight normalisation. Its input is the LR tile
resized to the HR grid (bilinear), so the module here takes the LR tile itself and does that
resize first: training, inference and the baselines then share one definition of "resized".

Weights are stored as plain ``state_dict`` files and read with ``torch.load(weights_only=True)``:
a pickled learner can run arbitrary code when loaded, a state dict cannot. ``model.json`` is checked
against ``schemas/model.schema.json`` when read, so a file edited by hand or written by another
program is refused with the key at fault instead of failing somewhere inside inference.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from fastscan.torch_generator import lowpass

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
    "residual": True,
    # Channels of the low-resolution variant's HR head; None: 16 for ``lowres``, 0 (none) for
    # ``faithful``, whose U-Net already ends at HR resolution.
    "hr_head": None,
    # Gaussian blur (LR px) of the frame whose bilinear upsampling is the residual base; 0: the
    # plain bilinear upsampling (see fastscan.torch_generator.lowpass).
    "base_sigma": 0.0,
    # Temporal context: the generator sees this many registered neighbouring frames of a series
    # as input channels (odd; the restored frame in the middle). 1 is the paper's single frame.
    "frames": 1,
}

#: Generator variants: ``faithful`` is the paper's network (the U-Net runs on the LR tile resized
#: to the HR grid); ``lowres`` runs the same U-Net on the LR tile itself and ends in a learned
#: pixel-shuffle upsampler, so it spends about a quarter of the compute at scale 2.
VARIANTS: tuple[str, ...] = ("faithful", "lowres")

#: HR-head channels of the ``lowres`` variant. Without the head (a 1x1 convolution to the four
#: sub-pixels) the variant did not learn to denoise: on 195 simulated mitochondria tiles, 3 epochs,
#: SSIM 0.167 against 0.163 for bilinear and 0.639 for the faithful generator; with 16 channels
#: 26.04 dB / 0.625 against the faithful 25.92 dB / 0.639, at 3 % more compute than without.
LOWRES_HR_HEAD = 16


class ModelError(ValueError):
    """A model directory, weights file or architecture description cannot be used."""


class UpsampledUnet(nn.Module):
    """Resize the LR input to the HR grid, then run the U-Net (the paper's generator).

    With ``residual`` (the default architecture) the U-Net's output is added to the resized
    input: the network learns a correction of the bilinear upsampling. Without it, a U-Net with a
    sigmoid output range trained on mostly dark tiles can settle on the lower end of the range
    everywhere, where the sigmoid's gradient vanishes (seen on the simulated mitochondria: the
    validation PSNR stayed at 4.5 dB for three epochs, against 23.5 dB after one epoch with the
    residual connection, same data and schedule).

    Parameters
    ----------
    unet : nn.Module
        The fastai ``DynamicUnet``.
    scale : int
        HR pixels per LR pixel.
    """

    def __init__(self, unet: nn.Module, *, scale: int, residual: bool = False, base_sigma: float = 0.0) -> None:
        super().__init__()
        self.scale = int(scale)
        self.unet = unet
        self.residual = bool(residual)
        self.base_sigma = float(base_sigma)
        if self.residual:
            _shrink_last_conv(unet)

    #: Input and output stay float32 when the U-Net's weights are cast to a lower precision
    #: (see :func:`_unet_dtype`); inference engines need not cast the tiles.
    float32_io = True

    @property
    def input_scale(self) -> int:
        """The U-Net's input pixels per LR pixel along an axis (it runs on the HR grid)."""
        return self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # align_corners=False keeps pixel areas aligned: LR pixel i covers HR pixels
        # scale*i .. scale*i+scale-1, which is how the registered HR target is defined.
        up = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        out = self.unet(_unet_input(self.unet, up))
        if not self.residual:
            return out.to(up.dtype)
        return _base(x, up, self.scale, self.base_sigma) + out.to(up.dtype)


class LowResUnet(nn.Module):
    """Run the U-Net at LR resolution and upsample with a learned pixel shuffle (the fast variant).

    The U-Net predicts ``scale**2`` sub-pixel channels per LR pixel, which ``PixelShuffle``
    rearranges onto the HR grid. The last convolution is ICNR-initialised (Aitken et al., 2017),
    so every sub-pixel starts equal: the untrained network upsamples like nearest neighbour
    instead of with a checkerboard.

    With ``hr_head`` channels the U-Net predicts that many feature maps per sub-pixel instead,
    and a small convolutional head at HR resolution (two 3x3 convolutions on the shuffled
    features and the bilinear upsampling) turns them into the image: the only layers that see
    neighbouring HR pixels together, at a few percent of the U-Net's cost.

    Parameters
    ----------
    unet : nn.Module
        The fastai ``DynamicUnet`` with ``scale**2 * max(1, hr_head)`` output channels.
    scale : int
        HR pixels per LR pixel.
    residual : bool
        Add the output to the bilinear upsampling of the input.
    hr_head : int
        Feature channels of the HR head; 0 for none.
    """

    float32_io = True
    #: The U-Net runs on the LR grid (see ``UpsampledUnet.input_scale``).
    input_scale = 1

    def __init__(self, unet: nn.Module, *, scale: int, residual: bool = False, hr_head: int = 0, base_sigma: float = 0.0) -> None:
        super().__init__()
        self.base_sigma = float(base_sigma)
        self.scale = int(scale)
        self.unet = unet
        self.residual = bool(residual)
        self.shuffle = nn.PixelShuffle(self.scale)
        n_sub = self.scale**2 * max(1, int(hr_head))
        _icnr_last_conv(unet, n_out=n_sub, scale=self.scale)
        self.head = None
        if hr_head:
            c = int(hr_head)
            self.head = nn.Sequential(nn.Conv2d(c + 1, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, 1, 3, padding=1))
            if self.residual:
                _shrink_last_conv(self.head, n_out=1)
        elif self.residual:
            _shrink_last_conv(unet, n_out=n_sub)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _unet_dtype(self.unet, x)
        out = self.shuffle(self.unet(_unet_input(self.unet, x)))
        if self.head is None and not self.residual:
            return out.to(x.dtype)
        up = F.interpolate(_centre(x), scale_factor=self.scale, mode="bilinear", align_corners=False)
        if self.head is not None:
            out = self.head(torch.cat([out, up.to(dtype)], dim=1))
        if not self.residual:
            return out.to(x.dtype)
        return _base(x, up, self.scale, self.base_sigma) + out.to(x.dtype)


def _base(x: torch.Tensor, up: torch.Tensor, scale: int, sigma: float) -> torch.Tensor:
    """Residual base: the bilinear upsampling of the centre frame, smoothed by ``sigma`` LR px."""
    if sigma <= 0:
        return _centre(up)
    return F.interpolate(lowpass(_centre(x), sigma), scale_factor=scale, mode="bilinear", align_corners=False)


def _centre(x: torch.Tensor) -> torch.Tensor:
    """The restored frame of a temporal window ``(N, frames, h, w)``: its middle channel.

    The residual base is the bilinear upsampling of that frame alone: the neighbours are context
    that the U-Net may use, never added to the output (a moving structure would be doubled)."""
    k = x.shape[1]
    return x if k == 1 else x[:, k // 2 : k // 2 + 1]


def _unet_dtype(unet: nn.Module, x: torch.Tensor) -> torch.dtype:
    """The dtype the U-Net computes in: its weights' (bf16 for CPU inference, see
    ``fastscan.restore.engine.TileEngine``), else the input's. The bilinear base and the residual sum stay
    in the input's precision, so a bf16 U-Net only rounds the small correction it adds."""
    w = next(unet.parameters(), None)
    return w.dtype if w is not None and w.dtype != x.dtype and w.is_floating_point() else x.dtype


def _unet_input(unet: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` in the U-Net's dtype (:func:`_unet_dtype`) and, for a channels-last U-Net, with
    channels-last strides.

    A one-channel tensor is laid out the same either way, but PyTorch reads its default strides as
    NCHW, and the U-Net's last cross connection concatenates its input with the decoder's
    features: the result was NCHW, which its last residual block converted back for the
    convolutions and added to their NHWC output on a slow path (10 % of the lowres generator's
    CPU time).
    """
    x = x.to(_unet_dtype(unet, x)).contiguous()
    if x.ndim == 4 and x.shape[1] == 1 and is_channels_last(unet):
        h, w = x.shape[-2:]
        x = x.as_strided(x.shape, (h * w, 1, w, 1))
    return x


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model's convolution weights are stored NHWC (one with several input channels decides)."""
    for p in model.parameters():
        if p.ndim == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


def _last_conv(unet: nn.Module, n_out: int | None = None) -> nn.Conv2d:
    """The U-Net's output convolution (the last one, with ``n_out`` channels when given)."""
    convs = [m for m in unet.modules() if isinstance(m, nn.Conv2d) and (n_out is None or m.out_channels == n_out)]
    if not convs:
        raise ModelError(f"no output convolution with {n_out} channels in the U-Net")
    return convs[-1]


def _shrink_last_conv(unet: nn.Module, *, n_out: int | None = None, factor: float = 0.01) -> None:
    """Start a residual generator close to its bilinear upsampling: a small output correction."""
    conv = _last_conv(unet, n_out)
    with torch.no_grad():
        (conv.weight_g if hasattr(conv, "weight_g") else conv.weight).mul_(factor)
        if conv.bias is not None:
            conv.bias.zero_()


def _icnr_last_conv(unet: nn.Module, *, n_out: int, scale: int) -> None:
    from fastai.layers import icnr_init

    conv = _last_conv(unet, n_out)
    with torch.no_grad():
        if hasattr(conv, "weight_v"):  # weight norm: weight = g * v / |v|, per output channel
            v = icnr_init(torch.empty_like(conv.weight_v), scale=scale)
            conv.weight_v.copy_(v)
            conv.weight_g.copy_(v.flatten(1).norm(dim=1).view_as(conv.weight_g))
        else:
            conv.weight.copy_(icnr_init(torch.empty_like(conv.weight), scale=scale))
        if conv.bias is not None:
            conv.bias.zero_()


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


def model_frames(meta: dict[str, Any]) -> int:
    """Temporal window of a model (``architecture.frames`` of its ``model.json``; 1 for models
    written before the key existed, and for generators given without an architecture)."""
    return int((meta.get("architecture") or {}).get("frames", 1))


def resolve_architecture(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge architecture overrides into :data:`DEFAULT_ARCHITECTURE`, rejecting unknown keys."""
    arch = dict(DEFAULT_ARCHITECTURE)
    for key, value in (overrides or {}).items():
        if key not in arch:
            raise ModelError(f"unknown architecture key {key!r}; known: {sorted(arch)}")
        arch[key] = value
    if arch["variant"] not in VARIANTS:
        raise ModelError(f"unknown generator variant {arch['variant']!r}; known: {list(VARIANTS)}")
    if arch["hr_head"] is None:
        arch["hr_head"] = LOWRES_HR_HEAD if arch["variant"] == "lowres" else 0
    if arch["hr_head"] and arch["variant"] != "lowres":
        raise ModelError(f"hr_head {arch['hr_head']} applies to the lowres variant only, not to {arch['variant']!r}")
    frames = arch["frames"]
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1 or frames % 2 == 0:
        raise ModelError(f"architecture frames must be an odd number of 1 or more (the restored frame and its neighbours), got {frames!r}")
    # The frames of the window are the input channels.
    if arch["n_in"] not in (1, frames):
        raise ModelError(f"architecture n_in {arch['n_in']} contradicts frames {frames}: a temporal window feeds one channel per frame")
    arch["n_in"] = frames
    return arch


def build_generator(
    architecture: dict[str, Any] | None = None,
    *,
    pretrained: bool = False,
    weights: str | None = None,
) -> UpsampledUnet | LowResUnet:
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
    # A residual generator predicts a correction to the bilinear upsampling, which can be of
    # either sign and is not bounded like an intensity: no sigmoid range.
    y_range = tuple(arch["y_range"]) if arch["y_range"] is not None and not arch["residual"] else None
    scale = int(arch["scale"])
    lowres = arch["variant"] == "lowres"
    # img_size only sets the size of the dummy pass that sizes the layers; the network is fully
    # convolutional. For the low-resolution variant it is the LR tile.
    img_size = tuple(arch["img_size"]) if not lowres else tuple(max(32, s // scale) for s in arch["img_size"])
    unet = DynamicUnet(
        body,
        scale**2 * (int(arch["hr_head"]) or arch["n_out"]) if lowres else arch["n_out"],
        img_size,
        blur=arch["blur"],
        self_attention=arch["self_attention"],
        norm_type=getattr(NormType, arch["norm_type"]) if arch["norm_type"] else None,
        y_range=y_range,
    )
    if lowres:
        return LowResUnet(unet, scale=scale, residual=bool(arch["residual"]), hr_head=int(arch["hr_head"]), base_sigma=float(arch["base_sigma"]))
    return UpsampledUnet(unet, scale=scale, residual=bool(arch["residual"]), base_sigma=float(arch["base_sigma"]))


def generator_splitter(model: UpsampledUnet | LowResUnet) -> list:
    """Parameter groups for discriminative learning rates: encoder, then the rest."""
    encoder = model.unet[0]
    enc_ids = {id(p) for p in encoder.parameters()}
    rest = [p for p in model.parameters() if id(p) not in enc_ids]
    return [list(encoder.parameters()), rest]


#: fastai's ``gan_critic`` depth (stride-2 blocks after its stem) for HR tiles of 64 px and more.
CRITIC_BLOCKS = 3


def critic_blocks(hr_tile: int) -> int:
    """The ``gan_critic`` depth that fits an ``hr_tile``-px HR tile.

    The critic halves the tile in its stem and in each block, then ends with a 4x4 convolution
    without padding, so ``n_blocks`` needs tiles of at least ``2 ** (n_blocks + 3)`` px: 64 px for
    fastai's 3 blocks. A denoising project (``ingest.scale: 1``) with 32-px tiles gets 2 blocks
    instead of a convolution larger than its input.
    """
    fits = int(math.floor(math.log2(hr_tile))) - 3 if hr_tile > 0 else -1
    if fits < 1:
        raise ValueError(f"HR tiles of {hr_tile} px are too small for the critic: it needs at least 16 px (dataset.tile x ingest.scale)")
    return min(CRITIC_BLOCKS, fits)


def build_critic(*, n_channels: int = 1, nf: int = 128, n_blocks: int = CRITIC_BLOCKS, dropout: float = 0.15) -> nn.Module:
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
    """Read a state dict with ``weights_only=True``, explaining a refusal.

    Raises
    ------
    ModelError
        When the file is missing, damaged (truncated, empty, not a PyTorch file), carries
        objects or code, or holds something other than a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by content
        raise _weights_refusal(path, exc) from exc
    if not isinstance(state, dict):
        raise ModelError(f"{path} holds a {type(state).__name__}, not a state_dict (a mapping of parameter names to tensors)")
    return state


#: What the weights-only unpickler says when it meets an object it will not build: only these
#: mean an intact file that carries code or objects. Its other complaints ("Unsupported operand")
#: come from bytes that are no pickle torch wrote, which is what a damaged file looks like.
_UNSAFE_PICKLE = re.compile(r"GLOBAL|add_safe_globals|Can only (build|create)")

#: First bytes of the two formats ``torch.save`` writes: a zip archive (the default since 1.6) and
#: the legacy format, a pickle (protocol 2) that starts with torch's magic number.
_TORCH_HEADERS = (b"PK\x03\x04", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19")


def _first_sentence(text: str) -> str:
    """The first sentence of one of torch's messages, which run over several lines."""
    return re.split(r"(?<=\.)\s", text.strip(), maxsplit=1)[0].rstrip(".")


def _weights_refusal(path: Path, exc: Exception) -> ModelError:
    """Tell a weights file that carries objects from one that is damaged."""
    if isinstance(exc, pickle.UnpicklingError) and _UNSAFE_PICKLE.search(str(exc)):
        reason = next(line for line in str(exc).splitlines() if _UNSAFE_PICKLE.search(line))
        return ModelError(
            f"{path} is not a plain state_dict and was refused by torch.load(weights_only=True) "
            f"(a pickle that carries code or objects cannot be loaded safely): {_first_sentence(reason)}"
        )
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_HEADERS[1]))
    if size == 0:
        what = "0 bytes: the file is empty"
    elif not head.startswith(_TORCH_HEADERS):
        what = f"{size} bytes that start like no file torch.save writes"
    else:
        what = f"{size} bytes; torch.load: {_first_sentence(str(exc)) or type(exc).__name__}"
    return ModelError(
        f"{path}: the weights file is truncated or corrupt ({what}); an interrupted copy or a full "
        "disk leaves such a file: copy it again from where the model was trained, or retrain"
    )


#: Where the hint of a refused ``model.json`` points.
_MODEL_JSON_HINT = (
    "The file was edited by hand or written by another program: restore it from a copy of the "
    "model directory (or the training run's output), or retrain the model"
)


@functools.cache
def _model_validator() -> Any:
    """The validator of ``model.json`` (built once: the schema is package data that never changes)."""
    from importlib import resources

    from jsonschema import Draft202012Validator

    text = resources.files("fastscan").joinpath("schemas", "model.schema.json").read_text(encoding="utf-8")
    return Draft202012Validator(json.loads(text))


def _json_kind(value: Any) -> str:
    """``a list``, ``a string``, ... as the JSON reader returned ``value``."""
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _show(value: Any) -> str:
    """``value`` as it is written in the file (JSON), shortened."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _deref(root: dict, node: Any) -> Any:
    """Follow a local ``$ref`` (``#/$defs/...``) to the schema it names."""
    while isinstance(node, dict) and "$ref" in node:
        target = root
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _described(root: dict, node: dict) -> dict:
    """``node``, or the definition it refers to when only that has a description."""
    return node if "description" in node else _deref(root, node)


def _schema_of_key(root: dict, err) -> tuple[dict, list[str], dict]:
    """The schema of the object key an error is about, that key's path, and the failing schema.

    Items of an array are reported as their array (``normalisation.lr``, not its element 1): the
    array's description says what the whole value must be.
    """
    node, keys, found = root, [], root
    # The last step is the keyword that failed (``type``, ``required``, ...), not a schema.
    steps = iter(list(err.absolute_schema_path)[:-1])
    for step in steps:
        node = _deref(root, node)[step]
        if step == "properties":
            keys.append(next(steps))
            node = node[keys[-1]]
            found = _described(root, node)
    return found, keys, _deref(root, node)


def _missing_key(keys: list[str], schema: dict) -> str:
    """``key 'a.b' is missing: it must be ...``."""
    what = f": it must be {schema['description']}" if "description" in schema else ""
    return f"key {'.'.join(keys)!r} is missing{what}"


def _describe_error(meta: dict, err) -> str:
    """One schema violation as ``key 'a.b' must be ..., got ...``."""
    schema = _model_validator().schema
    described, keys, failing = _schema_of_key(schema, err)
    if err.validator == "required":
        props = {**described.get("properties", {}), **failing.get("properties", {})}
        missing = [k for k in err.validator_value if k not in err.instance]
        return "; ".join(_missing_key(keys + [k], _described(schema, props.get(k, {}))) for k in missing)
    if err.validator == "additionalProperties":
        extra = [k for k in err.instance if k not in failing.get("properties", {})]
        return "; ".join(f"key {'.'.join(keys + [k])!r} is unknown (known: {', '.join(failing['properties'])})" for k in extra)
    value = meta
    for key in keys:
        value = value[key]
    return f"key {'.'.join(keys)!r} must be {described.get('description', err.message)}, got {_show(value)}"


def _scale_mismatch(meta: dict) -> list[str]:
    """The generator upsamples by ``architecture.scale`` while tiling and provenance use ``scale``."""
    if "scale" not in meta:
        return []
    arch_scale = (meta.get("architecture") or {}).get("scale", DEFAULT_ARCHITECTURE["scale"])
    if int(arch_scale) == int(meta["scale"]):
        return []
    return [f"key 'scale' is {_show(meta['scale'])} but the generator ('architecture.scale') upsamples by {_show(arch_scale)}"]


def check_model_json(meta: Any, path: str | os.PathLike) -> None:
    """Refuse ``model.json`` content that fastscan would misread, naming the file and the keys.

    Parameters
    ----------
    meta : object
        The parsed content of the file.
    path : path-like
        The file, for the message.

    Raises
    ------
    ModelError
        When ``meta`` is not an object, breaks ``schemas/model.schema.json``, or gives the
        generator another scale than the model's.
    """
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: must be a JSON object (the model's description), got {_json_kind(meta)}. {_MODEL_JSON_HINT}")
    errors = sorted(_model_validator().iter_errors(meta), key=lambda e: [str(p) for p in e.absolute_path])
    problems = list(dict.fromkeys(_describe_error(meta, e) for e in errors)) or _scale_mismatch(meta)
    if problems:
        raise ModelError(f"{path}: {'; '.join(problems)}. {_MODEL_JSON_HINT}")


def read_model_json(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``model.json`` of a model directory (see :func:`check_model_json`)."""
    path = Path(model_dir) / "model.json"
    if not path.is_file():
        raise ModelError(f"model directory {model_dir} has no model.json: it is not a fastscan model (train one with the workflow's train_gan rule)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path} is not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x}). {_MODEL_JSON_HINT}") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}. {_MODEL_JSON_HINT}") from exc
    check_model_json(meta, path)
    return meta


def load_generator(model_dir: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild a trained generator from ``model.json`` and ``generator.pth``.

    Returns
    -------
    model : UpsampledUnet or LowResUnet
        In eval mode on ``device``.
    meta : dict
        The content of ``model.json``.
    """
    meta = read_model_json(model_dir)
    arch = dict(meta.get("architecture") or {})
    # Models written before the residual connection existed were trained without it.
    arch.setdefault("residual", False)
    arch.setdefault("hr_head", 0)
    arch.setdefault("base_sigma", 0.0)
    model = build_generator(arch, pretrained=False)
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
