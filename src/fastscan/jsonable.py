"""JSON-safe copies of metadata and provenance, for Zarr attributes, ``model.json`` and sample sheets.

One owner for the conversion, used by the file readers (``fastscan.io``), the registered store's
attributes (``fastscan.stores``) and the calibrated simulator's provenance
(``fastscan.simulate.calibrated``): numpy scalars and arrays become Python numbers and lists,
tuples lists, paths strings, and NaN or infinities ``None``, since JSON has none.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def jsonable(value: Any) -> Any:
    """Convert numpy scalars and arrays, tuples and paths so the value can be stored in Zarr attributes."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        # JSON has no NaN/inf; a missing value is the honest equivalent.
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
