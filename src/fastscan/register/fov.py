"""The per-FOV driver: register one canonical FOV store and write the registered store.

Owns the order of the registration steps (line phase, drift, scan model, HR shift, QC score,
photon calibration) and what goes into the registered store; each step's method lives in its own
module of :mod:`fastscan.register`, the store's layout and attributes in :mod:`fastscan.stores`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import zarr
from scipy import ndimage

from fastscan.jsonable import jsonable
from fastscan.photons import PhotonCalibration, calibrate_series, curve_to_text
from fastscan.register.arrays import _as_frames
from fastscan.register.correlate import normalised_cross_correlation
from fastscan.register.drift import _rms, estimate_drift
from fastscan.register.hr import _edge_columns, align_hr_to_lr, forward_model
from fastscan.register.line_phase import estimate_line_phase
from fastscan.register.qc import write_qc
from fastscan.register.scan_fit import ScanFit, fit_scan_model
from fastscan.register.shifts import apply_shifts
from fastscan.scan import resonant_gain
from fastscan.stores import Registration, RegistrationQC, ScanModel, write_registered

# One logger for the whole registration step (the name the CLI, the workflow logs and the tests use).
logger = logging.getLogger("fastscan.register")


class _MovedMean:
    """The registered mean moved back to where each raw frame shows the specimen, on demand.

    It is the noise-free signal of every raw frame as far as registration knows it: the photon
    calibration subtracts its frame-to-frame changes (a drifting edge) from the raw frames,
    whose noise, unlike that of the interpolated registered frames, is untouched. Frames are
    computed when sliced, a few at a time, so the series is never held twice.
    """

    def __init__(self, mean: np.ndarray, drift: np.ndarray, field_fraction: float) -> None:
        self._mean = np.asarray(mean, dtype=np.float32)
        self._drift = np.asarray(drift, dtype=np.float64)
        self._field_fraction = float(field_fraction)
        self.shape = (self._drift.shape[0], *self._mean.shape)

    def __getitem__(self, index: Any) -> np.ndarray:
        frames = np.atleast_1d(np.arange(self.shape[0])[index])
        stack = np.broadcast_to(self._mean, (frames.size, *self._mean.shape))
        return apply_shifts(stack, -self._drift[frames], field_fraction=self._field_fraction)


def _photon_calibration(
    lr: np.ndarray,
    lr_mean: np.ndarray,
    drift: np.ndarray,
    field_fraction: float,
    significant_bits: Any,
) -> PhotonCalibration:
    """Photon calibration of the raw series (:func:`fastscan.photons.calibrate_series`).

    The raw frames are measured, not the registered ones: on simulated series the Fourier
    shifts and the resonant column resampling of registration lowered the fitted gain by 2-22 %
    (they average neighbouring pixels' noise), while the raw frames with the drift's signal
    changes removed (:class:`_MovedMean`) stayed within 1.5 % (5 % at five times the
    simulator's drift, where the raw frames alone reached +26 %; see :mod:`fastscan.photons`).
    """
    bits = int(significant_bits) if significant_bits else None
    saturation = float(2**bits - 1) if bits and np.issubdtype(lr.dtype, np.integer) else None
    signal = _MovedMean(lr_mean, drift, field_fraction) if lr.shape[0] >= 2 else None
    return calibrate_series(lr, saturation=saturation, signal=signal)


def register_fov(
    src: str | Path,
    out: str | Path,
    *,
    min_ncc: float = 0.3,
    upsample_factor: int = 20,
    reference: Literal["median", "mean"] = "median",
    iterations: int = 2,
    smooth_sigma: float = 1.0,
    blur_sigma: float = 0.0,
    max_frames: int | None = None,
    qc: str | Path | None = None,
) -> dict[str, Any]:
    """Register one canonical FOV store and write the registered store.

    Parameters
    ----------
    src : str or Path
        Canonical per-FOV Zarr store (``results/ingest/...``, see ``docs/architecture.md``).
    out : str or Path
        Registered per-FOV Zarr store to write. Written to ``<out>.tmp-<pid>`` and renamed into
        place at the end; an existing store at ``out`` is replaced.
    min_ncc : float, optional
        QC threshold on the normalised cross-correlation between the forward-modelled aligned HR
        and the mean of the registered LR frames. FOVs below it are written with
        ``passed=False`` and a warning; downstream steps exclude them.
    upsample_factor : int, optional
        Sub-pixel resolution of all shift estimates.
    reference : {"median", "mean"}, optional
        Temporal reference for :func:`estimate_drift`.
    iterations : int, optional
        Passes of drift estimation: a first rigid one, on which the scan model is fitted, then
        ``iterations - 1`` of :func:`estimate_drift` with the fitted field fraction.
    smooth_sigma : float, optional
        Gaussian pre-smoothing (LR px) for the drift and HR shift estimates.
    blur_sigma : float, optional
        Extra blur of :func:`forward_model`, in LR px.
    max_frames : int, optional
        Register and store only the series' first ``max_frames`` frames (all by default). The
        registered store holds every frame it registers as float32, which for long series is
        most of a project's disk (W2S: 400 shots of 512 px, 420 MB per FOV and channel) while
        training reads at most ``dataset.max_frames`` of them and evaluation ``restore.frames``.
    qc : str or Path, optional
        If given, the returned QC row is also written there with :func:`write_qc`.

    Returns
    -------
    qc_row : dict
        ``sample, session, fov, frames, ncc, line_phase_px, hr_shift_dy, hr_shift_dx,
        drift_rms_px, residual_drift_px, passed``, the photon calibration
        ``gain_adu_per_photon, offset_adu, read_noise_adu, photons_at_median`` (NaN where not
        measurable, e.g. for one frame) and its binned curve ``photon_curve`` (see
        :data:`QC_COLUMNS`).

    Notes
    -----
    The registered store (:func:`fastscan.stores.write_registered`, whose :class:`~fastscan.stores.Registration`
    types the attribute) holds ``lr`` (float32, drift-corrected, one frame per chunk; the line
    phase is kept because the network learns to undo it), ``hr`` (float32, moved onto the LR
    grid) and the attribute ``fastscan``: the ingest attributes plus ``registration`` with
    ``drift_px`` (T x 2, LR px), ``hr_shift_px`` ([dy, dx], HR px), ``line_phase_px`` (LR px),
    ``field_fraction``, ``ncc``, ``residual_drift_px`` (RMS drift re-estimated on the corrected
    frames, LR px), ``passed``, ``min_ncc`` and ``photons``: the photon calibration of the raw
    series (:func:`fastscan.photons.calibrate_series`, its
    :meth:`~fastscan.photons.PhotonCalibration.summary` with ``photons_at_median``, the
    photons per pixel at the median of the registered mean; None for what was not measurable,
    with ``reason``).

    Steps: the line phase of the raw series; a rigid drift pass and the scan model
    (:func:`fit_scan_model`) on the mean of the frames it aligns; the drift with that model
    (:func:`estimate_drift` with ``field_fraction``), applied by :func:`apply_shifts` with the
    same model; the HR shift refined on the mean of the registered frames. For a resonant scan
    the x drift is therefore a displacement of the specimen in nominal (linear-grid) LR pixels,
    like ``hr_shift_px`` and the simulator's ``drift_px``, and each column of a frame is moved
    by its own display shift, so the ends of the lines are aligned as well as their centre; for
    a linear scan (field fraction 0) nominal and display pixels are the same.

    A series of one frame (one fast frame per HR target) has nothing to align that frame to:
    the drift passes are skipped, ``drift_px`` is ``[[0, 0]]`` and ``residual_drift_px`` 0, and
    the line phase, the scan model and the HR shift are estimated from the frame itself.
    """
    src, out = Path(src), Path(out)
    attrs, lr, hr, scale = _read_fov(src, max_frames=max_frames)
    _check_free_space(out, lr, hr)
    ident = {k: str(attrs.get(k, "")) for k in ("sample", "session", "fov")}
    label = "/".join(ident.values())
    drift_options = {
        "reference": reference,
        "upsample_factor": upsample_factor,
        "smooth_sigma": smooth_sigma,
    }

    reg = _register_series(
        lr,
        hr,
        scale,
        label=label,
        drift_options=drift_options,
        iterations=iterations,
        upsample_factor=upsample_factor,
        smooth_sigma=smooth_sigma,
        blur_sigma=blur_sigma,
    )
    ncc, lr_per_hr, lr_at_zero_hr = _hr_match(reg, scale=scale, blur_sigma=blur_sigma)
    residual = _residual_drift(reg, drift_options)
    passed = bool(ncc >= min_ncc)
    photons = _photon_calibration(
        lr,
        reg.lr_mean,
        reg.drift,
        reg.field_fraction,
        (attrs.get("source") or {}).get("lr", {}).get("significant_bits"),
    )
    median_adu = float(np.median(reg.lr_mean))
    photons_at_median = photons.photons(median_adu)

    registration = _registration(
        reg, ncc=ncc, relation=(lr_per_hr, lr_at_zero_hr), residual=residual, passed=passed, min_ncc=min_ncc, photons=photons.summary(median_adu)
    )
    write_registered(out, lr=reg.registered, hr=reg.hr_aligned, attrs=attrs, registration=registration)

    row = _qc_row(ident, reg, ncc=ncc, lr_per_hr=lr_per_hr, residual=residual, passed=passed, photons=photons, photons_at_median=photons_at_median)
    _log_registered(label, row, photons, median_adu=median_adu, min_ncc=min_ncc)
    if qc is not None:
        write_qc(row, qc)
    return row


# --------------------------------------------------------------------------------------------
# the steps of register_fov, in the order it calls them


class _Registered(NamedTuple):
    """What registration found for one FOV and the data it moved (see :func:`register_fov`)."""

    #: Line phase of the raw series, LR px (kept in the registered frames).
    line_phase: float
    #: The scan model, fitted on the mean of the rigidly pre-registered frames.
    fit: ScanFit
    #: ``[dy, dx]`` per frame, nominal LR px (``(T, 2)``).
    drift: np.ndarray
    #: The drift-corrected frames, float32 ``(T, Y, X)``.
    registered: np.ndarray
    #: Their temporal mean, float64.
    lr_mean: np.ndarray
    #: ``[dy, dx]`` in HR px that moves the HR target onto the LR grid.
    hr_shift: np.ndarray
    #: The HR target moved by it, float32.
    hr_aligned: np.ndarray

    @property
    def field_fraction(self) -> float:
        """Resonant field fraction the frames were registered with (0: a linear scan)."""
        return self.fit.field_fraction

    @property
    def single(self) -> bool:
        """One frame: nothing to align it with, so no drift is measured."""
        return self.registered.shape[0] == 1


def _read_fov(src: Path, *, max_frames: int | None = None) -> tuple[dict[str, Any], np.ndarray, np.ndarray, int]:
    """The ``fastscan`` attributes, LR series (its first ``max_frames`` frames), HR image and
    scale of a canonical FOV store, checked."""
    group = zarr.open_group(str(src), mode="r")
    attrs = dict(group.attrs.get("fastscan", {}))
    if attrs.get("kind") != "fov":
        raise ValueError(
            f"{src} is not a canonical per-FOV store (attribute fastscan.kind is {attrs.get('kind')!r}, expected 'fov'); write it with fastscan.io.ingest_fov"
        )
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < 1):
        raise ValueError(f"register.max_frames must be a whole number of frames >= 1 or null, got {max_frames!r}")
    stored = group["lr"]
    # A 2-D lr is one frame: only a (T, Y, X) series is cut. Only the frames kept are read, so
    # a long series need not fit in memory whole.
    cut = max_frames is not None and stored.ndim == 3 and stored.shape[0] > max_frames
    if cut:
        logger.info("%s: registering the first %d of %d frames (register.max_frames)", src, max_frames, stored.shape[0])
    lr = _as_frames(np.asarray(stored[: int(max_frames)] if cut else stored[...]), name=f"{src}/lr")
    if lr.shape[0] == 0:
        # One frame is enough (see Notes); none leaves nothing to register, and the estimates
        # below would fail on an empty mean with a message that names neither store nor cause.
        raise ValueError(f"{src}: lr holds no frame (shape {lr.shape}); re-run ingestion")
    hr = np.asarray(group["hr"][...])
    scale = int(attrs.get("scale", 2))
    if hr.shape != (scale * lr.shape[1], scale * lr.shape[2]):
        raise ValueError(f"{src}: hr shape {hr.shape} is not scale={scale} times the LR frame shape {lr.shape[1:]}; re-run ingestion")
    return attrs, lr, hr, scale


def _check_free_space(out: Path, lr: np.ndarray, hr: np.ndarray) -> None:
    """Refuse, before registering, a store larger than the free space where it goes: a full disk
    fails the write late and breaks every other job writing there. The size is the uncompressed
    float32 one, an upper bound of the compressed store."""
    from fastscan.atomic import free_space

    need = 4 * (lr.size + hr.size)
    where, free = free_space(out)
    if need > free:
        raise OSError(
            f"{out}: the registered store would hold {lr.shape[0]} frames of {lr.shape[1]}x{lr.shape[2]} px, about {need / 1e9:.2f} GB, "
            f"and only {free / 1e9:.2f} GB are free on {where}: set register.max_frames to register fewer frames per FOV, or free space"
        )


def _register_series(
    lr: np.ndarray,
    hr: np.ndarray,
    scale: int,
    *,
    label: str,
    drift_options: dict[str, Any],
    iterations: int,
    upsample_factor: int,
    smooth_sigma: float,
    blur_sigma: float,
) -> _Registered:
    """Line phase, scan model, drift and HR shift of one FOV, and the frames and target moved by them."""
    line_phase = estimate_line_phase(lr, upsample_factor=upsample_factor)
    rigid, fit = _fit_scan_on_rigid_mean(
        lr,
        hr,
        scale,
        line_phase,
        label=label,
        drift_options=drift_options,
        upsample_factor=upsample_factor,
        smooth_sigma=smooth_sigma,
        blur_sigma=blur_sigma,
    )
    field_fraction = fit.field_fraction
    drift = _model_drift(lr, rigid, field_fraction, iterations=iterations, drift_options=drift_options)
    registered = apply_shifts(lr, drift, field_fraction=field_fraction).astype(np.float32, copy=False)
    lr_mean = registered.mean(axis=0, dtype=np.float64)
    # The registered frames sit where the drift reference was, a little away from the rigid
    # pre-registration that the shift was fitted on.
    hr_shift = align_hr_to_lr(
        hr,
        lr_mean,
        scale=scale,
        upsample_factor=upsample_factor,
        blur_sigma=blur_sigma,
        line_phase_px=line_phase,
        field_fraction=field_fraction,
        smooth_sigma=smooth_sigma,
        iterations=3,
        initial=fit.hr_shift,
    )
    hr_aligned = apply_shifts(hr[None], hr_shift[None])[0].astype(np.float32, copy=False)
    return _Registered(line_phase, fit, drift, registered, lr_mean, hr_shift, hr_aligned)


def _fit_scan_on_rigid_mean(
    lr: np.ndarray,
    hr: np.ndarray,
    scale: int,
    line_phase: float,
    *,
    label: str,
    drift_options: dict[str, Any],
    upsample_factor: int,
    smooth_sigma: float,
    blur_sigma: float,
) -> tuple[np.ndarray, ScanFit]:
    """A rigid drift pass and the scan model fitted on the mean of the frames it aligns."""
    # One frame (a paired dataset, or a lab saving one fast frame per FOV) has nothing to be
    # aligned with: its drift is zero by definition, not measured. Line phase, scan model and
    # HR alignment come from that frame alone, as they come from the mean of a series.
    # A first, rigid pass gives a sharp enough mean to fit the scan model on; the remaining
    # passes measure the drift with that model, in nominal pixels (see estimate_drift).
    if lr.shape[0] == 1:
        rigid = np.zeros((1, 2), dtype=np.float64)
        lr_mean = lr[0].astype(np.float64)
    else:
        rigid = estimate_drift(lr, iterations=1, **drift_options)
        lr_mean = apply_shifts(lr, rigid).mean(axis=0, dtype=np.float64)
    fit = fit_scan_model(
        hr,
        lr_mean,
        scale=scale,
        line_phase_px=line_phase,
        upsample_factor=upsample_factor,
        blur_sigma=blur_sigma,
        smooth_sigma=smooth_sigma,
    )
    if fit.best_field_fraction > 0 and fit.field_fraction == 0:
        logger.info(
            "%s: resonant field fraction %.3f not significant over a linear scan (t = %.2f); registered as a linear scan",
            label,
            fit.best_field_fraction,
            fit.evidence,
        )
    return rigid, fit


def _model_drift(lr: np.ndarray, rigid: np.ndarray, field_fraction: float, *, iterations: int, drift_options: dict[str, Any]) -> np.ndarray:
    """The drift with the fitted scan model, in nominal pixels, starting from the rigid pass."""
    gain = resonant_gain(lr.shape[2], field_fraction, 0.25)
    drift = rigid * [1.0, gain]
    if iterations > 1 and lr.shape[0] != 1:
        drift = estimate_drift(
            lr,
            iterations=iterations - 1,
            field_fraction=field_fraction,
            initial=drift,
            **drift_options,
        )
    return drift


def _hr_match(reg: _Registered, *, scale: int, blur_sigma: float) -> tuple[float, float, float]:
    """How well the aligned HR explains the registered mean, inside the borders: the QC score
    (their NCC) and the intensity relation's slope and intercept (:func:`_intensity_relation`)."""
    ny, nx = reg.lr_mean.shape
    drift, hr_shift = reg.drift, reg.hr_shift
    # Borders filled by the shifts carry reflected, not measured, content; the ends of resonant
    # lines are compressed, so the same shift fills more display columns there.
    my = math.ceil(np.abs(drift[:, 0]).max(initial=0) + abs(hr_shift[0]) / scale) + 1
    shift_x = np.abs(drift[:, 1]).max(initial=0) + abs(hr_shift[1]) / scale
    mx = _edge_columns(shift_x, nx, reg.field_fraction) + 1
    my, mx = min(my, ny // 4), min(mx, nx // 4)
    inner = (slice(my, ny - my), slice(mx, nx - mx))
    model = forward_model(
        reg.hr_aligned,
        scale=scale,
        blur_sigma=blur_sigma,
        line_phase_px=reg.line_phase,
        field_fraction=reg.field_fraction,
    )
    if reg.fit.blur_sigma > 0:
        # The LR acquisition's extra softness, as fitted with the scan model.
        model = ndimage.gaussian_filter(model, reg.fit.blur_sigma, mode="reflect")
    return (normalised_cross_correlation(model[inner], reg.lr_mean[inner]), *_intensity_relation(model[inner], reg.lr_mean[inner]))


def _intensity_relation(model: np.ndarray, lr_mean: np.ndarray) -> tuple[float, float]:
    """``(lr_per_hr, lr_at_zero_hr)``: the least-squares line of the registered mean against the
    forward-modelled HR target, its slope (LR intensity per unit of HR intensity) and its value at
    HR 0 (NaN both for a flat target).

    The dataset's percentile normalisation maps all training FOVs' HR through one range, so it
    assumes this slope is the same in every FOV. It is where the HR target is the average of
    frames taken with the same settings. It is not where the detector gain, laser power or dwell
    of the slow scan changed between FOVs, or where the target is a reconstruction with its own
    scale (SIM): the network is then asked for several brightnesses from the same input.
    The slope of the noisy mean against the averaged target is unbiased by the frames' noise,
    which sits in the regressand; the offset (dark level, background) is left to the intercept.
    ``dataset.match_hr_intensity`` maps each HR target through its own line into LR units.
    """
    m = model.astype(np.float64).ravel()
    y = lr_mean.astype(np.float64).ravel()
    dm = m - m.mean()
    var = float(np.dot(dm, dm))
    if not var > 0:
        return math.nan, math.nan
    slope = float(np.dot(dm, y - y.mean()) / var)
    return slope, float(y.mean() - slope * m.mean())


def _residual_drift(reg: _Registered, drift_options: dict[str, Any]) -> float:
    """RMS drift re-estimated on the registered frames, LR px."""
    # A single frame cannot be misaligned with itself; 0.0 keeps the QC table complete.
    if reg.single:
        return 0.0
    return _rms(
        estimate_drift(
            reg.registered,
            iterations=1,
            field_fraction=reg.field_fraction,
            **drift_options,
        )
    )


def _registration(
    reg: _Registered, *, ncc: float, relation: tuple[float, float], residual: float, passed: bool, min_ncc: float, photons: dict[str, Any]
) -> Registration:
    """The ``registration`` attribute of the registered store (see :func:`register_fov`, Notes)."""
    fit = reg.fit
    return Registration(
        drift_px=reg.drift.tolist(),
        hr_shift_px=reg.hr_shift.tolist(),
        scan=ScanModel(
            line_phase_px=float(reg.line_phase),
            field_fraction=float(reg.field_fraction),
            resonant_field_fraction=float(fit.best_field_fraction),
            # NaN when the fit did not compare a resonant candidate with the linear model.
            resonant_evidence=float(fit.evidence) if math.isfinite(fit.evidence) else None,
            blur_sigma_px=float(fit.blur_sigma),
        ),
        qc=RegistrationQC(passed=passed, ncc=float(ncc), min_ncc=float(min_ncc), lr_per_hr=jsonable(relation[0]), lr_at_zero_hr=jsonable(relation[1])),
        residual_drift_px=float(residual),
        photons=photons,
    )


def _qc_row(
    ident: dict[str, str],
    reg: _Registered,
    *,
    ncc: float,
    lr_per_hr: float,
    residual: float,
    passed: bool,
    photons: PhotonCalibration,
    photons_at_median: float,
) -> dict[str, Any]:
    """The FOV's row of the registration QC table (:data:`~fastscan.register.qc.QC_COLUMNS`)."""
    return {
        **ident,
        "frames": int(reg.registered.shape[0]),
        "ncc": float(ncc),
        "line_phase_px": float(reg.line_phase),
        "field_fraction": float(reg.field_fraction),
        "hr_shift_dy": float(reg.hr_shift[0]),
        "hr_shift_dx": float(reg.hr_shift[1]),
        "drift_rms_px": _rms(reg.drift),
        "residual_drift_px": float(residual),
        "passed": passed,
        "lr_per_hr": float(lr_per_hr),
        "gain_adu_per_photon": photons.gain_adu_per_photon,
        "offset_adu": photons.offset_adu,
        "read_noise_adu": photons.read_noise_adu,
        "photons_at_median": photons_at_median,
        "photon_curve": curve_to_text(photons),
    }


def _log_registered(label: str, row: Mapping[str, Any], photons: PhotonCalibration, *, median_adu: float, min_ncc: float) -> None:
    """Log the photon calibration and the registration of one FOV; warn when it failed QC."""
    if photons.measurable:
        logger.info(
            "photon calibration of %s: %.3g ADU per photon, offset %.1f ADU, read noise %.2f ADU, %.2f photons per pixel at the median signal %.1f ADU%s",
            label,
            photons.gain_adu_per_photon,
            photons.offset_adu,
            photons.read_noise_adu,
            row["photons_at_median"],
            median_adu,
            f" ({photons.reason})" if photons.reason else "",
        )
    else:
        logger.info("no photon calibration of %s: %s", label, photons.reason)
    logger.info(
        "registered %s: T=%d line phase %.2f px, drift rms %.2f px (residual %.3f), hr shift (%.2f, %.2f) px, ncc %.3f",
        label,
        row["frames"],
        row["line_phase_px"],
        row["drift_rms_px"],
        row["residual_drift_px"],
        row["hr_shift_dy"],
        row["hr_shift_dx"],
        row["ncc"],
    )
    if not row["passed"]:
        logger.warning(
            "registration QC failed for sample=%s session=%s fov=%s: ncc %.3f < min_ncc %.3f; the FOV is written with passed=False and excluded downstream",
            row["sample"],
            row["session"],
            row["fov"],
            row["ncc"],
            min_ncc,
        )
