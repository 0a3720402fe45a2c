"""A generator made ready for inference: compute precision, folded norms, device, memory layout.

:func:`_load_model` loads one from a model directory (or takes one given) for the resumable
restorations and describes it for their plans and provenance.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fastscan.restore import RestoreError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Numeric precisions of inference; ``auto`` is bf16 on CUDA (fp16 where bf16 is missing) and on
#: processors with bf16 matrix units, fp32 on other processors (:func:`resolve_precision`).
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


#: ``restore.compile``: ``off`` runs the generator eagerly; ``auto`` compiles it with
#: ``torch.compile`` on CUDA when a C compiler is there for Triton (tiles have static shapes, so it
#: compiles once per tile shape), and stays eager elsewhere. It is not the default until the GPU
#: benchmark (``benchmarks/device/run.sh``, section ``compile``) shows that it pays for its
#: compilation time on restorations of the size users run.
COMPILE = ("off", "auto")


def native_bf16_cpu() -> bool:
    """Whether this processor multiplies bfloat16 in hardware (AMX or AVX512-BF16).

    Elsewhere oneDNN emulates bf16 and it is slower than float32.
    """
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: str | torch.device) -> torch.dtype:
    """The compute dtype for ``precision`` on ``device``.

    ``auto`` is bfloat16 on CUDA (float16 on GPUs without bf16) and on processors with bf16
    matrix units (:func:`native_bf16_cpu`), float32 on other processors, where bf16 is emulated
    and slower. bf16 changes a restored pixel by about 1e-3 of the normalised range (measured
    in ``benchmarks/infer.py``), far below the noise the network removes; ask for ``float32``
    for results that do not depend on the machine. Evaluations
    (:func:`fastscan.restore.fov.restore_fov`) always run in float32.
    """
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if native_bf16_cpu() else torch.float32
    return getattr(torch, precision)


def fuse_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Fold weight normalisation and batch normalisation into the convolution weights, in place.

    Weight norm recomputes every weight from its direction and norm on each forward pass, and an
    inference-time batch norm is an affine map a preceding convolution can absorb; both only cost
    time when the weights are fixed. Batch norms that follow a convolution directly (in a
    ``Sequential``, or as ``convN``/``bnN`` of a ResNet block) are folded; others are kept.

    Parameters
    ----------
    model : torch.nn.Module
        In eval mode; it is modified and returned.
    """
    import torch
    from torch import nn
    from torch.nn.utils import parametrize

    for module in list(model.modules()):
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)
        elif parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)

    def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> bool:
        if not (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.track_running_stats):
            return False
        if bn.running_mean is None or conv.out_channels != bn.num_features:
            return False
        with torch.no_grad():
            inv = torch.rsqrt(bn.running_var + bn.eps)
            gamma = bn.weight if bn.affine else torch.ones_like(inv)
            beta = bn.bias if bn.affine else torch.zeros_like(inv)
            factor = gamma * inv
            conv.weight.mul_(factor.reshape(-1, 1, 1, 1))
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            new_bias = (bias - bn.running_mean) * factor + beta
            conv.bias = nn.Parameter(new_bias, requires_grad=False)
        return True

    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                if fold(module._modules[a], module._modules[b]):
                    module._modules[b] = nn.Identity()
        for i in range(1, 4):
            conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
            if conv is not None and bn is not None and fold(conv, bn):
                setattr(module, f"bn{i}", nn.Identity())
    return model


def prepare_generator(model: torch.nn.Module, *, device: str | torch.device = "cpu", channels_last: bool = True, fuse: bool = True) -> torch.nn.Module:
    """Make a loaded generator ready for inference: eval mode, folded norms, device, memory format.

    NHWC (``channels_last``) suits tensor cores on CUDA and oneDNN on the CPU (measured on the
    ResNet34 U-Net, one CPU thread: 13 % faster in fp32, 1.8 times in bf16).
    """
    import torch

    model = model.eval()
    if fuse:
        fuse_for_inference(model)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@contextlib.contextmanager
def torch_as_subclass() -> Iterator[None]:
    """``Tensor.as_subclass`` as torch defines it, for as long as the block runs.

    fastai replaces it (``fastai.torch_core``) with a version that calls ``torch.as_subclass``, and
    dynamo traces that call back into ``Tensor.as_subclass``: ``torch.compile`` of a generator then
    fails with a RecursionError. Inference needs none of fastai's tensor metadata.
    """
    import torch

    patched = torch.Tensor.as_subclass
    original = getattr(torch, "as_subclass", patched)
    torch.Tensor.as_subclass = original
    try:
        yield
    finally:
        torch.Tensor.as_subclass = patched


def compile_generator(model: torch.nn.Module, *, compile: str, device: str | torch.device) -> Callable | None:
    """The generator compiled for ``compile`` (see :data:`COMPILE`) on ``device``, or None to run it eagerly.

    Compilation itself happens at the first call, where it can still fail (a missing Triton or
    compiler toolchain); :class:`fastscan.restore.engine.TileEngine` then falls back to the eager
    model with a warning, so the knob never stops a restoration.
    """
    import torch

    if compile not in COMPILE:
        raise ValueError(f"compile must be one of {COMPILE}, got {compile!r}")
    if compile == "off":
        return None
    if torch.device(device).type != "cuda":
        log.info("restore.compile auto: eager on %s (torch.compile is only used on CUDA)", device)
        return None
    if not hasattr(torch, "compile") or not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        log.warning("restore.compile auto: no torch.compile or no C compiler for Triton; running the generator eagerly")
        return None
    return torch.compile(model, dynamic=False)


def _state_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (names, shapes and values)."""
    import torch

    h = hashlib.sha256()
    for name, value in model.state_dict().items():
        arr = value.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(arr.shape)}:{arr.dtype}".encode())
        if arr.numel():
            h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _load_model(
    model_dir: str | os.PathLike | None,
    generator: tuple[torch.nn.Module, Mapping[str, Any]] | None,
    *,
    device: str | torch.device,
    channels_last: bool = True,
) -> tuple[torch.nn.Module, dict[str, Any], dict[str, Any]]:
    """The prepared generator, its ``model.json`` content and a description for provenance."""
    if (model_dir is None) == (generator is None):
        raise ValueError("give exactly one of model_dir and generator")
    if generator is not None:
        model, meta = generator
        meta = dict(meta)
        path = None
    else:
        from fastscan.models import load_generator

        model, meta = load_generator(model_dir, device="cpu")
        path = str(model_dir)
    for key in ("scale", "normalisation"):
        if key not in meta:
            raise RestoreError(f"model {path or type(model).__name__}: model.json has no {key!r}")
    model = prepare_generator(model, device=device, channels_last=channels_last)
    # Digest of the folded weights: the same whether or not the module given was prepared before.
    desc = {"path": path, "digest": _state_digest(model), "scale": int(meta["scale"]), "normalisation": meta["normalisation"]}
    return model, meta, desc
