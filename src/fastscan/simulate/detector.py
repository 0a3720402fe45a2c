"""The detector model shared by both acquisition modes.

Poisson photoelectrons (signal and dark counts), PMT gain, Gaussian read noise, offset and
quantisation to the digitiser's bits: one function, so that the HR target and the video-rate
series differ only in their dwell and scan, as on the microscope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray


def detect(
    signal: NDArray[Any],
    *,
    dwell_us: float,
    detector: Mapping[str, Any],
    rng: np.random.Generator | None = None,
    noise: bool = True,
) -> NDArray[np.uint16]:
    """Photon detection, PMT amplification and digitisation of a noise-free signal.

    Parameters
    ----------
    signal : ndarray
        Specimen signal on the ``[0, 1]`` scale (1 is the brightest fluorophore density).
    dwell_us : float
        Pixel dwell time in µs.
    detector : mapping
        The ``detector`` section of the parameters.
    rng : numpy.random.Generator, optional
        Required when ``noise`` is true.
    noise : bool, optional
        False gives the expected value, quantised: a noise-free image for geometry checks.

    Returns
    -------
    counts : ndarray of uint16
        Digital units, ``clip(round(gain · n + read + offset), 0, 2**bits - 1)`` with
        ``n ~ Poisson((photons_per_us · signal + dark_counts_per_us) · dwell_us)`` and
        ``read ~ N(0, read_noise_du)``.
    """
    expected = (np.maximum(np.asarray(signal, dtype=np.float64), 0.0) * detector["photons_per_us"] + detector["dark_counts_per_us"]) * dwell_us
    if noise:
        if rng is None:
            raise ValueError("detect(noise=True) needs an rng")
        du = detector["pmt_gain"] * rng.poisson(expected).astype(np.float64)
        if detector["read_noise_du"] > 0:
            du += rng.normal(0.0, detector["read_noise_du"], size=du.shape)
        du += detector["offset_du"]
    else:
        du = detector["pmt_gain"] * expected + detector["offset_du"]
    top = 2 ** int(detector["bits"]) - 1
    return np.clip(np.rint(du), 0, top).astype(np.uint16)
