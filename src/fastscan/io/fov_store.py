"""The canonical per-FOV store: one LR/HR pair validated by :func:`ingest_fov`, read by :func:`read_fov`.

Ingestion plans both reads before any pixel is read (channels, frames, memory), checks
shapes, values and pixel sizes, records the SHA-256 of every source file, and writes the
Zarr v3 store described in ``docs/architecture.md`` atomically.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fastscan.io.declared import _HR_PLANE_BYTES, _READ_HEADROOM, _declare, _Declared, _declared_frames, _guard, _read_need, _Role
from fastscan.io.errors import InputError
from fastscan.io.readers import _probe, _read_image, _read_series
from fastscan.io.sources import PathLike, _is_glob, _zarr_kind
from fastscan.jsonable import jsonable

logger = logging.getLogger(__name__)

#: Largest HR/LR size ratio a hint may suggest: the workflow schema's ``ingest.scale`` maximum.
MAX_SCALE = 8


def file_sha256(path: PathLike, *, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks so large files stay out of memory.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.
    chunk_size : int, optional
        Bytes read at a time.

    Returns
    -------
    str
        Hexadecimal digest.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(chunk_size):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read for checksumming ({exc})") from exc
    return digest.hexdigest()


def _source_sha256(path: PathLike, meta: Mapping[str, Any]) -> tuple[str, list[str] | None]:
    """Digest of everything a source consists of.

    A glob or an OIF (a text file plus a companion ``.files`` folder) spans several files;
    their digest is the SHA-256 of a ``sha256sum``-style manifest, so that a change to any
    frame changes it.
    """
    if meta.get("format") == "glob":
        files = [Path(f) for f in meta["files"]]
    elif meta.get("format") == "oif":
        main = Path(path)
        companion = main.with_name(main.name + ".files")
        files = [main]
        if companion.is_dir():
            files += sorted((p for p in companion.rglob("*") if p.is_file()), key=lambda p: os.fspath(p))
    else:
        return file_sha256(path), None
    manifest = "".join(f"{file_sha256(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(manifest.encode()).hexdigest(), [os.fspath(f) for f in files]


def _resolve_pixel_size(meta: Mapping[str, Any], explicit: float | None, *, path: PathLike, column: str) -> list[float]:
    """Metadata wins; the sheet value is a fallback for files that carry none."""
    if explicit is not None and (
        isinstance(explicit, bool) or not isinstance(explicit, (int, float, np.number)) or not (math.isfinite(float(explicit)) and float(explicit) > 0)
    ):
        raise InputError(f"{path}: {column} must be a positive number, got {explicit!r}")
    from_meta = meta.get("pixel_size_um")
    if from_meta is not None:
        if explicit is not None:
            worst = max(abs(float(m) - float(explicit)) / float(m) for m in from_meta)
            if worst > 0.01:
                logger.warning(
                    "%s: pixel size in the file %s um differs from %s=%s by %.1f%%; using the file's",
                    path,
                    from_meta,
                    column,
                    explicit,
                    100 * worst,
                )
        return [float(v) for v in from_meta]
    if explicit is None:
        raise InputError(
            f"{path}: the file does not record its pixel size; add a `{column}` column (micrometres per pixel) to the samples sheet or pass it explicitly"
        )
    return [float(explicit), float(explicit)]


def _check_values(data: np.ndarray, path: PathLike, role: str) -> None:
    if np.issubdtype(data.dtype, np.inexact) and not np.isfinite(data).all():
        raise InputError(f"{path}: {role} contains NaN or infinite values")
    if not data.any():
        raise InputError(f"{path}: {role} is all zero; check the channel and the file")


_RGB_NAMES = ("red", "green", "blue", "alpha")


def _channel_legend(n_channels: int, rgb: bool) -> tuple[str, str]:
    """Label and index legend: `` (RGB)``, ``0 = red, 1 = green, 2 = blue``; else ``0..N-1``."""
    if rgb and n_channels in (3, 4):
        label = " (RGB)" if n_channels == 3 else " (RGBA)"
        return label, ", ".join(f"{i} = {name}" for i, name in enumerate(_RGB_NAMES[:n_channels]))
    return "", f"0..{n_channels - 1}"


def _channel_mismatch(lr: PathLike, hr: PathLike, lr_decl: _Declared, hr_decl: _Declared) -> InputError:
    """The error for LR and HR files whose channel counts differ and no channel was given."""
    roles = [("LR series", lr, lr_decl), ("HR target", hr, hr_decl)]
    if hr_decl.channels > lr_decl.channels:
        roles.reverse()
    (role, path, decl), (other_role, other, other_decl) = roles
    label, legend = _channel_legend(decl.channels, decl.channel_axis == "S")
    n_other = other_decl.channels
    both = " (the same index is read from both files)" if n_other > 1 else ""
    return InputError(
        f"{path}: the {role} has {decl.channels} channels{label} but the {other_role} {other} "
        f"has {n_other}; say which {role.split()[0]} channel to use in the sample sheet's "
        f"'channel' column ({legend}){both}"
    )


def _resolve_channels(lr: PathLike, hr: PathLike, lr_decl: _Declared, hr_decl: _Declared, channel: int | None) -> tuple[int, int]:
    """The channel read from the LR series and from the HR target.

    Files with the same number of channels share ``channel`` (0 when not given). When the
    counts differ, reading channel 0 of both would pair, say, a grayscale series with the
    red channel of an RGB target (and a green-LUT target with an all-zero plane), so the
    channel must be given; it applies to the multi-channel file, and the single-channel
    file's only channel 0 is read.
    """
    if lr_decl.channels == hr_decl.channels:
        return (channel or 0), (channel or 0)
    if channel is None:
        raise _channel_mismatch(lr, hr, lr_decl, hr_decl)
    return (channel if lr_decl.channels > 1 else 0), (channel if hr_decl.channels > 1 else 0)


def _check_frame_count(lr: PathLike, n_frames: int) -> None:
    """Refuse an LR series without frames.

    One frame is a valid pair: many paired datasets, and labs that save one fast frame per
    FOV, have exactly one LR frame per HR target, and registration then skips the drift. An
    HR image given as the series by mistake is still refused, by the scale check of the shapes.
    """
    if n_frames < 1:
        raise InputError(f"{lr}: LR series has no frame (an axis of length 0), at least 1 is needed")


def _counted(meta: Mapping[str, Any]) -> _Declared:
    """The source array a read reported, for the channel checks."""
    shape, axes = meta.get("source_shape"), meta.get("axes")
    if shape and axes and len(shape) == len(axes):
        return _declare(shape, "u1", str(axes))
    return _Declared((), np.dtype("u1"), "", int(meta.get("channels") or 1))


def _plan_reads(lr: PathLike, hr: PathLike, channel: int | None) -> tuple[int, int]:
    """The channels to read, after refusing what cannot fit, all before any pixel is read.

    The HR target is read while the LR frames are held, so its check counts them too.
    """
    lr_decl, hr_decl = _probe(lr), _probe(hr)
    if lr_decl is None or hr_decl is None:  # the reads below report the unreadable file
        return (channel or 0), (channel or 0)
    # A header declaring more than memory holds comes first: it may be corrupt, and then
    # its frame and channel counts mean nothing either.
    _guard(lr, lr_decl, what="LR series")
    _guard(
        hr,
        hr_decl,
        what="HR target (read while the LR series is in memory)",
        plane_bytes=_HR_PLANE_BYTES,
        held_bytes=_lr_held_bytes(lr_decl, hr_decl),
    )
    # A series without frames is the clearer diagnosis than its channels.
    _check_frame_count(lr, _declared_frames(lr_decl))
    return _resolve_channels(lr, hr, lr_decl, hr_decl, channel)


def _lr_held_bytes(lr_decl: _Declared, hr_decl: _Declared) -> int:
    """Memory besides the HR target's own while the HR is read and the store written.

    The LR frames (one channel) stay in memory throughout. Reading the HR source and
    writing the store do not overlap: once the HR planes are made, zarr encodes up to
    ``async.concurrency`` LR frame chunks at once, each as a copy plus its compressed
    output, which outweighs a small HR source (measured: 1024 x 1024 uint16 frames add
    about 40 MB at the default concurrency of 10).
    """
    import zarr

    frames = max(_declared_frames(lr_decl), 1)
    frame_bytes = math.prod(lr_decl.shape) * lr_decl.dtype.itemsize // lr_decl.channels // frames
    in_flight = min(frames, int(zarr.config.get("async.concurrency") or 10))
    hr_factor, _ = _read_need(hr_decl)
    hr_source = hr_factor * math.prod(hr_decl.shape) * hr_decl.dtype.itemsize
    writing = _READ_HEADROOM * 2 * in_flight * frame_bytes
    return frame_bytes * frames + int(max(0.0, writing - hr_source))


def ingest_fov(
    *,
    lr: PathLike,
    hr: PathLike,
    out: PathLike,
    sample: str,
    session: str,
    fov: str,
    channel: int | None = None,
    lr_pixel_size_um: float | None = None,
    hr_pixel_size_um: float | None = None,
    scale: int = 2,
) -> dict[str, Any]:
    """Validate one LR/HR pair and write the canonical per-FOV Zarr v3 store.

    Parameters
    ----------
    lr : str or os.PathLike
        Video-rate series (anything :func:`read_series` accepts).
    hr : str or os.PathLike
        HR target: a single image, or a stack that is averaged.
    out : str or os.PathLike
        Store to write, e.g. ``results/ingest/{sample}/{session}/{fov}.zarr``. An existing
        store is replaced only once the new one is complete.
    sample, session, fov : str
        Identifiers copied into the attributes.
    channel : int or None, optional
        Channel to read (the sample sheet's ``channel`` column). When both files have the
        same number of channels it is read from both (None reads channel 0). When the
        counts differ (an RGB target with a grayscale series, or the reverse) it must be
        given: it applies to the multi-channel file and the single-channel file's channel 0
        is read.
    lr_pixel_size_um, hr_pixel_size_um : float, optional
        Fallback pixel sizes (from the samples sheet) for files whose metadata lack one.
        A value recorded in the file wins; a disagreement above 1 % is logged.
    scale : int, optional
        HR pixels per LR pixel; the HR shape must be exactly ``scale`` times the LR frame.

    Returns
    -------
    dict
        The ``fastscan`` group attributes written to the store.

    Raises
    ------
    InputError
        When a file cannot be read, a pixel size is unknown, the LR series has no frame
        (one frame is a valid pair), the shapes do not match ``scale``, the data are
        non-finite or all zero, the channel counts differ and ``channel`` is None, or the
        declared arrays do not fit the memory limit (checked before any pixel is read).
    """
    from fastscan import __version__

    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise InputError(f"scale must be a positive integer, got {scale!r}")
    out = Path(out)
    _check_out_is_not_input(out, lr, hr)

    lr_ch, hr_ch = _plan_reads(lr, hr, channel)
    lr_data, lr_meta = _read_series(lr, channel=lr_ch, role=_Role("LR series"))
    hr_data, hr_meta = _read_image(hr, channel=hr_ch, role=_Role("HR target", _HR_PLANE_BYTES))
    # Backstop for a header the probe could not read: the counts the reads found.
    _resolve_channels(lr, hr, _counted(lr_meta), _counted(hr_meta), channel)

    _check_pair(lr, hr, lr_data, hr_data, scale)
    lr_px = _resolve_pixel_size(lr_meta, lr_pixel_size_um, path=lr, column="lr_pixel_size_um")
    hr_px = _resolve_pixel_size(hr_meta, hr_pixel_size_um, path=hr, column="hr_pixel_size_um")
    _warn_pixel_ratio(lr, hr, lr_px, hr_px, scale)
    sources = {"lr": _source_record(lr, lr_meta, lr_ch), "hr": _source_record(hr, hr_meta, hr_ch)}

    attrs = jsonable(
        {
            "kind": "fov",
            "sample": str(sample),
            "session": str(session),
            "fov": str(fov),
            "channel": int(channel or 0),
            "axes": {"lr": "TYX", "hr": "YX"},
            "lr_pixel_size_um": lr_px,
            "hr_pixel_size_um": hr_px,
            "scale": int(scale),
            "source": sources,
            "fastscan_version": __version__,
        }
    )

    _write_store_atomically(out, lr_data, hr_data, attrs)
    logger.info(
        "ingested %s/%s/%s: LR %s %s, HR %s -> %s",
        sample,
        session,
        fov,
        lr_data.shape,
        lr_data.dtype,
        hr_data.shape,
        out,
    )
    return attrs


def _check_out_is_not_input(out: Path, lr: PathLike, hr: PathLike) -> None:
    """Refuse an output store that is one of the input files (it would be replaced)."""
    for src in (lr, hr):
        if not _is_glob(src) and Path(src).exists() and Path(src).resolve() == out.resolve():
            raise InputError(f"{out}: output path is the input file itself; choose another `out`")


def _check_pair(lr: PathLike, hr: PathLike, lr_data: np.ndarray, hr_data: np.ndarray, scale: int) -> None:
    """Refuse a read pair without frames, whose HR is not ``scale`` times the LR, or with unusable values."""
    _check_frame_count(lr, lr_data.shape[0])
    expected = (lr_data.shape[1] * scale, lr_data.shape[2] * scale)
    if hr_data.shape != expected:
        # Pairs whose sizes differ by another whole factor are most often a project set up at the
        # wrong scale (a denoising dataset's frames and averages are one size): name the setting.
        k = hr_data.shape[0] // lr_data.shape[1]
        whole = 1 <= k <= MAX_SCALE and hr_data.shape == (lr_data.shape[1] * k, lr_data.shape[2] * k)
        hint = f" (the HR is {k}x the LR: for such pairs set ingest.scale: {k} in the workflow's config)" if whole else ""
        raise InputError(
            f"{hr}: HR image is {hr_data.shape[0]}x{hr_data.shape[1]} but the LR frames of "
            f"{lr} are {lr_data.shape[1]}x{lr_data.shape[2]}; with scale={scale} the HR must be "
            f"{expected[0]}x{expected[1]}{hint}"
        )
    _check_values(lr_data, lr, "LR series")
    _check_values(hr_data, hr, "HR image")


def _warn_pixel_ratio(lr: PathLike, hr: PathLike, lr_px: list[float], hr_px: list[float], scale: int) -> None:
    """Log when the pixel sizes disagree with ``scale`` by more than 5 %; the pair is still used."""
    ratio = [a / b for a, b in zip(lr_px, hr_px, strict=True)]
    if any(abs(r - scale) / scale > 0.05 for r in ratio):
        logger.warning(
            "%s / %s: pixel sizes %s and %s um give a ratio of %s, not the scale %d",
            lr,
            hr,
            lr_px,
            hr_px,
            [round(r, 3) for r in ratio],
            scale,
        )


def _source_record(path: PathLike, meta: Mapping[str, Any], channel_read: int) -> dict[str, Any]:
    """The provenance of one source in the store: its read metadata, the channel read and its SHA-256."""
    digest, files = _source_sha256(path, meta)
    entry = dict(meta)
    entry["path"] = os.fspath(path)
    entry["channel_read"] = channel_read
    entry["sha256"] = digest
    if files is not None and "files" not in entry:  # a glob already lists its frames
        entry["sha256_files"] = files
    return entry


def _write_store_atomically(out: Path, lr: np.ndarray, hr: np.ndarray, attrs: dict[str, Any]) -> None:
    import zarr

    from fastscan.atomic import atomic_path

    with atomic_path(out) as tmp:
        group = zarr.open_group(tmp, mode="w", zarr_format=3)
        group.create_array(
            "lr",
            data=np.ascontiguousarray(lr),
            chunks=(1, *lr.shape[1:]),
            dimension_names=("t", "y", "x"),
        )
        group.create_array(
            "hr",
            data=np.ascontiguousarray(hr, dtype=np.float32),
            chunks=hr.shape,
            dimension_names=("y", "x"),
        )
        group.attrs["fastscan"] = attrs


def read_fov(path: PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a canonical per-FOV store written by :func:`ingest_fov`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``{fov}.zarr`` directory.

    Returns
    -------
    lr : numpy.ndarray
        ``(T, Y, X)`` in the source dtype.
    hr : numpy.ndarray
        ``(Y2, X2)`` float32.
    attrs : dict
        The ``fastscan`` group attributes.
    """
    import zarr

    path = Path(path)
    if not path.is_dir() or _zarr_kind(path) is None:
        raise InputError(f"{path}: not a Zarr store (run ingest for this FOV first)")
    try:
        group = zarr.open_group(path, mode="r")
        attrs = dict(group.attrs["fastscan"])
        lr, hr = group["lr"][...], group["hr"][...]
    except KeyError as exc:
        raise InputError(f"{path}: not a fastscan per-FOV store (missing {exc})") from exc
    except Exception as exc:
        raise InputError(f"{path}: cannot read Zarr store ({type(exc).__name__}: {exc})") from exc
    return np.asarray(lr), np.asarray(hr), attrs
