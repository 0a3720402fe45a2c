"""A simulator calibrated to the user's microscope: parameter overrides fitted to registered FOVs.

The simulator's :data:`~fastscan.simulate.params.DEFAULTS` describe a generic resonant-scan
microscope. Registration already measures, per FOV, what the simulator needs to look like the
user's instrument: the scan model (line phase, resonant field fraction), the pixel sizes and frame
size, and the photon transfer curve of the raw series (gain, offset, read noise;
docs/architecture.md, "Photon calibration"). :func:`calibrate_simulator` gathers these from the
registered stores (opened with :func:`fastscan.stores.read_registered`; :func:`measure_store`)
or from a raw series (:func:`measure_series`), adds the
optical resolution of the HR targets (:func:`estimate_psf_fwhm_um`), and returns simulator
overrides (:func:`calibrated_params`) with a provenance record of what came from where.

Detector
--------
The simulator's detector reads ``rint(pmt_gain n + N(0, read_noise_du) + offset_du)``,
``n ~ Poisson((photons_per_us s + dark_counts_per_us) dwell_us)`` for a specimen value ``s`` in
``[0, 1]`` (:func:`fastscan.simulate.detect`). Its photon transfer line is therefore
``var = pmt_gain (mean - offset_du) + read_noise_du**2 + 1/12`` (the 1/12 ADU**2 of rounding),
the line :func:`fastscan.photons.calibrate_series` fits. So:

* ``pmt_gain`` is the median fitted gain: the *effective* gain (ADU per Poisson-equivalent
  photon), which already holds the PMT's excess noise; the simulator's PMT has none, so its gain
  is exactly that slope.
* ``offset_du`` and ``read_noise_du`` are the medians of the measured offset and of
  ``sqrt(read_noise_adu**2 - 1/12)``. When no store measured them (the darkest pixels reach
  0 ADU: an offset turned below the background, common on confocal systems), the offset is set to
  0 and the read noise to ``sqrt(intercept - 1/12)`` of the measured line: with that, the
  simulated line *is* the measured one above the floor, and the simulator clips at 0 as the
  microscope did.
* The signal: a specimen value ``s`` gives ``(photons_per_us s + dark_counts_per_us) dwell_us``
  photons. ``photons_per_us`` maps the photons at a high percentile of the LR mean
  (``percentile``, 99 by default: inside the brightest structures, above a few hot pixels; each
  FOV by its own line, then the median over the FOVs) onto the same percentile of the
  simulator's own noise-free LR signal of the chosen specimen kind in a typical field
  (:func:`reference_specimen`: the medians over :data:`REFERENCE_FIELDS` fields at the
  calibrated geometry). ``dark_counts_per_us`` is 0: how much of a field is background is the
  specimen's, not the microscope's, so the real median cannot be matched onto another specimen's,
  and a PMT's dark counts are negligible at µs dwells. ``lr.dwell_us`` is kept (from ``base`` or
  the defaults): only the photons per pixel are measured, and their split into a rate and a dwell
  does not change the frames.
* ``bits``: the series' recorded significant bits, else 8 for 8-bit data, else the smallest
  common ADC depth (10, 12, 14, 16) that holds the largest value.

Geometry
--------
``lr.pixels`` is the length of a resonant line (the frame width; the simulator's frames are
square), ``field_of_view_um`` that times the LR pixel size along x, ``hr.pixels`` the LR pixels
times the stores' scale, so that both pixel sizes are the stores'. ``lr.line_phase_px`` and
``lr.field_fraction`` are the medians of the fitted scan models; a linear scan (field fraction
0) is simulated with :data:`LINEAR_FIELD_FRACTION`, whose sinusoid departs from a line by
0.016 px over 512 px. ``lr.frames`` is the median series length. The simulator's other
parameters (dwell times, HR averaging, drift, seed) are ``base``'s or the defaults: the stores
do not measure them (the registered drift is not a drift rate, and the HR targets' photon
calibration is not measured).

Optical resolution
------------------
:func:`estimate_psf_fwhm_um` measures the *apparent* resolution of an image (the width of the
Gaussian that the image's power spectrum falls off with) and, given the width of the specimen's
own finest structures, the PSF. The simulator's specimens have structures of finite width
(tubules and puncta of 0.3-0.6 µm FWHM, membranes, edges), so a PSF-free simulated HR target
already looks 0.4 µm wide. ``psf_fwhm_um`` is chosen so that the simulated HR targets have the
apparent resolution of the real ones: per FOV, the real apparent width minus, in quadrature,
that of the simulator's PSF-free specimen at the calibrated HR pixel, fitted at the real
target's signal-to-noise; the median over the FOVs. This assumes that the real structures are
no finer than the simulated ones; where they are finer, the simulator's PSF comes out too
narrow by what the real specimen lacks.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final, Protocol

import numpy as np
from numpy.typing import NDArray
from scipy import optimize

from fastscan.jsonable import jsonable
from fastscan.photons import PhotonCalibration, calibrate_series
from fastscan.simulate.acquire import hr_signal, lr_signal
from fastscan.simulate.params import DEFAULTS, resolve_params
from fastscan.simulate.specimens import SPECIMENS, render_specimen

logger = logging.getLogger(__name__)


#: FWHM of a Gaussian over its standard deviation.
_FWHM_PER_SIGMA: Final[float] = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Smallest apparent FWHM (pixels) the spectral fit resolves. The Gaussian's power at Nyquist is
#: ``exp(-(π σ / p)**2)``: 0.17 for 1 px FWHM, where it hardly bends within the sampled band and
#: the fit trades it against the specimen's power law and aliasing, 0.02 for 1.5 px. Measured on
#: Fourier-blurred 512 x 512 images (3 seeds each): white noise and random lines within 3 % down
#: to 1.5 px (9 % at 0.75 px); pixel-sharp binary edges, whose aliased steps put power up to
#: Nyquist, -9 % at 2 px, -15 % at 1.5 px, -32 % at 1 px.
MIN_RESOLVED_FWHM_PX: Final[float] = 1.5

#: Field fraction that stands in for a linear scan (field fraction 0, which the simulator's
#: resonant model does not take): ``sin`` departs from its argument by ``(f π / 2)**2 / 6``
#: relative, at most 0.016 px over a 512-px line (:func:`fastscan.scan.nominal_columns`).
LINEAR_FIELD_FRACTION: Final[float] = 0.02

#: Common ADC depths, for data whose significant bits were not recorded.
_ADC_BITS: Final[tuple[int, ...]] = (8, 10, 12, 14, 16)

#: Largest field (µm) and HR side (px) of a reference specimen window: 102.4 µm holds about 6
#: mitochondria cells (40 µm apart) or tens of tissue cells, and renders in under a second.
_REFERENCE_FIELD_UM: Final[float] = 102.4
_REFERENCE_MAX_PIXELS: Final[int] = 512

#: Simulated fields whose median signal percentiles stand for the simulator's typical FOV. One
#: field is not enough: the 99th percentile of single 45 µm mitochondria fields spread from 0.1
#: (a field between cells) to 0.83 over 16 seeds (median 0.70), of 102.4 µm fields 0.68-0.82.
REFERENCE_FIELDS: Final[int] = 8

#: Smallest image side the spectral fit accepts (rings of a few pixels give no spectrum).
_MIN_IMAGE_PX: Final[int] = 32

#: The spectral fit starts at this fraction of Nyquist.
_FIT_START: Final[float] = 0.1

#: Least signal over the noise floor, somewhere in the fitted band, of an image whose width is
#: measured.
_MIN_CONTRAST: Final[float] = 3.0


def _median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


# --------------------------------------------------------------------------------------------
# optical resolution


@dataclass(frozen=True)
class _SpectrumFit:
    """The fitted ring spectrum ``log(A k**-β exp(-4 π² σ² k²) + N)`` of one image."""

    fwhm_um: float
    beta: float
    log_amplitude: float
    log_floor: float
    k_ref: float

    def log_signal(self, k: Any) -> Any:
        sigma = self.fwhm_um / _FWHM_PER_SIGMA
        return self.log_amplitude - self.beta * np.log(k) - 4.0 * math.pi**2 * sigma**2 * np.asarray(k) ** 2

    @property
    def log_contrast(self) -> float:
        """Log of the signal over the noise floor at a tenth of Nyquist, where the fit starts."""
        return float(self.log_signal(self.k_ref) - self.log_floor)


def _ring_spectrum(image: NDArray[Any], pixel_size_um: float) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Ring averages of the windowed image's power spectrum, from a tenth of Nyquist into the corners.

    Returns the ring frequencies (cycles/µm), the mean power and the number of Fourier
    coefficients per ring (rings two frequency steps wide).
    """
    img = np.asarray(image, dtype=np.float64)
    ny, nx = img.shape
    # A Hann window keeps the image's borders (a step from the periodic continuation, whose
    # spectrum falls only as k^-2) out of the high frequencies the fit reads.
    window = np.outer(np.hanning(ny), np.hanning(nx))
    centred = (img - np.sum(img * window) / np.sum(window)) * window
    power = np.abs(np.fft.fft2(centred)) ** 2
    k = np.hypot(np.fft.fftfreq(ny, pixel_size_um)[:, None], np.fft.fftfreq(nx, pixel_size_um)[None, :])
    step = 2.0 / (max(ny, nx) * pixel_size_um)
    ring = np.rint(k / step).astype(np.int64).ravel()
    count = np.bincount(ring)
    total = np.bincount(ring, power.ravel())
    freq = np.arange(count.size) * step
    # The lowest frequencies hold a few large structures (cells, nuclei) and the window's own
    # spectrum; the fit starts at a tenth of Nyquist and runs into the corners of the band,
    # where the white noise floor is purest.
    keep = (count > 0) & (freq >= _FIT_START * 0.5 / pixel_size_um)
    return freq[keep], total[keep] / count[keep], count[keep].astype(np.float64)


