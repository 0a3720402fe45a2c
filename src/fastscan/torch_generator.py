"""fastscan's generator written with torch alone, for use outside fastscan.

This file is the architecture of the bioimage.io package that ``fastscan export`` writes: it
imports nothing but torch, so deepImageJ, napari and ilastik (through bioimageio.core) can build
the network without fastai or fastscan installed. It defines the same modules, under the same
names, as fastscan's generator (:mod:`fastscan.models`: fastai's ``DynamicUnet`` on a ResNet34
encoder, wrapped by ``UpsampledUnet`` or ``LowResUnet``), so a ``generator.pth`` written by fastscan
loads into :class:`FastscanGenerator` with ``load_state_dict(strict=True)`` and gives the same
output.

Weight normalisation and spectral normalisation are computed from their stored parameters on
each call, as torch's ``weight_norm`` and ``spectral_norm`` do in eval mode (no power iteration).

Input: ``(batch, n_in, y, x)`` float32 LR tiles normalised with the model's statistics: one
channel, or for a generator with temporal context the ``n_in`` consecutive registered frames of a
series whose middle frame is restored. y and x are multiples of 16 (the ``faithful`` variant, whose
U-Net runs on the tile resized by the scale) or of 32 (the ``lowres`` variant). Output:
``(batch, 1, scale*y, scale*x)`` in normalised HR units.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["FastscanGenerator", "lowpass"]


def lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, C, y, x)`` by ``sigma`` px, reflected at the borders.

    The residual base of a generator with ``base_sigma``: the bilinear upsampling of a smoothed
    LR frame carries little of the frame's shot noise, so the network adds detail to it instead
    of having to cancel the noise pixel by pixel.
    """
    if sigma <= 0:
        return x
    r = max(1, int(-(-3.0 * sigma // 1)))
    t = torch.arange(-r, r + 1, dtype=torch.float32, device=x.device)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    k = (k / k.sum()).to(x.dtype)
    n, c, h, w = x.shape
    # Every channel through one single-channel kernel: its shape stays a constant when traced,
    # which the ONNX exporter needs (a kernel expanded to a traced channel count it refuses).
    x = F.pad(x.reshape(n * c, 1, h, w), (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1))
    return F.conv2d(x, k.view(1, 1, -1, 1)).reshape(n, c, h, w)


#: fastai NormType names this file implements (``model.json``'s ``architecture.norm_type``).
NORM_TYPES = (None, "Weight", "Spectral", "Batch", "BatchZero", "Instance", "InstanceZero")


class WeightNormConv(nn.Module):
    """A convolution under torch's ``weight_norm`` (dim 0): ``weight = g * v / |v|`` per output channel."""

    def __init__(self, ni: int, nf: int, ks: int, *, stride: int = 1, padding: int = 0, bias: bool = True, ndim: int = 2) -> None:
        super().__init__()
        shape = (nf, ni) + (ks,) * ndim
        self.weight_g = nn.Parameter(torch.ones((nf,) + (1,) * (ndim + 1)))
        self.weight_v = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(nf)) if bias else None
        self.stride, self.padding, self.ndim = stride, padding, ndim

    def weight(self) -> torch.Tensor:
        # The kernel torch's weight_norm calls, so the weights are bit-identical to fastscan's.
        return torch._weight_norm(self.weight_v, self.weight_g, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d if self.ndim == 2 else F.conv1d
        return conv(x, self.weight(), self.bias, self.stride, self.padding)


class SpectralNormConv(nn.Module):
    """A convolution under torch's ``spectral_norm`` in eval mode: ``weight = w / (u . W v)``."""

    def __init__(self, ni: int, nf: int, ks: int, *, stride: int = 1, padding: int = 0, bias: bool = True, ndim: int = 2) -> None:
        super().__init__()
        self.weight_orig = nn.Parameter(torch.zeros((nf, ni) + (ks,) * ndim))
        self.bias = nn.Parameter(torch.zeros(nf)) if bias else None
        self.register_buffer("weight_u", torch.zeros(nf))
        self.register_buffer("weight_v", torch.zeros(ni * ks**ndim))
        self.stride, self.padding, self.ndim = stride, padding, ndim

    def weight(self) -> torch.Tensor:
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = F.conv2d if self.ndim == 2 else F.conv1d
        return conv(x, self.weight(), self.bias, self.stride, self.padding)


def _norm(nf: int, norm_type: str | None) -> nn.Module | None:
    """The normalisation layer fastai's ``ConvLayer`` adds after the convolution, if any."""
    if norm_type in ("Batch", "BatchZero"):
        return nn.BatchNorm2d(nf)
    if norm_type in ("Instance", "InstanceZero"):
        return nn.InstanceNorm2d(nf, affine=True)
    return None


def conv_layer(
    ni: int,
    nf: int,
    ks: int = 3,
    *,
    norm_type: str | None,
    act: bool = True,
    bias: bool | None = None,
    ndim: int = 2,
    xtra: nn.Module | None = None,
) -> nn.Sequential:
    """fastai's ``ConvLayer``: convolution, [norm], [ReLU], [extra], as one ``nn.Sequential``."""
    if norm_type not in NORM_TYPES:
        raise ValueError(f"norm_type {norm_type!r} is not one of {NORM_TYPES}")
    norm = _norm(nf, norm_type)
    if bias is None:
        bias = norm is None
    padding = (ks - 1) // 2
    if norm_type == "Weight":
        conv: nn.Module = WeightNormConv(ni, nf, ks, padding=padding, bias=bias, ndim=ndim)
    elif norm_type == "Spectral":
        conv = SpectralNormConv(ni, nf, ks, padding=padding, bias=bias, ndim=ndim)
    else:
        conv = (nn.Conv2d if ndim == 2 else nn.Conv1d)(ni, nf, ks, padding=padding, bias=bias)
    layers = [conv]
    if norm is not None:
        layers.append(norm)  # fastai's default bn_1st: norm before the activation
    if act:
        layers.append(nn.ReLU())
    if xtra is not None:
        layers.append(xtra)
    return nn.Sequential(*layers)


class SelfAttention(nn.Module):
    """fastai's ``SelfAttention`` (SAGAN) with its spectrally normalised 1x1 convolutions."""

    def __init__(self, n_channels: int) -> None:
        super().__init__()
        self.query = conv_layer(n_channels, n_channels // 8, 1, norm_type="Spectral", act=False, bias=False, ndim=1)
        self.key = conv_layer(n_channels, n_channels // 8, 1, norm_type="Spectral", act=False, bias=False, ndim=1)
        self.value = conv_layer(n_channels, n_channels, 1, norm_type="Spectral", act=False, bias=False, ndim=1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.size()
        x = x.view(size[0], size[1], -1)
        f, g, h = self.query(x), self.key(x), self.value(x)
        beta = F.softmax(torch.bmm(f.transpose(1, 2), g), dim=1)
        o = self.gamma * torch.bmm(h, beta) + x
        return o.view(size).contiguous()


def pixel_shuffle_icnr(ni: int, nf: int, *, blur: bool, norm_type: str | None) -> nn.Sequential:
    """fastai's ``PixelShuffle_ICNR`` at scale 2: 1x1 convolution, shuffle, optional blur."""
    layers: list[nn.Module] = [conv_layer(ni, nf * 4, 1, norm_type=norm_type), nn.PixelShuffle(2)]
    if blur:
        layers += [nn.ReplicationPad2d((1, 0, 1, 0)), nn.AvgPool2d(2, stride=1)]
    return nn.Sequential(*layers)


class UnetBlock(nn.Module):
    """fastai's ``UnetBlock``: upsample, concatenate the normalised skip features, two convolutions."""

    def __init__(self, up_in_c: int, x_in_c: int, *, final_div: bool, blur: bool, self_attention: bool, norm_type: str | None) -> None:
        super().__init__()
        self.shuf = pixel_shuffle_icnr(up_in_c, up_in_c // 2, blur=blur, norm_type=norm_type)
        self.bn = nn.BatchNorm2d(x_in_c)
        ni = up_in_c // 2 + x_in_c
        nf = ni if final_div else ni // 2
        self.conv1 = conv_layer(ni, nf, norm_type=norm_type)
        self.conv2 = conv_layer(nf, nf, norm_type=norm_type, xtra=SelfAttention(nf) if self_attention else None)
        self.relu = nn.ReLU()
        self.out_channels = nf

    def forward(self, up_in: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        up_out = self.shuf(up_in)
        if s.shape[-2:] != up_out.shape[-2:]:
            up_out = F.interpolate(up_out, s.shape[-2:], mode="nearest")
        cat_x = self.relu(torch.cat([up_out, self.bn(s)], dim=1))
        return self.conv2(self.conv1(cat_x))


class BasicBlock(nn.Module):
    """torchvision's ResNet ``BasicBlock``."""

    def __init__(self, ni: int, nf: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ni, nf, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(nf)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(nf)
        self.downsample = None
        if stride != 1 or ni != nf:
            self.downsample = nn.Sequential(nn.Conv2d(ni, nf, 1, stride=stride, bias=False), nn.BatchNorm2d(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def resnet34_body(n_in: int) -> nn.Sequential:
    """ResNet34 without its pooling head, as fastai's ``create_body(cut=-2)`` returns it."""
    layers: list[nn.Module] = [
        nn.Conv2d(n_in, 64, 7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
    ]
    ni = 64
    for nf, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        layers.append(nn.Sequential(*[BasicBlock(ni if i == 0 else nf, nf, stride if i == 0 else 1) for i in range(blocks)]))
        ni = nf
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    """fastai's ``ResBlock`` with expansion 1 and equal in and out channels (the U-Net's last block)."""

    def __init__(self, nf: int, *, norm_type: str | None) -> None:
        super().__init__()
        norm2 = {"Batch": "BatchZero", "Instance": "InstanceZero"}.get(norm_type or "", norm_type)
        self.convpath = nn.Sequential(conv_layer(nf, nf, norm_type=norm_type), conv_layer(nf, nf, norm_type=norm2, act=False))
        self.idpath = nn.Sequential()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.convpath(x) + self.idpath(x))


#: Encoder children whose outputs feed the U-Net's cross connections (where the size halves).
SKIP_LAYERS = (2, 4, 5, 6)


class DynamicUnet(nn.Module):
    """fastai's ``DynamicUnet`` on a ResNet34 encoder, with its module indices (``layers.N``).

    Parameter-free layers of the original (ReLU, ``ResizeToOrig``, ``MergeLayer``) are kept as
    placeholders so that every parameter sits at the index fastai gave it.
    """

    def __init__(self, *, n_in: int, n_out: int, blur: bool, self_attention: bool, norm_type: str | None, y_range: tuple[float, float] | None) -> None:
        super().__init__()
        encoder = resnet34_body(n_in)
        skip_channels = [64, 64, 128, 256]  # outputs of encoder layers SKIP_LAYERS
        ni = 512
        middle = nn.Sequential(conv_layer(ni, ni * 2, norm_type=norm_type), conv_layer(ni * 2, ni, norm_type=norm_type))
        layers: list[nn.Module] = [encoder, nn.BatchNorm2d(ni), nn.ReLU(), middle]
        up_in = ni
        n_blocks = len(SKIP_LAYERS)
        for i, x_in in enumerate(reversed(skip_channels)):
            not_final = i != n_blocks - 1
            block = UnetBlock(up_in, x_in, final_div=not_final, blur=blur, self_attention=self_attention and i == n_blocks - 3, norm_type=norm_type)
            layers.append(block)
            up_in = block.out_channels
        layers.append(pixel_shuffle_icnr(up_in, up_in, blur=False, norm_type=norm_type))
        layers += [nn.Identity(), nn.Identity()]  # ResizeToOrig, MergeLayer(dense=True)
        ni = up_in + n_in
        layers.append(ResBlock(ni, norm_type=norm_type))
        layers.append(conv_layer(ni, n_out, 1, norm_type=norm_type, act=False))
        self.layers = nn.ModuleList(layers)
        self.y_range = None if y_range is None else (float(y_range[0]), float(y_range[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        h = x
        for i, layer in enumerate(self.layers[0]):
            h = layer(h)
            if i in SKIP_LAYERS:
                skips.append(h)
        h = self.layers[3](self.layers[2](self.layers[1](h)))
        for block, s in zip(list(self.layers)[4:8], reversed(skips)):
            h = block(h, s)
        h = self.layers[8](h)
        if h.shape[-2:] != x.shape[-2:]:
            h = F.interpolate(h, x.shape[-2:], mode="nearest")
        h = torch.cat([h, x], dim=1)
        h = self.layers[12](self.layers[11](h))
        if self.y_range is not None:
            low, high = self.y_range
            h = torch.sigmoid(h) * (high - low) + low
        return h


class FastscanGenerator(nn.Module):
    """fastscan's generator, built from the ``architecture`` section of its ``model.json``.

    Parameters
    ----------
    variant : {"faithful", "lowres"}
        ``faithful``: the U-Net runs on the LR tile resized to the HR grid (bilinear), the paper's
        generator. ``lowres``: the U-Net runs on the LR tile and a pixel shuffle (and the optional
        HR head) builds the HR image.
    scale : int
        HR pixels per LR pixel.
    n_in, n_out : int
        Channels of the input (the frames of a temporal window, the middle one restored) and of
        the faithful U-Net's output.
    blur, self_attention : bool
        fastai ``DynamicUnet`` options.
    norm_type : str or None
        fastai ``NormType`` name of the U-Net's convolutions.
    y_range : (low, high) or None
        Sigmoid output range; fastscan drops it for residual generators.
    residual : bool
        Add the output to the bilinear upsampling of the input.
    hr_head : int
        Feature channels of the ``lowres`` variant's HR head (0: none).
    """

    def __init__(
        self,
        *,
        variant: str = "faithful",
        scale: int = 2,
        n_in: int = 1,
        n_out: int = 1,
        blur: bool = True,
        self_attention: bool = True,
        norm_type: str | None = "Weight",
        y_range: list[float] | None = None,
        residual: bool = True,
        hr_head: int = 0,
        base_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        if variant not in ("faithful", "lowres"):
            raise ValueError(f"variant {variant!r} is not 'faithful' or 'lowres'")
        self.variant = variant
        self.scale = int(scale)
        self.residual = bool(residual)
        self.base_sigma = float(base_sigma)
        lowres = variant == "lowres"
        unet_out = self.scale**2 * (int(hr_head) or int(n_out)) if lowres else int(n_out)
        y = None if residual or y_range is None else (float(y_range[0]), float(y_range[1]))
        self.unet = DynamicUnet(n_in=int(n_in), n_out=unet_out, blur=bool(blur), self_attention=bool(self_attention), norm_type=norm_type, y_range=y)
        self.head: nn.Module | None = None
        if lowres:
            self.shuffle = nn.PixelShuffle(self.scale)
            if hr_head:
                c = int(hr_head)
                self.head = nn.Sequential(nn.Conv2d(c + 1, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # align_corners=False: LR pixel i covers HR pixels scale*i .. scale*i + scale - 1.
        up = F.interpolate(x, scale_factor=float(self.scale), mode="bilinear", align_corners=False)
        # A temporal window's restored frame is its middle channel; the neighbours are context
        # for the U-Net only, never added to the output (a moving structure would be doubled).
        k = x.shape[1]
        centre, up_centre = (x, up) if k == 1 else (x[:, k // 2 : k // 2 + 1], up[:, k // 2 : k // 2 + 1])
        base = (
            F.interpolate(lowpass(centre, self.base_sigma), scale_factor=float(self.scale), mode="bilinear", align_corners=False)
            if self.base_sigma > 0
            else up_centre
        )
        if self.variant == "faithful":
            out = self.unet(up)
            return base + out if self.residual else out
        out = self.shuffle(self.unet(x))
        if self.head is not None:
            out = self.head(torch.cat([out, up_centre], dim=1))
        elif not self.residual:
            return out
        return base + out if self.residual else out
