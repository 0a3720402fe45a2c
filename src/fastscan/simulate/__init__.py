"""Acquisition simulator: the physics of the two acquisition modes of a point-scanning microscope.

A synthetic specimen (a fluorophore density in ``[0, 1]`` defined in micrometres) is imaged in
two ways:

* **HR** (the training target): a slow unidirectional galvanometric raster, long pixel dwell, a
  few frames averaged.
* **LR** (the video-rate mode): a bidirectional resonant scan with a sinusoidal fast axis, a
  sub-microsecond dwell (a handful of photons per pixel), a line phase between forward and
  backward lines, and a slow drift of the specimen between frames.

Both share one detector model (Poisson photoelectrons, dark counts, PMT gain, read noise, offset,
12-bit quantisation) and write the files a microscope would: OME-TIFFs with pixel sizes and a
JSON file with the geometry that produced them (the ground truth for registration tests).

Coordinates
-----------
Positions are in micrometres inside the field of view (FOV), ``(0, 0)`` at the top-left corner of
the field. Pixel ``k`` of a linear grid with pitch ``p`` covers ``[k p, (k + 1) p)`` and has its
centre at ``(k + 0.5) p``, so HR pixels ``2j`` and ``2j + 1`` tile LR pixel ``j`` when the HR
pitch is half the LR pitch. A specimen array passed to the acquisition functions is rendered at
``specimen_pixel_size_um`` and is centred on the field; a specimen larger than the field gives the
margin that drift and offsets need.

The resonant axis
-----------------
LR frames are sampled with the scan model of :mod:`fastscan.scan` (the mirror's sinusoidal
velocity, the field fraction, display and nominal columns, the line phase and its sign): display
column ``j`` of an ``n``-pixel line shows nominal column
:func:`fastscan.scan.nominal_columns` ``[j]``, and the odd (backward) rows are sampled at the
phases of display column ``j - line_phase_px``, so their content appears displaced by
``+line_phase_px`` columns. :func:`fastscan.scan.unwarp_resonant` resamples rows back onto the
linear grid.

Each pixel integrates the specimen along the path the beam travels during its dwell, between the
phases ``φ_j ± Δφ / 2`` (:func:`fastscan.scan.dwell_phases`). The integral is exact for the
piecewise-constant specimen raster (it is taken from a cumulative sum along x), equivalent to
sub-sampling the path infinitely finely; the beam speed changes by less than 3 % within one dwell
for ``n = 256`` and ``f = 0.8``, so weighting by distance instead of by time makes no visible
difference.

Drift and offsets
-----------------
``truth["drift_px"][t] = [dy, dx]`` is the displacement of the specimen in frame ``t`` relative to
frame 0, in nominal LR pixels (``FOV / lr.pixels`` µm), measured on the linear (undistorted) grid:
frame ``t`` shows the specimen content moved by ``+dy`` rows and ``+dx`` columns.
``lr.offset_um`` is a further displacement of the specimen in every LR frame relative to the HR
image (a stage repositioning between the two acquisitions); ``truth["hr_to_lr_shift_px"]`` is the
same in LR pixels. Frame ``t`` therefore shows the specimen displaced by
``hr_to_lr_shift_px + drift_px[t]`` LR pixels relative to where the HR image shows it.
Modules
-------
:mod:`~fastscan.simulate.params`
    Defaults and validation of the simulation parameters.
:mod:`~fastscan.simulate.random_fields`
    Resolution-independent random fields (hashed lattice value noise) for the textures.
:mod:`~fastscan.simulate.marks`
    Gaussian marks (curve vertices, blobs) and their fast rendering.
:mod:`~fastscan.simulate.specimens`
    The synthetic specimens (mitochondria, tissue), rendered on any window at any pixel size.
:mod:`~fastscan.simulate.acquire`
    Noise-free signal and acquisition of the HR raster and the LR resonant series.
:mod:`~fastscan.simulate.detector`
    The shared detector model.
:mod:`~fastscan.simulate.files`
    A FOV written as a microscope would: OME-TIFF series and target, ground-truth JSON.
:mod:`~fastscan.simulate.slides`
    Large fast-mode images scanned in strips, written as tiled OME-TIFF.
:mod:`~fastscan.simulate.calibrated`
    Parameters fitted to the user's registered FOVs (detector, scan model, pixel sizes, PSF).

The resonant scan geometry is :mod:`fastscan.scan`'s.
"""

from fastscan.simulate.acquire import acquire_hr, acquire_lr_series, hr_signal, lr_signal
from fastscan.simulate.calibrated import calibrate_simulator, calibrated_params, estimate_psf_fwhm_um
from fastscan.simulate.detector import detect
from fastscan.simulate.files import write_fov
from fastscan.simulate.params import DEFAULTS, resolve_params
from fastscan.simulate.slides import write_slide
from fastscan.simulate.specimens import SPECIMENS, render_specimen

__all__ = [
    "DEFAULTS",
    "SPECIMENS",
    "acquire_hr",
    "acquire_lr_series",
    "calibrate_simulator",
    "calibrated_params",
    "detect",
    "estimate_psf_fwhm_um",
    "hr_signal",
    "lr_signal",
    "render_specimen",
    "resolve_params",
    "write_fov",
    "write_slide",
]
