"""Registration of video-rate LR series and of their HR targets.

A video-rate FOV arrives as a noisy LR series ``(T, Y, X)`` acquired with a bidirectional
resonant scan and one slow, high-resolution HR image ``(scale*Y, scale*X)`` of the same field.
Before the pair can be tiled for training this module

1. measures the line phase of the bidirectional scan (odd rows against even rows); the distortion
   is kept in the training input because the network learns to undo it, so the value is stored for
   information and used by the forward model and the classical baselines;
2. estimates and removes per-frame drift against a robust temporal reference;
3. moves the HR target onto the grid of the drift-corrected LR series through a forward model of
   the LR acquisition (:func:`forward_model`, with the resonant field fraction fitted by
   :func:`fit_scan_model`), and scores the match with a normalised cross-correlation that
   decides whether the FOV enters the training set.

For a resonant scan, drift is measured and corrected as a displacement of the specimen on the
nominal (linear) grid, each display column moving by its own amount (see :func:`estimate_drift`
and :func:`apply_shifts` with ``field_fraction``).

Shift conventions follow :func:`skimage.registration.phase_cross_correlation`: an estimated shift
is the translation that, applied to the moving image with :func:`apply_shifts` (or
:func:`scipy.ndimage.shift`), registers it with the reference. Shifts are ``[dy, dx]`` in pixels

The package is split by concept, lower layers first (no module imports a later one):

- :mod:`~fastscan.register.arrays`: working precision and input checks shared by all steps;
- :mod:`~fastscan.register.shifts`: applying sub-pixel translations (Fourier or spline, rigid
  or along resonant lines), :func:`apply_shifts`;
- :mod:`~fastscan.register.correlate`: measuring them (taper, phase cross-correlation,
  upsampled peak) and :func:`normalised_cross_correlation`;
- :mod:`~fastscan.register.line_phase`: :func:`estimate_line_phase`, :func:`correct_line_phase`;
- :mod:`~fastscan.register.drift`: :func:`estimate_drift`, drift between frames;
- :mod:`~fastscan.register.hr`: :func:`forward_model` and :func:`align_hr_to_lr`, the HR
  target onto the LR grid;
- :mod:`~fastscan.register.scan_fit`: :func:`fit_scan_model`, :class:`ScanFit`,
  :func:`scan_model_evidence`: whether a frame is resonant, and its field fraction;
- :mod:`~fastscan.register.qc`: :data:`QC_COLUMNS`, :func:`write_qc`, :func:`read_qc`,
  :func:`gather_qc`;
- :mod:`~fastscan.register.fov`: :func:`register_fov`, the per-FOV driver.

The resonant scan model itself is :mod:`fastscan.scan`. The names below are re-exported here,
where the CLI, the workflow scripts and the tests look them up.
"""

from fastscan.register.correlate import normalised_cross_correlation
from fastscan.register.drift import estimate_drift
from fastscan.register.fov import register_fov
from fastscan.register.hr import align_hr_to_lr, forward_model
from fastscan.register.line_phase import correct_line_phase, estimate_line_phase
from fastscan.register.qc import QC_COLUMNS, gather_qc, read_qc, write_qc
from fastscan.register.scan_fit import BLUR_SIGMAS, FIELD_FRACTIONS, MIN_RESONANT_EVIDENCE, ScanFit, fit_scan_model, scan_model_evidence
from fastscan.register.shifts import apply_shifts

__all__ = [
    "BLUR_SIGMAS",
    "FIELD_FRACTIONS",
    "MIN_RESONANT_EVIDENCE",
    "QC_COLUMNS",
    "ScanFit",
    "align_hr_to_lr",
    "apply_shifts",
    "correct_line_phase",
    "estimate_drift",
    "estimate_line_phase",
    "fit_scan_model",
    "forward_model",
    "gather_qc",
    "normalised_cross_correlation",
    "read_qc",
    "register_fov",
    "scan_model_evidence",
    "write_qc",
]