def _fit_spectrum(k: NDArray[np.float64], power: NDArray[np.float64], count: NDArray[np.float64], pixel_size_um: float) -> _SpectrumFit:
    """Fit ``log(A k**-β exp(-4 π² σ² k²) + N)`` to a ring spectrum (see :func:`estimate_psf_fwhm_um`)."""
    if k.size < 8 or not np.all(np.isfinite(power)) or not np.any(power > 0):
        raise ValueError("the image has no spectrum to fit (too small, constant or not finite)")
    y = np.log(np.maximum(power, np.finfo(np.float64).tiny))
    # A ring's mean power scatters by 1/sqrt(count) relative (its coefficients are exponential
    # variables): log residuals are weighted by sqrt(count).
    weight = np.sqrt(count / count.max())
    logk = np.log(k)
    k2 = 4.0 * math.pi**2 * k**2

    def residual(theta: NDArray[np.float64]) -> NDArray[np.float64]:
        log_a, beta, sigma, log_noise = theta
        # Specimen power law times the Gaussian OTF squared, plus the white detector noise.
        return (np.logaddexp(log_a - beta * logk - sigma**2 * k2, log_noise) - y) * weight

    floor = float(np.log(np.median(np.maximum(power[-max(3, k.size // 10) :], np.finfo(np.float64).tiny))))
    best = None
    # Several starts: the power law's exponent and the Gaussian's width trade against each
    # other over a short band, and the least-squares surface has more than one valley.
    for beta0 in (1.0, 2.0, 3.0):
        for sigma0_px in (0.5, 1.0, 2.0, 4.0):
            fit = optimize.least_squares(
                residual,
                [y[0] + beta0 * logk[0], beta0, sigma0_px * pixel_size_um, floor],
                bounds=([-np.inf, 0.0, 0.0, -np.inf], [np.inf, 4.0, 20.0 * pixel_size_um, np.inf]),
            )
            if best is None or fit.cost < best.cost:
                best = fit
    assert best is not None
    log_a, beta, sigma, log_noise = (float(v) for v in best.x)
    result = _SpectrumFit(fwhm_um=sigma * _FWHM_PER_SIGMA, beta=beta, log_amplitude=log_a, log_floor=log_noise, k_ref=_FIT_START * 0.5 / pixel_size_um)
    # The signal must rise above the floor in the fitted band, else the width is whatever the
    # optimiser left.
    peak = float(np.max(result.log_signal(k)) - log_noise)
    if peak < math.log(_MIN_CONTRAST):
        raise ValueError(
            f"the image has no structure above its noise floor between {k[0]:.2g} and {k[-1]:.2g} cycles/µm (at most {math.exp(peak):.2g} x the floor)"
        )
    return result


def _check_image(hr: Any, pixel_size_um: float) -> NDArray[np.float64]:
    image = np.asarray(hr, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < _MIN_IMAGE_PX:
        raise ValueError(f"the HR target must be a 2-D image of at least {_MIN_IMAGE_PX} x {_MIN_IMAGE_PX} pixels, got shape {np.shape(hr)}")
    if not (isinstance(pixel_size_um, (int, float, np.number)) and math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise ValueError(f"pixel_size_um must be a positive number, got {pixel_size_um!r}")
    if not np.all(np.isfinite(image)):
        raise ValueError("the HR target has non-finite values")
    return image


def _apparent_resolution(hr: Any, pixel_size_um: float) -> _SpectrumFit:
    """The spectral fit of an HR target, its width clamped at :data:`MIN_RESOLVED_FWHM_PX`."""
    fit = _fit_spectrum(*_ring_spectrum(_check_image(hr, pixel_size_um), pixel_size_um), pixel_size_um)
    floor = MIN_RESOLVED_FWHM_PX * pixel_size_um
    if fit.fwhm_um < floor:
        logger.warning(
            "apparent resolution %.3g µm is below %.1f pixels of %.3g µm, which the fit cannot resolve: clamped to %.3g µm (an upper bound)",
            fit.fwhm_um,
            MIN_RESOLVED_FWHM_PX,
            pixel_size_um,
            floor,
        )
        fit = replace(fit, fwhm_um=floor)
    return fit


def _specimen_fwhm_um(sharp: tuple[NDArray[np.float64], ...], pixel_size_um: float, log_contrast: float) -> float:
    """Apparent FWHM of the PSF-free simulated specimen seen with a given signal-to-floor contrast.

    ``sharp`` is the ring spectrum of the noise-free, PSF-free HR signal. The white floor that
    gives it the contrast of the measured image at a tenth of Nyquist is added before the fit,
    so that both are fitted over the same band: the simulated structures are a mixture of widths
    (0.3-0.6 µm), and a band cut short by noise sees their mean, the full band their narrowest
    (noise-free mitochondria read 0.35 µm, at a target's noise 0.41 µm).
    """
    k, power, count = sharp
    clean = _fit_spectrum(k, power, count, pixel_size_um)
    floor = math.exp(float(clean.log_signal(clean.k_ref)) - log_contrast)
    return _fit_spectrum(k, power + floor, count, pixel_size_um).fwhm_um


def _psf_from_widths(apparent_um: float, specimen_um: float, source: str) -> float:
    """The PSF that, added in quadrature to the specimen's width, gives the apparent one."""
    if specimen_um >= apparent_um:
        logger.warning(
            "%s: the image (apparent FWHM %.3g µm) is no blurrier than the simulated specimen alone (%.3g µm): PSF set to 0",
            source,
            apparent_um,
            specimen_um,
        )
        return 0.0
    return math.sqrt(apparent_um**2 - specimen_um**2)


def estimate_psf_fwhm_um(hr: NDArray[Any], pixel_size_um: float, *, specimen: str | None = None, seed: int = 0) -> float:
    """Optical resolution (FWHM of a Gaussian PSF, µm) estimated from an HR target image.

    Parameters
    ----------
    hr : (Y, X) array_like
        The HR target, at least 32 x 32 pixels, in any linear intensity unit (ADU).
    pixel_size_um : float
        Its pixel size, µm.
    specimen : {"mitochondria", "tissue"}, optional
        The simulator's specimen kind whose own structures' width is removed (see the notes).
        None (the default) returns the apparent resolution of the image: an upper bound of
        the PSF.
    seed : int, optional
        Seed of the simulated specimen rendered for ``specimen``.

    Returns
    -------
    float
        The apparent FWHM ``W`` of the image (at least :data:`MIN_RESOLVED_FWHM_PX` pixels),
        or with ``specimen`` the PSF ``sqrt(W**2 - w**2)`` that gives the simulator's specimen
        (apparent width ``w``) the image's apparent resolution; 0 when ``W <= w``.

    Raises
    ------
    ValueError
        For an image that is not 2-D, smaller than 32 px, not finite, or without structure above
        its noise floor; for a pixel size that is not positive; for an unknown specimen.

    Notes
    -----
    The image is the specimen convolved with the PSF plus white detector noise, so its power
    spectrum is ``|specimen(k)|**2 |OTF(k)|**2 + N``. For a Gaussian PSF of standard deviation
    ``σ`` the OTF is ``exp(-2 π² σ² k²)``; a specimen's spectrum is, over the band of a
    microscope image, close to a power law ``A k**-β`` (β about 1 for lines, 2 for natural
    scenes, 3 for sharp edges). The ring-averaged power spectrum of the mean-subtracted,
    Hann-windowed image is fitted in log space as ``log(A k**-β exp(-4 π² σ² k²) + N)`` from a
    tenth of Nyquist into the corners of the 2-D band, weighted by the coefficients per ring.

    What the fit sees is every Gaussian blur at once: the PSF, the pixel's integration and the
    specimen's own structures where they have a soft profile, which no spectrum can tell apart
    from the PSF (a Gaussian tubule of width ``w`` seen through a Gaussian PSF ``p`` is a
    Gaussian of width ``sqrt(w**2 + p**2)``). The simulator's specimens have no structure
    finer than 0.3 µm, so their PSF-free HR targets (0.2 µm pixels) already read about 0.4 µm.
    With ``specimen``, the same fit on the simulated specimen without a PSF, at the image's
    pixel size and signal-to-noise (:func:`_specimen_fwhm_um`), gives ``w``, removed in
    quadrature. For a simulated target this is the PSF it was simulated with; for a real one it
    is the PSF with which the simulated targets look as sharp as the real ones, which is the
    real PSF only if the real structures are no finer than the simulated ones.

    Below about :data:`MIN_RESOLVED_FWHM_PX` pixels the Gaussian barely bends within the
    sampled band: the apparent width is clamped there with a warning (an upper bound). A
    0.3 µm PSF at 0.2 µm pixels (1.5 px) is measured here only as part of the total width with
    the specimen's structures and the pixel (about 0.5 µm, 2.5 px), so its error is that of a
    difference of squares: see tests/test_calibrated_simulator.py for the spread measured.
    """
    fit = _apparent_resolution(hr, pixel_size_um)
    if specimen is None:
        return fit.fwhm_um
    n = min(_REFERENCE_MAX_PIXELS, max(_MIN_IMAGE_PX, int(math.floor(_REFERENCE_FIELD_UM / pixel_size_um))))
    params = {
        "seed": int(seed),
        "field_of_view_um": n * pixel_size_um,
        # The specimen is rendered at least 4 times finer than the target's pixels.
        "specimen_pixel_size_um": min(DEFAULTS["specimen_pixel_size_um"], pixel_size_um / 4.0),
        "hr": {"pixels": n},
        "lr": {"pixels": max(2, n // 2), "frames": 1, "offset_um": [0.0, 0.0]},
    }
    sample, window = _reference_window(params, specimen)
    width = _specimen_fwhm_um(_sharp_spectrum(sample, window), pixel_size_um, fit.log_contrast)
    return _psf_from_widths(fit.fwhm_um, width, "HR target")


# --------------------------------------------------------------------------------------------
# the simulator's own specimen


@dataclass(frozen=True)
class ReferenceSpecimen:
    """Signal statistics of the simulator's specimen at a calibrated geometry.

    Attributes
    ----------
    kind : str
        Specimen kind (:data:`fastscan.simulate.SPECIMENS`).
    seeds : list of int
        Seeds of the rendered fields.
    field_of_view_um : float
        Field of each (the calibrated one, at most 102.4 µm).
    signal_median, signal_high : float
        Medians over the fields of the median and the ``percentile`` of each field's noise-free
        LR signal (``[0, 1]`` scale): the simulator's typical FOV.
    percentile : float
        The high percentile.
    """

    kind: str
    seeds: list[int]
    field_of_view_um: float
    signal_median: float
    signal_high: float
    percentile: float


def _reference_window(params: Mapping[str, Any], specimen: str, *, field: int = 0) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """The specimen rendered for a window of the field of ``params`` (same pixel sizes), and the window's parameters.

    ``field`` numbers independent specimens: seed ``params["seed"] + field``.
    """
    if specimen not in SPECIMENS:
        raise ValueError(f"unknown specimen kind {specimen!r}; choose one of {', '.join(SPECIMENS)}")
    p = resolve_params(params)
    lr_px = p["field_of_view_um"] / p["lr"]["pixels"]
    hr_px = p["field_of_view_um"] / p["hr"]["pixels"]
    hr_pixels = int(min(p["hr"]["pixels"], _REFERENCE_MAX_PIXELS, max(_MIN_IMAGE_PX, math.floor(_REFERENCE_FIELD_UM / hr_px))))
    scale = p["hr"]["pixels"] / p["lr"]["pixels"]
    lr_pixels = max(2, int(round(hr_pixels / scale)))
    fov = lr_pixels * lr_px
    window = resolve_params(
        {
            **p,
            "seed": p["seed"] + field,
            "field_of_view_um": fov,
            "hr": {**p["hr"], "pixels": int(round(fov / hr_px))},
            "lr": {**p["lr"], "pixels": lr_pixels, "frames": 1, "offset_um": [0.0, 0.0]},
        }
    )
    rng = np.random.default_rng(window["seed"])
    ps = p["specimen_pixel_size_um"]
    # 3 µm of margin: the PSF and the dwell path reach about 1 µm beyond the field.
    size = int(math.ceil((fov + 6.0) / ps))
    return render_specimen(specimen, shape=(size, size), pixel_size_um=ps, rng=rng), window


def _sharp_spectrum(sample: NDArray[np.float32], window: Mapping[str, Any]) -> tuple[NDArray[np.float64], ...]:
    """Ring spectrum of the PSF-free, noise-free HR signal: the specimen's structures and the HR pixel."""
    sharp = hr_signal(sample, params={**window, "psf_fwhm_um": 0.0})
    return _ring_spectrum(sharp, window["field_of_view_um"] / window["hr"]["pixels"])


def _signal_percentiles(sample: NDArray[np.float32], window: Mapping[str, Any], percentile: float) -> tuple[float, float]:
    """Median and ``percentile`` of the noise-free LR signal (with the window's PSF and scan)."""
    signal = lr_signal(sample, params=window)[0]
    median, high = np.percentile(signal, [50.0, percentile])
    return float(median), float(high)


def reference_specimen(
    params: Mapping[str, Any], *, specimen: str = "mitochondria", percentile: float = 99.0, fields: int = REFERENCE_FIELDS
) -> ReferenceSpecimen:
    """The simulator's typical FOV at the geometry of ``params``: its signal percentiles.

    Parameters
    ----------
    params : mapping
        Simulation parameters (resolved with :func:`resolve_params`); the field is reduced to
        at most 102.4 µm and 512 HR pixels at the same pixel sizes.
    specimen : {"mitochondria", "tissue"}, optional
        Specimen kind.
    percentile : float, optional
        The high percentile of the LR signal.
    fields : int, optional
        Independent fields (seeds ``params["seed"]`` onwards) whose percentiles' medians are
        taken; about 0.15 s each at 45 µm, 0.4-0.8 s at 102.4 µm.

    Returns
    -------
    ReferenceSpecimen
    """
    if fields < 1:
        raise ValueError(f"fields must be at least 1, got {fields!r}")
    medians, highs, seeds = [], [], []
    fov = math.nan
    for number in range(fields):
        sample, window = _reference_window(params, specimen, field=number)
        median, high = _signal_percentiles(sample, window, percentile)
        medians.append(median)
        highs.append(high)
        seeds.append(int(window["seed"]))
        fov = window["field_of_view_um"]
    return ReferenceSpecimen(
        kind=specimen,
        seeds=seeds,
        field_of_view_um=float(fov),
        signal_median=_median(medians),
        signal_high=_median(highs),
        percentile=float(percentile),
    )


# --------------------------------------------------------------------------------------------
# what one FOV tells


@dataclass(frozen=True)
class FovMeasurement:
    """What one FOV says about the microscope (see :func:`measure_store`, :func:`measure_series`).

    Attributes
    ----------
    source : str
        The store or series it came from (named in the provenance and in errors).
    frames : int
        Frames of the LR series.
    lr_shape : tuple of int
        ``(Y, X)`` of an LR frame.
    lr_pixel_size_um : float or None
        LR pixel size along x (the resonant axis), µm.
    scale : int or None
        HR pixels per LR pixel.
    hr_pixel_size_um : float or None
        HR pixel size along x, µm.
    line_phase_px, field_fraction : float or None
        The fitted scan model.
    photons : PhotonCalibration or None
        The photon calibration of the raw series (None: not calibrated).
    median_adu, high_adu : float
        Median and ``percentile`` of the LR mean over frames, ADU.
    percentile : float
        The high percentile.
    bits : int or None
        ADC bits: recorded significant bits, else inferred from the dtype and values.
    bits_from : str
        Where ``bits`` came from.
    hr_fwhm_um : float or None
        Apparent resolution of the HR target (µm, :func:`estimate_psf_fwhm_um` without a
        specimen); None without an HR target or when it has no measurable structure (``notes``
        says why).
    hr_contrast : float or None
        The HR target's signal over its noise floor at a tenth of Nyquist (the simulated
        specimen's width is measured at the same contrast).
    notes : tuple of str
        What could not be measured, and why.
    """

    source: str
    frames: int
    lr_shape: tuple[int, int]
    lr_pixel_size_um: float | None
    scale: int | None
    hr_pixel_size_um: float | None
    line_phase_px: float | None
    field_fraction: float | None
    photons: PhotonCalibration | None
    median_adu: float
    high_adu: float
    percentile: float
    bits: int | None
    bits_from: str
    hr_fwhm_um: float | None
    hr_contrast: float | None
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of what was measured (the provenance of one FOV)."""
        out = {k: v for k, v in asdict(self).items() if k != "photons"}
        out["lr_shape"] = list(self.lr_shape)
        out["notes"] = list(self.notes)
        cal = self.photons
        out["photons"] = None
        if cal is not None:
            out["photons"] = jsonable(
                {
                    "gain_adu_per_photon": cal.gain_adu_per_photon,
                    "offset_adu": cal.offset_adu,
                    "read_noise_adu": cal.read_noise_adu,
                    "variance_intercept_adu2": cal.variance_intercept_adu2,
                    "reason": cal.reason,
                }
            )
        return out


def _bits(significant_bits: Any, dtype: Any, max_value: float) -> tuple[int | None, str]:
    """ADC bits: recorded, else from an 8-bit dtype, else the smallest common depth holding the data."""
    if significant_bits:
        return int(significant_bits), "recorded significant bits"
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt == np.uint8:
            return 8, "8-bit data"
    if math.isfinite(max_value) and max_value >= 0:
        for bits in _ADC_BITS:
            if max_value <= 2**bits - 1:
                return bits, f"smallest common ADC depth holding the largest value ({max_value:.0f} ADU)"
    return None, "not knowable"


def _mean_frame(frames: Any, *, chunk: int = 16) -> NDArray[np.float64]:
    """Mean over the first axis, read a few frames at a time (Zarr arrays stay on disk)."""
    n = frames.shape[0]
    total = np.zeros(frames.shape[1:], dtype=np.float64)
    for t0 in range(0, n, chunk):
        total += np.sum(np.asarray(frames[t0 : t0 + chunk], dtype=np.float64), axis=0)
    return total / n


def _hr_resolution(hr: Any, pixel_size_um: float | None, source: str, notes: list[str]) -> dict[str, float | None]:
    """``hr_fwhm_um`` and ``hr_contrast`` of a FOV (None where not measurable, with a note)."""
    if hr is None or pixel_size_um is None:
        notes.append("no HR target with a pixel size: resolution not measured")
        return {"hr_fwhm_um": None, "hr_contrast": None}
    try:
        fit = _apparent_resolution(hr, pixel_size_um)
    except ValueError as err:
        notes.append(f"HR resolution not measured: {err}")
        logger.warning("%s: HR resolution not measured: %s", source, err)
        return {"hr_fwhm_um": None, "hr_contrast": None}
    return {"hr_fwhm_um": fit.fwhm_um, "hr_contrast": math.exp(fit.log_contrast)}


def measure_series(
    frames: Any,
    *,
    calibration: PhotonCalibration | Mapping[str, Any] | None = None,
    lr_pixel_size_um: float | None = None,
    hr: Any = None,
    hr_pixel_size_um: float | None = None,
    scale: int | None = None,
    line_phase_px: float | None = None,
    field_fraction: float | None = None,
    significant_bits: int | None = None,
    percentile: float = 99.0,
    source: str = "series",
) -> FovMeasurement:
    """What a raw series (and optionally its HR target) says about the microscope, without registration.

    Parameters
    ----------
    frames : (T, Y, X) or (Y, X) array_like
        The raw LR series in ADU.
    calibration : PhotonCalibration or mapping, optional
        Its photon calibration (a :meth:`~fastscan.photons.PhotonCalibration.summary` is read
        too); measured with :func:`fastscan.photons.calibrate_series` when not given (saturation
        at ``2**bits - 1``).
    lr_pixel_size_um, hr_pixel_size_um : float, optional
        Pixel sizes along x, µm.
    hr : (Y2, X2) array_like, optional
        The HR target; its apparent resolution is measured.
    scale : int, optional
        HR pixels per LR pixel.
    line_phase_px, field_fraction : float, optional
        The scan model, where known.
    significant_bits : int, optional
        The ADC's bits, where recorded.
    percentile : float, optional
        High percentile of the LR mean that sets the signal range.
    source : str, optional
        Name of the series in the provenance and in messages.

    Returns
    -------
    FovMeasurement
    """
    arr = np.asarray(frames)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] < 1 or min(arr.shape[1:]) < 2:
        raise ValueError(f"{source}: frames must be a (T, Y, X) series, got shape {np.shape(frames)}")
    bits, bits_from = _bits(significant_bits, arr.dtype, float(np.max(arr)))
    if calibration is None:
        calibration = calibrate_series(arr, saturation=None if bits is None else 2**bits - 1)
    elif isinstance(calibration, Mapping):
        calibration = PhotonCalibration.from_summary(calibration)
    return _measurement(
        source,
        arr,
        _mean_frame(arr),
        lr_pixel_size_um=lr_pixel_size_um,
        scale=scale,
        hr=hr,
        hr_pixel_size_um=hr_pixel_size_um,
        line_phase_px=line_phase_px,
        field_fraction=field_fraction,
        photons=calibration,
        percentile=percentile,
        bits=(bits, bits_from),
        notes=[],
    )


def _optional(value: Any, kind: type) -> Any:
    return None if value is None else kind(value)


def _measurement(
    source: str,
    lr: Any,
    mean: NDArray[np.float64],
    *,
    lr_pixel_size_um: float | None,
    scale: int | None,
    hr: Any,
    hr_pixel_size_um: float | None,
    line_phase_px: float | None,
    field_fraction: float | None,
    photons: PhotonCalibration | None,
    percentile: float,
    bits: tuple[int | None, str],
    notes: list[str],
) -> FovMeasurement:
    """The :class:`FovMeasurement` of an LR series ``lr`` (T, Y, X) whose temporal mean is ``mean``."""
    median, high = (float(v) for v in np.percentile(mean, [50.0, percentile]))
    return FovMeasurement(
        source=source,
        frames=int(lr.shape[0]),
        lr_shape=(int(lr.shape[1]), int(lr.shape[2])),
        lr_pixel_size_um=_optional(lr_pixel_size_um, float),
        scale=_optional(scale, int),
        hr_pixel_size_um=_optional(hr_pixel_size_um, float),
        line_phase_px=_optional(line_phase_px, float),
        field_fraction=_optional(field_fraction, float),
        photons=photons,
        median_adu=median,
        high_adu=high,
        percentile=float(percentile),
        bits=bits[0],
        bits_from=bits[1],
        **_hr_resolution(None if hr is None else np.asarray(hr), hr_pixel_size_um, source, notes),
        notes=tuple(notes),
    )


def _pixel_size_x(attrs: Mapping[str, Any], key: str, store: str) -> float:
    value = attrs.get(key)
    try:
        size = [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)] * 2
    except (TypeError, ValueError):
        raise ValueError(f"{store}: the store lacks fastscan.{key} ([y, x] µm), needed for the simulator's field of view; got {value!r}") from None
    if len(size) != 2 or not all(math.isfinite(v) and v > 0 for v in size):
        raise ValueError(f"{store}: fastscan.{key} must be [y, x] positive µm, got {value!r}")
    if abs(size[0] / size[1] - 1.0) > 0.02:
        logger.warning("%s: %s is %s, not square; the simulator's pixels are square: x (the resonant axis) is used", store, key, size)
    return size[1]


class RegisteredFov(Protocol):
    """What the calibration reads of a registered FOV store: :class:`fastscan.stores.RegisteredStore`'s attributes.

    ``fastscan.stores`` is in the same layer as ``fastscan.simulate`` (tests/test_layers.py), so
    the stores are opened by the caller with :func:`fastscan.stores.read_registered`, the one
    reader, which names a store that is missing or not registered.
    """

    path: Any
    attrs: dict[str, Any]
    scan: Any

    @property
    def lr(self) -> Any: ...

    @property
    def hr(self) -> Any: ...

    @property
    def photons(self) -> Mapping[str, Any] | None: ...


def measure_store(store: RegisteredFov, *, percentile: float = 99.0) -> FovMeasurement:
    """What one registered FOV store says about the microscope.

    Parameters
    ----------
    store : RegisteredFov
        A registered per-FOV store opened with :func:`fastscan.stores.read_registered`.
    percentile : float, optional
        High percentile of the LR mean that sets the signal range.

    Returns
    -------
    FovMeasurement

    Raises
    ------
    TypeError
        For a path instead of an opened store (named).
    ValueError
        Naming the store, when it lacks the pixel sizes, the scale, the scan model or the
        ``lr``/``hr`` arrays.
    """
    if isinstance(store, (str, bytes, os.PathLike)):
        raise TypeError(f"{store!s}: pass the registered store opened with fastscan.stores.read_registered(path), not its path")
    source = str(getattr(store, "path", store))
    try:
        attrs, scan = store.attrs, store.scan
        line_phase, field_fraction = float(scan.line_phase_px), float(scan.field_fraction)
    except (AttributeError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: not a registered FOV store opened with fastscan.stores.read_registered ({err})") from None
    lr_px = _pixel_size_x(attrs, "lr_pixel_size_um", source)
    hr_px = _pixel_size_x(attrs, "hr_pixel_size_um", source)
    scale = attrs.get("scale")
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"{source}: the store lacks fastscan.scale (HR pixels per LR pixel), got {scale!r}")
    try:
        lr, hr = store.lr, store.hr
    except (KeyError, AttributeError) as err:
        raise ValueError(f"{source}: the registered store lacks the array {err}") from None
    if lr.ndim != 3 or lr.shape[0] < 1:
        raise ValueError(f"{source}: lr must be (T, Y, X), got shape {lr.shape}")
    source_lr = (attrs.get("source") or {}).get("lr") or {}
    mean = _mean_frame(lr)
    # The registered frames are float32 (drift-corrected): the recorded bits, else the raw
    # dtype ingestion recorded, else the largest value of the registered mean (a lower bound
    # of the raw maximum: the depth may come out one step short for data that fill their range).
    bits, bits_from = _bits(source_lr.get("significant_bits"), source_lr.get("dtype"), float(np.max(mean)))
    notes: list[str] = []
    summary = store.photons
    calibration = None
    if isinstance(summary, Mapping):
        try:
            calibration = PhotonCalibration.from_summary(summary)
        except ValueError as err:
            notes.append(f"photon calibration unreadable: {err}")
    else:
        notes.append("no photon calibration in the store")
    return _measurement(
        source,
        lr,
        mean,
        lr_pixel_size_um=lr_px,
        scale=scale,
        hr=hr,
        hr_pixel_size_um=hr_px,
        line_phase_px=line_phase,
        field_fraction=field_fraction,
        photons=calibration,
        percentile=percentile,
        bits=(bits, bits_from),
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# the calibrated simulator


@dataclass(frozen=True)
class SimulatorCalibration:
    """Simulator overrides fitted to a microscope, and where each value came from.

    Attributes
    ----------
    params : dict
        Overrides for :func:`fastscan.simulate.resolve_params` (``base`` with the calibrated
        keys written over it).
    provenance : dict
        JSON-ready: ``fovs`` (one :meth:`FovMeasurement.summary` per FOV), ``specimen`` (the
        :class:`ReferenceSpecimen` the photons were mapped onto), ``choices`` (per calibrated
        key, how its value was chosen, the numbers it came from and from which FOVs) and
        ``warnings`` (what was left at ``base`` or the defaults, and why).
    """

    params: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def simulator_calibration(
    measurements: Sequence[FovMeasurement],
    *,
    base: Mapping[str, Any] | None = None,
    specimen: str = "mitochondria",
) -> SimulatorCalibration:
    """Simulator overrides fitted to the FOVs' measurements (see the module notes).

    Parameters
    ----------
    measurements : sequence of FovMeasurement
        One per FOV (:func:`measure_store`, :func:`measure_series`), all with the same
        ``percentile``.
    base : mapping, optional
        Overrides to start from (dwell times, frames averaged, seed, ...); the calibrated keys
        are written over it.
    specimen : {"mitochondria", "tissue"}, optional
        The specimen kind the calibrated simulator will render: its signal percentiles and its
        structures' width are what the real ones are mapped onto.

    Returns
    -------
    SimulatorCalibration

    Raises
    ------
    ValueError
        Without measurements, or with percentiles that differ between them.
    """
    if not measurements:
        raise ValueError("calibrating the simulator needs at least one FOV")
    percentiles = {m.percentile for m in measurements}
    if len(percentiles) != 1:
        raise ValueError(f"the FOVs were measured at different percentiles {sorted(percentiles)}")
    percentile = percentiles.pop()
    base = dict(base or {})
    resolve_params(base)  # a wrong base fails before any work
    over: dict[str, Any] = {"lr": {}, "hr": {}, "detector": {}}
    choices: dict[str, Any] = {}
    warnings: list[str] = []

    def warn(message: str) -> None:
        logger.warning("%s", message)
        warnings.append(message)

    names = [m.source for m in measurements]

    # Geometry: the line length, pixel sizes and scale.
    widths = [m.lr_shape[1] for m in measurements]
    over["lr"]["pixels"] = int(round(_median(widths)))
    choices["lr.pixels"] = {"how": "median LR frame width (the resonant line's length; simulated frames are square)", "from": names}
    if any(m.lr_shape[0] != m.lr_shape[1] for m in measurements):
        warn(
            f"some LR frames are not square ({sorted({m.lr_shape for m in measurements})}); the simulator's are {over['lr']['pixels']} x {over['lr']['pixels']}"
        )
    over["lr"]["frames"] = int(round(_median([m.frames for m in measurements])))
    choices["lr.frames"] = {"how": "median series length", "from": names}
    with_px = [m for m in measurements if m.lr_pixel_size_um is not None]
    if with_px:
        lr_px = _median([m.lr_pixel_size_um for m in with_px])  # type: ignore[misc]
        over["field_of_view_um"] = over["lr"]["pixels"] * lr_px
        choices["field_of_view_um"] = {"how": "LR pixels x median LR pixel size (x)", "lr_pixel_size_um": lr_px, "from": [m.source for m in with_px]}
    else:
        lr_px = resolve_params(base)["field_of_view_um"] / resolve_params(base)["lr"]["pixels"]
        warn(f"no FOV has an LR pixel size: the simulator keeps its LR pixel size of {lr_px:.4g} µm")
        over["field_of_view_um"] = over["lr"]["pixels"] * lr_px
        choices["field_of_view_um"] = {"how": "LR pixels x the base's LR pixel size (no FOV recorded one)", "lr_pixel_size_um": lr_px, "from": []}
    with_scale = [m for m in measurements if m.scale is not None]
    start = resolve_params(base)
    scale = int(round(_median([m.scale for m in with_scale]))) if with_scale else max(1, round(start["hr"]["pixels"] / start["lr"]["pixels"]))  # type: ignore[misc]
    over["hr"]["pixels"] = over["lr"]["pixels"] * scale
    choices["hr.pixels"] = {"how": "LR pixels x median scale", "scale": scale, "from": [m.source for m in with_scale]}
    hr_px = over["field_of_view_um"] / over["hr"]["pixels"]
    if start["specimen_pixel_size_um"] > hr_px / 2.0:
        # At least two raster cells per HR pixel: the simulator integrates a pixel's area by
        # interpolating the raster's summed-area table linearly within a cell.
        over["specimen_pixel_size_um"] = hr_px / 2.0
        choices["specimen_pixel_size_um"] = {"how": "half the HR pixel, finer than the base's", "from": names}
    for m in measurements:
        if m.hr_pixel_size_um is not None and abs(m.hr_pixel_size_um / hr_px - 1.0) > 0.02:
            warn(f"{m.source}: HR pixel size {m.hr_pixel_size_um:.4g} µm is not its LR pixel size over the scale ({hr_px:.4g} µm in the simulator)")

    # Scan model.
    scanned = [m for m in measurements if m.line_phase_px is not None and m.field_fraction is not None]
    if scanned:
        over["lr"]["line_phase_px"] = _median([m.line_phase_px for m in scanned])  # type: ignore[misc]
        ff = _median([m.field_fraction for m in scanned])  # type: ignore[misc]
        how = "median fitted field fraction"
        if ff < LINEAR_FIELD_FRACTION:
            how = f"median fitted field fraction {ff:.3g} (a linear scan), simulated with {LINEAR_FIELD_FRACTION} (within 0.016 px of a line over 512 px)"
            ff = LINEAR_FIELD_FRACTION
        over["lr"]["field_fraction"] = ff
        choices["lr.line_phase_px"] = {"how": "median fitted line phase", "from": [m.source for m in scanned]}
        choices["lr.field_fraction"] = {"how": how, "from": [m.source for m in scanned]}
    else:
        warn("no FOV has a fitted scan model: the simulator keeps its line phase and field fraction")

    # ADC depth.
    with_bits = [m for m in measurements if m.bits is not None]
    if with_bits:
        over["detector"]["bits"] = max(m.bits for m in with_bits)  # type: ignore[type-var]
        choices["detector.bits"] = {
            "how": "largest over the FOVs: " + "; ".join(sorted({m.bits_from for m in with_bits})),
            "from": [m.source for m in with_bits],
        }

    # Optical resolution: per FOV, the PSF that gives the simulated specimen (at the calibrated
    # HR pixel, seen at that FOV's contrast) the FOV's apparent resolution; their median.
    with_hr = [m for m in measurements if m.hr_fwhm_um is not None and m.hr_contrast is not None]
    if with_hr:
        sharp = _sharp_spectrum(*_reference_window(resolve_params(_merge(base, over)), specimen))
        widths = [_specimen_fwhm_um(sharp, hr_px, math.log(m.hr_contrast)) for m in with_hr]  # type: ignore[arg-type]
        psfs = [_psf_from_widths(m.hr_fwhm_um, w, m.source) for m, w in zip(with_hr, widths, strict=True)]  # type: ignore[arg-type]
        over["psf_fwhm_um"] = _median(psfs)
        choices["psf_fwhm_um"] = {
            "how": "median over the HR targets of sqrt(apparent FWHM^2 - the PSF-free simulated specimen's FWHM^2 at the target's contrast)",
            "apparent_fwhm_um": [m.hr_fwhm_um for m in with_hr],
            "specimen_fwhm_um": widths,
            "psf_fwhm_um": psfs,
            "from": [m.source for m in with_hr],
        }
    else:
        warn("no HR target with a measurable resolution: the simulator keeps its psf_fwhm_um")

    # Detector: the specimen's signal percentiles at the calibrated PSF and scan.
    geometry = resolve_params(_merge(base, over))
    reference = reference_specimen(geometry, specimen=specimen, percentile=percentile)
    _detector(measurements, geometry, reference, over["detector"], choices, warn)

    params = _merge(base, over)
    resolve_params(params)  # what is returned is valid
    provenance = jsonable(
        {
            "fovs": [m.summary() for m in measurements],
            "specimen": asdict(reference),
            "choices": choices,
            "warnings": warnings,
        }
    )
    return SimulatorCalibration(params=params, provenance=provenance)


def _detector(
    measurements: Sequence[FovMeasurement],
    geometry: Mapping[str, Any],
    reference: ReferenceSpecimen,
    detector: dict[str, Any],
    choices: dict[str, Any],
    warn: Any,
) -> None:
    """Fill the detector overrides from the FOVs with a measured photon transfer line."""
    measured = [m for m in measurements if m.photons is not None and m.photons.measurable]
    if not measured:
        reasons = "; ".join(f"{m.source}: {m.photons.reason if m.photons is not None else 'not calibrated'}" for m in measurements)
        warn(f"no FOV has a measurable photon calibration ({reasons}): the simulator keeps its default detector (gain, offset, read noise, photons)")
        return
    names = [m.source for m in measured]
    gain = _median([m.photons.gain_adu_per_photon for m in measured])  # type: ignore[union-attr]
    detector["pmt_gain"] = gain
    choices["detector.pmt_gain"] = {"how": "median fitted effective gain (ADU per Poisson-equivalent photon)", "from": names}

    complete = [m for m in measured if m.photons.complete]  # type: ignore[union-attr]
    # The fitted read noise holds the 1/12 ADU**2 of integer rounding, which the simulator adds itself.
    if complete:
        offset = max(0.0, _median([m.photons.offset_adu for m in complete]))  # type: ignore[union-attr]
        read2 = _median([m.photons.read_noise_adu**2 for m in complete]) - 1.0 / 12.0  # type: ignore[union-attr]
        detector["offset_du"] = offset
        detector["read_noise_du"] = math.sqrt(max(read2, 0.0))
        choices["detector.offset_du"] = {"how": "median measured offset", "from": [m.source for m in complete]}
        choices["detector.read_noise_du"] = {"how": "median measured read noise without the 1/12 ADU^2 of rounding", "from": [m.source for m in complete]}
    else:
        intercept = _median([m.photons.variance_intercept_adu2 for m in measured])  # type: ignore[union-attr]
        offset = 0.0
        detector["offset_du"] = 0.0
        choices["detector.offset_du"] = {"how": "0: no FOV measured its offset (dark pixels at the ADC floor)", "from": []}
        if math.isfinite(intercept) and intercept > 1.0 / 12.0:
            detector["read_noise_du"] = math.sqrt(intercept - 1.0 / 12.0)
            choices["detector.read_noise_du"] = {"how": "sqrt(variance intercept - 1/12): with offset 0 the simulated line is the measured one", "from": names}
        else:
            warn(f"no FOV measured its offset and read noise, and the line's intercept ({intercept:.3g} ADU^2) gives none: the simulator keeps its read noise")
        warn(
            "no FOV measured its offset (dark pixels at the ADC floor): simulated with offset 0, clipped at 0 like the microscope, and "
            "the read noise from the line's intercept, which is uncertain by several ADU^2 (the line is fitted far above 0 ADU)"
        )

    # Photons at the high percentile of each FOV's LR mean, by its own line, matched onto the
    # simulated specimen's. Only that one point: how much of a real field is background depends
    # on the specimen, not on the microscope, and a two-point match (median and percentile) read
    # the difference as dark counts. Those then scale with the dwell like signal, and the HR
    # targets (10 µs, 20 times the video-rate dwell) came out with a background brighter than
    # the real targets' by half their range (tissue imaged, mitochondria simulated). A PMT's real
    # dark rate (below 1 kHz) gives under 0.001 photons in a 0.5 µs pixel: none are simulated.
    photons_high = _median([(m.high_adu - offset) / gain for m in measured])
    dwell = geometry["lr"]["dwell_us"]
    s_high = reference.signal_high
    if s_high <= 0.0:
        raise ValueError(f"the simulated {reference.kind} has no signal at the {reference.percentile:g}th percentile ({s_high:.3g})")
    rate = max(photons_high, 0.0) / (s_high * dwell)
    dark = 0.0
    how = "the FOVs' high-percentile photons onto the simulated specimen's; no dark counts"
    saturation = 2 ** geometry["detector"]["bits"] - 1
    for m in measured:
        if m.high_adu >= 0.98 * saturation:
            warn(f"{m.source}: its {m.percentile:g}th percentile ({m.high_adu:.0f} ADU) is at the ADC's top: the photons are a lower bound")
    detector["photons_per_us"] = rate
    detector["dark_counts_per_us"] = dark
    choices["detector.photons_per_us"] = {
        "how": how,
        "photons_at_percentile": photons_high,
        "percentile": reference.percentile,
        "specimen_signal_at_percentile": s_high,
        "dwell_us": dwell,
        "from": names,
    }
    choices["detector.dark_counts_per_us"] = {"how": "0: not separable from the specimen's background, and negligible for a PMT at µs dwells", "from": []}


def calibrate_simulator(
    stores: Sequence[RegisteredFov],
    *,
    base: Mapping[str, Any] | None = None,
    specimen: str = "mitochondria",
    percentile: float = 99.0,
) -> SimulatorCalibration:
    """Simulator overrides fitted to registered FOV stores, with their provenance.

    Parameters
    ----------
    stores : sequence of RegisteredFov
        Registered per-FOV stores (``results/register/.../{fov}.zarr``) opened with
        :func:`fastscan.stores.read_registered`, e.g.
        ``[read_registered(p) for p in paths]``.
    base : mapping, optional
        Overrides to start from; the calibrated keys are written over it.
    specimen : {"mitochondria", "tissue"}, optional
        Specimen kind the calibrated simulator will render.
    percentile : float, optional
        High percentile of the LR mean that sets the signal range.

    Returns
    -------
    SimulatorCalibration

    Raises
    ------
    TypeError
        For a path instead of an opened store (named).
    ValueError
        Without stores, or naming a store that lacks the pixel sizes, scale, scan model or
        arrays (see :func:`measure_store`).
    """
    if not stores:
        raise ValueError("calibrating the simulator needs at least one registered FOV store")
    return simulator_calibration([measure_store(s, percentile=percentile) for s in stores], base=base, specimen=specimen)


def calibrated_params(
    stores: Sequence[RegisteredFov],
    *,
    base: Mapping[str, Any] | None = None,
    specimen: str = "mitochondria",
    percentile: float = 99.0,
) -> dict[str, Any]:
    """Simulator parameter overrides fitted to the user's registered FOV stores.

    The ``params`` of :func:`calibrate_simulator` (which also returns the provenance; the
    stores are opened with :func:`fastscan.stores.read_registered`); pass them to
    :func:`fastscan.simulate.write_fov` or :func:`fastscan.simulate.resolve_params`.
    """
    return calibrate_simulator(stores, base=base, specimen=specimen, percentile=percentile).params


__all__ = [
    "LINEAR_FIELD_FRACTION",
    "MIN_RESOLVED_FWHM_PX",
    "REFERENCE_FIELDS",
    "FovMeasurement",
    "RegisteredFov",
    "ReferenceSpecimen",
    "SimulatorCalibration",
    "calibrate_simulator",
    "calibrated_params",
    "estimate_psf_fwhm_um",
    "measure_series",
    "measure_store",
    "reference_specimen",
    "simulator_calibration",
]
