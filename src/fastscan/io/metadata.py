"""Metadata values made comparable: lengths in micrometres, times in ISO 8601, JSON-safe values.

OME, ImageJ, NGFF and Olympus files spell units and dates differently; every reader turns
them into the same units here, and every metadata dict leaves through
:func:`fastscan.jsonable.jsonable` so that it can be stored in Zarr attributes and sample sheets.
"""

from __future__ import annotations

import math
from typing import Any

# Length units seen in OME, ImageJ, NGFF and Olympus metadata, as micrometres per unit.
_UM_PER_UNIT: dict[str, float] = {
    "pm": 1e-6,
    "picometer": 1e-6,
    "å": 1e-4,
    "angstrom": 1e-4,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
    "um": 1.0,
    "µm": 1.0,  # micro sign U+00B5
    "μm": 1.0,  # greek small mu U+03BC
    "\\u00b5m": 1.0,  # ImageJ writes the escape sequence literally
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "centimetre": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
}


def _unit_to_um(unit: Any) -> float | None:
    """Return micrometres per ``unit`` or None when the unit is not a known length."""
    if unit is None:
        return None
    key = str(unit).strip().lower()
    return _UM_PER_UNIT.get(key)


def _length_um(value: Any, unit: Any, *, default_unit: str = "µm") -> float | None:
    """A length with its unit in micrometres; None for a missing value or an unknown unit."""
    factor = _unit_to_um(default_unit if unit in (None, "") else unit)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number * factor if factor is not None and math.isfinite(number) else None


def _iso_time(text: Any, *, fmt: str | None = None) -> str | None:
    """ISO 8601 form of a date-time text (OME, Olympus ``YYYY-MM-DD hh:mm:ss``, TIFF
    ``YYYY:MM:DD hh:mm:ss``); None when it does not parse."""
    from datetime import datetime

    if text in (None, ""):
        return None
    text = str(text).strip()
    try:
        if fmt is not None:
            return datetime.strptime(text, fmt).isoformat()
        return datetime.fromisoformat(text.replace("Z", "+00:00")).isoformat()
    except ValueError:
        return None
