"""Which scan made an LR series: whether a frame is resonant, and its field fraction.

Owns the fit of the resonant scan model to a registered pair (:func:`fit_scan_model`,
:class:`ScanFit`) and the test that decides between a resonant and a linear scan
(:func:`scan_model_evidence`). The model itself is :mod:`fastscan.scan`; the forward model and
the HR alignment each candidate is scored with are :mod:`fastscan.register.hr`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from fastscan.register.correlate import _prepare, _taper, normalised_cross_correlation
from fastscan.register.hr import _align_hr, _check_hr_lr_shapes, _edge_columns, forward_model
from fastscan.register.shifts import _shift_array

# One logger for the whole registration step (the name the CLI, the workflow logs and the tests use).
logger = logging.getLogger("fastscan.register")


#: Field fractions tried by :func:`fit_scan_model` (0 is a linear scan).
FIELD_FRACTIONS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(19))

# Largest field fraction fit_scan_model evaluates when it refines past the end of its grid (the
# simulator's limit: beyond it the outermost dwells reach the mirror's turning points).
_MAX_FIELD_FRACTION = 0.98

#: Extra Gaussian blurs (LR px) of the forward model that :func:`fit_scan_model` lets each
#: candidate choose from before candidates are compared. The LR acquisition is often softer than
#: the HR target predicts (a larger pinhole or detector bandwidth at video rate, a widefield
#: camera's binning of an already blurred image). Without this nuisance parameter the resampling
#: of a small resonant warp is the only way the model can blur, so a linear scan is "fitted" a
#: field fraction of 0.1-0.2 that is then undone on every frame.
BLUR_SIGMAS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)

#: Evidence a resonant scan model must have over the linear one to be accepted (see
#: :func:`scan_model_evidence`): a one-sided t statistic over interleaved sets of lines.
MIN_RESONANT_EVIDENCE = 3.0

# Interleaved sets of lines the evidence statistic is computed over.
_EVIDENCE_BANDS = 16


class ScanFit(NamedTuple):
    """Result of :func:`fit_scan_model`."""

    #: Resonant field fraction; 0 for a linear scan (also when a resonant fit was not significant).
    field_fraction: float
    #: ``[dy, dx]`` in HR pixels for that field fraction (see :func:`align_hr_to_lr`).
    hr_shift: np.ndarray
    #: Normalised cross-correlation of the forward model (with ``blur_sigma``) and the LR mean.
    ncc: float
    #: Extra blur of the LR acquisition beyond the block average, in LR px (from BLUR_SIGMAS).
    blur_sigma: float
    #: t statistic of the best resonant model against the linear one (NaN if none was compared).
    evidence: float
    #: The best resonant field fraction found, accepted or not.
    best_field_fraction: float


def _parabola_vertex(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Abscissa of the extremum of the parabola through three points (``None`` if degenerate)."""
    (x0, x1, x2), (y0, y1, y2) = x, y
    num = (x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)
    den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
    if den == 0 or not math.isfinite(num / den):
        return None
    return x1 - 0.5 * num / den


def _zero_mean_unit(a: np.ndarray) -> np.ndarray:
    a = a - a.mean()
    norm = math.sqrt(float(np.sum(a * a)))
    return a / norm if norm > 0 else a


