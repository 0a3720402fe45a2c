"""Readers for raw microscopy files, ingestion into the canonical per-FOV store, lazy slides.

Three layers live here:

* :func:`read_series` and :func:`read_image` turn a raw acquisition (Olympus OIB/OIF,
  multi-page TIFF, OME-TIFF, ImageJ TIFF, PNG, NumPy ``.npy``, or a glob of single-frame files) into a
  ``(T, Y, X)`` series or a 2-D HR target together with the metadata that matters
  downstream (pixel size, channel count, significant bits, scan settings).
* :func:`ingest_fov` validates one LR/HR pair and writes the canonical per-FOV Zarr v3
  store described in ``docs/architecture.md``; :func:`read_fov` reads it back.
* :func:`open_slide` wraps a whole slide (TIFF/OME-TIFF/SVS, OIB/OIF, Zarr/OME-Zarr) as a
  lazily read 2-D dask array so that slides larger than memory can be restored tile by tile.

Every problem with an input file raises :class:`InputError`, whose message names the file.
Input files are only ever opened for reading.

Modules, lowest layer first (each imports only from those above it):

* :mod:`~fastscan.io.errors` -- :class:`InputError`.
* :mod:`~fastscan.io.sources` -- what a path names: a glob of frames, a Zarr store, or an
  OIB/OIF/TIFF/PNG/NPY file by its first bytes.
* :mod:`~fastscan.io.metadata` -- lengths in micrometres, ISO 8601 times, JSON-safe values.
* :mod:`~fastscan.io.declared` -- the array a header declares, the channel read from it,
  and the memory refusal before reading it.
* :mod:`~fastscan.io.olympus` -- Olympus OIB/OIF (settings, OLE sector check, pixels).
* :mod:`~fastscan.io.tiff` -- the TIFF family (plain, OME, ImageJ, SVS) and its checks.
* :mod:`~fastscan.io.png` -- PNG frames (8/16-bit grayscale, 8-bit colour): header chunks, pixels.
* :mod:`~fastscan.io.npy` -- NumPy ``.npy`` arrays: axes by dimension, memory-mapped header.
* :mod:`~fastscan.io.readers` -- :func:`read_series`, :func:`read_image`,
  :func:`read_header`: a source routed to its format's reader, globs stacked.
* :mod:`~fastscan.io.fov_store` -- :func:`ingest_fov`, :func:`read_fov`, :func:`file_sha256`.
* :mod:`~fastscan.io.slides` -- :func:`open_slide`, the lazy whole-slide reader.
"""

from fastscan.io.errors import InputError
from fastscan.io.fov_store import file_sha256, ingest_fov, read_fov
from fastscan.io.readers import read_header, read_image, read_series
from fastscan.io.slides import open_slide

__all__ = [
    "InputError",
    "file_sha256",
    "ingest_fov",
    "open_slide",
    "read_fov",
    "read_header",
    "read_image",
    "read_series",
]
