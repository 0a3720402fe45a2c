"""Simulation parameters: the defaults of the two acquisition modes and of the detector, and their validation.

Every stage of the simulator (specimens, acquisition, files) reads one parameter dict resolved
and checked here, so a wrong key or value fails before any work is done, with its dotted name.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from fastscan.scan import dwell_phases

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "field_of_view_um": 102.4,
    # grid the ground-truth specimen is rendered on (102.4 / 0.05 = 2048 px)
    "specimen_pixel_size_um": 0.05,
    # optical resolution, FWHM of a Gaussian PSF
    "psf_fwhm_um": 0.3,
    # unidirectional galvanometric raster, 0.2 µm per pixel with the defaults
    "hr": {"pixels": 512, "dwell_us": 10.0, "frames_averaged": 4},
    # bidirectional resonant scan, 0.4 µm per nominal pixel with the defaults
    "lr": {
        "pixels": 256,
        "frames": 100,
        "dwell_us": 0.5,
        "field_fraction": 0.8,
        "line_phase_px": 0.6,
        "drift_um_per_frame": 0.02,
        "offset_um": [0.0, 0.0],
    },
    # photons_per_us: expected photoelectrons per µs of dwell at the brightest specimen value (1)
    "detector": {
        "photons_per_us": 30.0,
        "pmt_gain": 8.0,
        "dark_counts_per_us": 0.2,
        "read_noise_du": 3.0,
        "offset_du": 100.0,
        "bits": 12,
    },
}

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _merge(base: dict[str, Any], overrides: Mapping[str, Any], prefix: str) -> None:
    for key, value in overrides.items():
        name = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(f"{prefix}{k}" for k in base)
            raise ValueError(f"unknown simulation parameter {name!r}; known here: {known}")
        if isinstance(base[key], dict):
            if not isinstance(value, Mapping):
                raise ValueError(f"simulation parameter {name!r} must be a mapping, got {type(value).__name__}")
            _merge(base[key], value, f"{name}.")
        else:
            base[key] = copy.deepcopy(value)


def _number(
    params: dict[str, Any],
    path: str,
    *,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
    strict_low: bool = False,
) -> None:
    keys = path.split(".")
    node = params
    for key in keys[:-1]:
        node = node[key]
    value = node[keys[-1]]
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"simulation parameter {path!r} must be a number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise ValueError(f"simulation parameter {path!r} must be an integer, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"simulation parameter {path!r} must be finite, got {value!r}")
    if low is not None and (value <= low if strict_low else value < low):
        sign = ">" if strict_low else ">="
        raise ValueError(f"simulation parameter {path!r} must be {sign} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"simulation parameter {path!r} must be <= {high}, got {value!r}")
    node[keys[-1]] = value


def resolve_params(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Deep-merge parameter overrides into :data:`DEFAULTS` and validate the result.

    Parameters
    ----------
    overrides : mapping, optional
        Nested mapping with a subset of the keys of :data:`DEFAULTS`. A fully resolved parameter
        dict is accepted too (resolving is idempotent).

    Returns
    -------
    params : dict
        A new nested dict with every key of :data:`DEFAULTS`, numbers cast to ``int``/``float``.

    Raises
    ------
    ValueError
        For an unknown key (the dotted key is named, e.g. ``'lr.foo'``), a mapping where a value
        is expected or the reverse, or a value out of range.
    """
    params = copy.deepcopy(DEFAULTS)
    if overrides:
        if not isinstance(overrides, Mapping):
            raise ValueError(f"simulation parameters must be a mapping, got {type(overrides).__name__}")
        _merge(params, overrides, "")
    _number(params, "seed", low=0, integer=True)
    _number(params, "field_of_view_um", low=0, strict_low=True)
    _number(params, "specimen_pixel_size_um", low=0, strict_low=True)
    _number(params, "psf_fwhm_um", low=0)
    _number(params, "hr.pixels", low=2, integer=True)
    _number(params, "hr.dwell_us", low=0, strict_low=True)
    _number(params, "hr.frames_averaged", low=1, integer=True)
    _number(params, "lr.pixels", low=2, integer=True)
    _number(params, "lr.frames", low=1, integer=True)
    _number(params, "lr.dwell_us", low=0, strict_low=True)
    _number(params, "lr.field_fraction", low=0, high=0.98, strict_low=True)
    _number(params, "lr.line_phase_px")
    _number(params, "lr.drift_um_per_frame", low=0)
    _number(params, "detector.photons_per_us", low=0)
    _number(params, "detector.pmt_gain", low=0, strict_low=True)
    _number(params, "detector.dark_counts_per_us", low=0)
    _number(params, "detector.read_noise_du", low=0)
    _number(params, "detector.offset_du", low=0)
    _number(params, "detector.bits", low=1, high=16, integer=True)
    offset = params["lr"]["offset_um"]
    if isinstance(offset, (str, bytes, Mapping)) or not hasattr(offset, "__len__") or len(offset) != 2:
        raise ValueError(f"simulation parameter 'lr.offset_um' must be [dy, dx] in µm, got {offset!r}")
    try:
        params["lr"]["offset_um"] = [float(v) for v in offset]
    except (TypeError, ValueError):
        raise ValueError(f"simulation parameter 'lr.offset_um' must be two numbers, got {offset!r}") from None
    if not all(math.isfinite(v) for v in params["lr"]["offset_um"]):
        raise ValueError(f"simulation parameter 'lr.offset_um' must be finite, got {offset!r}")
    # The dwell path of the outermost pixels must stay before the mirror's turning point.
    dwell_phases(params["lr"]["pixels"], params["lr"]["field_fraction"], params["lr"]["line_phase_px"])
    return params


def _pixel_sizes(params: Mapping[str, Any]) -> tuple[float, float]:
    fov = params["field_of_view_um"]
    return fov / params["lr"]["pixels"], fov / params["hr"]["pixels"]