def scan_model_evidence(resonant: np.ndarray, linear: np.ndarray, data: np.ndarray, *, bands: int = _EVIDENCE_BANDS) -> float:
    """How much better a resonant forward model explains an LR image than the linear one.

    The difference of the two normalised cross-correlations with ``data`` is a sum over pixels,
    ``sum((r - l) d)`` of the zero-mean, unit-norm images. Summed over each of ``bands``
    interleaved sets of lines (line ``i`` in set ``i mod bands``, so every set samples the whole
    field and the same structures) it gives one paired difference per set; the value returned is
    their one-sided t statistic (mean over standard error). The sets differ by their noise, not by
    their content, so the statistic asks whether the improvement is larger than the noise. A
    resonant scan distorts every line alike, and a real field fraction improves every set: on
    simulated single frames (field fraction 0.8) it is about 12. On linear scans (a real confocal
    frame, 3-300 photons per pixel, with and without a softer LR) the best resonant candidate
    stays below 1.3. With an even ``bands`` each set holds lines of one scan direction; both
    directions are distorted alike.

    Parameters
    ----------
    resonant, linear, data : (Y, X) ndarray
        The two forward models and the LR image, over the same region.
    bands : int, optional
        Number of interleaved sets of lines (at least 4 lines each).

    Returns
    -------
    float
        The t statistic (0 when the differences are all zero; inf when they are all equal and
        positive).
    """
    r, lin, d = (_zero_mean_unit(np.asarray(a, dtype=np.float64)) for a in (resonant, linear, data))
    per_line = np.sum((r - lin) * d, axis=1)
    bands = max(2, min(int(bands), per_line.size // 4))
    sums = np.array([per_line[k::bands].sum() for k in range(bands)])
    mean, sd = float(sums.mean()), float(sums.std(ddof=1))
    if sd == 0:
        return 0.0 if mean == 0 else math.copysign(math.inf, mean)
    return mean / (sd / math.sqrt(bands))


def fit_scan_model(
    hr: np.ndarray,
    lr_mean: np.ndarray,
    *,
    scale: int = 2,
    line_phase_px: float = 0.0,
    field_fractions: Sequence[float] = FIELD_FRACTIONS,
    upsample_factor: int = 20,
    blur_sigma: float = 0.0,
    blur_sigmas: Sequence[float] = BLUR_SIGMAS,
    smooth_sigma: float = 1.0,
    iterations: int = 3,
    refine: bool = True,
    min_evidence: float = MIN_RESONANT_EVIDENCE,
) -> ScanFit:
    """Fit the resonant field fraction and the HR shift by forward-modelling the HR target.

    A rigid shift estimated between a distorted LR mean and the undistorted HR target is biased
    (the edges of a resonant frame are stretched), so each candidate field fraction is
    forward-modelled, aligned, and scored by its normalised cross-correlation with the LR mean.

    Parameters
    ----------
    hr : (scale*Y, scale*X) ndarray
        HR target.
    lr_mean : (Y, X) ndarray
        Temporal mean of the drift-corrected LR series.
    scale, line_phase_px, upsample_factor, blur_sigma, smooth_sigma
        As for :func:`align_hr_to_lr`.
    field_fractions : sequence of float, optional
        Candidates of the coarse search, each in ``[0, 1)``.
    blur_sigmas : sequence of float, optional
        Extra Gaussian blurs (LR px) of the aligned forward model; each candidate is scored with
        the one that fits best, so that a softer LR acquisition is not explained by a resonant
        warp (see :data:`BLUR_SIGMAS`). Empty: ``blur_sigma`` only.
    iterations : int, optional
        Passes of :func:`align_hr_to_lr` per candidate; each candidate starts from the shift of
        the previous one, so later candidates usually converge in one or two.
    refine : bool, optional
        Refine the best candidate by successive parabolic interpolation of the correlation
        through it and its neighbours (down to 0.001), evaluating one step past the end of the
        grid when the best candidate is the last one. False keeps the best candidate.
    min_evidence : float, optional
        When 0 is a candidate, the best resonant model is accepted only if its
        :func:`scan_model_evidence` over the linear model exceeds this; otherwise the scan is
        taken as linear. A linear scan (a confocal or widefield frame) must not be "corrected"
        for a distortion it does not have.

    Returns
    -------
    ScanFit
        ``field_fraction``, ``hr_shift`` ([dy, dx] HR px), ``ncc`` (inner region, away from
        shifted-in borders), ``blur_sigma`` (the extra blur chosen), ``evidence`` and
        ``best_field_fraction`` (the best resonant candidate, accepted or not).
    """
    lr_mean = np.asarray(lr_mean)
    hr = np.asarray(hr)
    _check_hr_lr_shapes(hr, lr_mean, scale)
    grid, blurs = _check_candidates(field_fractions, blur_sigmas)
    taper = 0.25
    window = _taper(lr_mean.shape, taper)
    ref_f = sp_fft.fft2(_prepare(lr_mean, smooth_sigma=smooth_sigma, window=window))
    scores: dict[float, _Candidate] = {}

    def score(ff: float, start: np.ndarray) -> np.ndarray:
        scores[ff] = _score_candidate(
            hr,
            lr_mean,
            ref_f,
            window,
            ff,
            start,
            blurs=blurs,
            scale=scale,
            upsample_factor=upsample_factor,
            blur_sigma=blur_sigma,
            line_phase_px=line_phase_px,
            iterations=iterations,
            smooth_sigma=smooth_sigma,
            taper=taper,
        )
        return scores[ff].shift

    start = np.zeros(2)
    for ff in grid:
        # The shift changes little between neighbouring candidates: start from the last one.
        start = score(ff, start)
    if refine and len(grid) > 1:
        _refine(scores, score)
    ff, evidence, best_resonant = _choose(scores, lr_mean, min_evidence)
    best = scores[ff]
    return ScanFit(float(ff), best.shift, best.ncc, float(best.blur_sigma), float(evidence), float(best_resonant))


# --------------------------------------------------------------------------------------------
# the steps of fit_scan_model


class _Candidate(NamedTuple):
    """One field fraction as scored by :func:`fit_scan_model`."""

    #: ``[dy, dx]`` in HR px.
    shift: np.ndarray
    #: NCC of the aligned forward model (with ``blur_sigma``) and the LR mean over ``inner``.
    ncc: float
    #: The extra blur that fitted best, LR px.
    blur_sigma: float
    #: The aligned forward model with that blur.
    model: np.ndarray
    #: The region away from shifted-in borders.
    inner: tuple[slice, slice]


def _check_candidates(field_fractions: Sequence[float], blur_sigmas: Sequence[float]) -> tuple[list[float], list[float]]:
    """The sorted, distinct field fractions and extra blurs :func:`fit_scan_model` tries, checked."""
    grid = sorted({round(float(f), 6) for f in field_fractions})
    if not grid:
        raise ValueError("field_fractions must not be empty")
    if grid[0] < 0 or grid[-1] >= 1:
        raise ValueError(f"field fractions must lie in [0, 1), got {grid[0]} .. {grid[-1]}")
    blurs = sorted({float(b) for b in blur_sigmas}) or [0.0]
    if blurs[0] < 0:
        raise ValueError(f"blur_sigmas must be 0 or more, got {blurs}")
    return grid, blurs


def _score_candidate(
    hr: np.ndarray,
    lr_mean: np.ndarray,
    ref_f: np.ndarray,
    window: np.ndarray | None,
    ff: float,
    start: np.ndarray,
    *,
    blurs: Sequence[float],
    scale: int,
    upsample_factor: int,
    blur_sigma: float,
    line_phase_px: float,
    iterations: int,
    smooth_sigma: float,
    taper: float,
) -> _Candidate:
    """Align the HR target for field fraction ``ff`` from ``start`` and score its forward model with the best extra blur."""
    ny, nx = lr_mean.shape
    shift, model = _align_hr(
        hr,
        ref_f,
        window,
        start,
        scale=scale,
        upsample_factor=upsample_factor,
        blur_sigma=blur_sigma,
        line_phase_px=line_phase_px,
        field_fraction=ff,
        iterations=iterations,
        smooth_sigma=smooth_sigma,
        taper=taper,
        normalization=None,
    )
    if model is None:
        model = forward_model(
            _shift_array(hr, shift),
            scale=scale,
            blur_sigma=blur_sigma,
            line_phase_px=line_phase_px,
            field_fraction=ff,
        )
    my = min(int(math.ceil(abs(shift[0]) / scale)) + 1, ny // 4)
    mx = min(_edge_columns(shift[1] / scale, nx, ff) + 1, nx // 4)
    inner = (slice(my, ny - my), slice(mx, nx - mx))
    best = None
    for sigma in blurs:
        blurred = ndimage.gaussian_filter(model, sigma, mode="reflect") if sigma > 0 else model
        ncc = normalised_cross_correlation(blurred[inner], lr_mean[inner])
        if best is None or ncc > best[1]:
            best = (sigma, float(ncc), blurred)
    logger.debug("field fraction %.3f: shift %s, ncc %.5f, blur %.1f", ff, shift, best[1], best[0])
    return _Candidate(shift, best[1], best[0], best[2], inner)


def _refine(scores: dict[float, _Candidate], score: Callable[[float, np.ndarray], np.ndarray], passes: int = 4) -> None:
    """Score more field fractions around the best one (``score`` adds each to ``scores``).

    Successive parabolic interpolation of the correlation through the best candidate and its
    neighbours, down to 0.001; one step past the end of the grid when the best is the last one.
    """
    for _ in range(passes):
        fs = sorted(scores)
        k = max(range(len(fs)), key=lambda i: scores[fs[i]].ncc)
        best = fs[k]
        if k in (0, len(fs) - 1):
            # The optimum lies at or past the end of the grid: evaluate one step further.
            step = fs[1] - fs[0] if k == 0 else fs[-1] - fs[-2]
            beyond = round(best - step if k == 0 else best + step, 3)
            if not 0.0 <= beyond <= _MAX_FIELD_FRACTION or beyond in scores or best == 0.0:
                break
            score(beyond, scores[best].shift)
            continue
        three = (fs[k - 1], best, fs[k + 1])
        vertex = _parabola_vertex(three, [scores[f].ncc for f in three])
        if vertex is None:
            break
        vertex = round(min(max(vertex, three[0]), three[2]), 3)
        if min(abs(vertex - f) for f in fs) < 1e-3:
            break
        score(vertex, scores[best].shift)


def _choose(scores: Mapping[float, _Candidate], lr_mean: np.ndarray, min_evidence: float) -> tuple[float, float, float]:
    """The field fraction to use, the evidence of the best resonant one over a linear scan, and that one.

    The best-correlating candidate wins, unless it is resonant and its
    :func:`scan_model_evidence` over the linear model (when 0 was scored) does not exceed
    ``min_evidence``: then the scan is taken as linear.
    """
    resonant = [f for f in scores if f > 0]
    best_resonant = max(resonant, key=lambda f: scores[f].ncc) if resonant else 0.0
    ff = max(scores, key=lambda f: scores[f].ncc)
    evidence = math.nan
    if resonant and 0.0 in scores:
        # Both models on the region valid for both.
        (_, _, _, m1, (y1, x1)), (_, _, _, m0, (y0, x0)) = scores[best_resonant], scores[0.0]
        ys = slice(max(y0.start, y1.start), min(y0.stop, y1.stop))
        xs = slice(max(x0.start, x1.start), min(x0.stop, x1.stop))
        evidence = scan_model_evidence(m1[ys, xs], m0[ys, xs], lr_mean[ys, xs])
        if ff > 0 and not evidence > min_evidence:
            logger.info(
                "resonant field fraction %.3f rejected: its evidence over a linear scan is t = %.2f (needs > %.1f); the scan is taken as linear",
                ff,
                evidence,
                min_evidence,
            )
            ff = 0.0
    return ff, evidence, best_resonant
