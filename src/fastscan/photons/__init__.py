"""Photon calibration of a video-rate series from its temporal mean-variance curve.

A point-scanning microscope turns photons into digital units (ADU) through a photomultiplier
(PMT) and an analogue-to-digital converter. The noise of one pixel over the frames of a static
field of view therefore measures the detector: this is Janesick's photon transfer method
(J. R. Janesick, *Photon Transfer*, SPIE Press, 2007, DOI 10.1117/3.725073), applied here to the
~100 frames of a video-rate series instead of to flat fields.

Model
-----
A pixel that receives ``n ~ Poisson(lambda)`` photoelectrons per frame reads

    ``adu = g * n + offset + read``,   ``read ~ N(0, sigma_read**2)``,

so its temporal mean and variance obey the photon transfer line

    ``var(adu) = g * (mean(adu) - offset) + sigma_read**2``.

``g`` is the gain in ADU per detected photon, ``offset`` the ADU of zero photons, and
``sigma_read`` the additive noise at zero photons (amplifier and ADC noise; the 1/12 ADU**2 of
integer rounding is part of it). Assumptions:

* **PMT excess noise folds into the effective gain.** A real PMT multiplies each photoelectron by
  a random gain (excess noise factor ``F = 1 + var(G) / E(G)**2``, about 1.2-1.5); the variance
  then grows as ``F * E(G)`` per ADU of signal. The slope is that *effective* gain, and
  ``(adu - offset) / g`` is the number of Poisson-equivalent photons: the count whose shot noise
  matches the measured noise, ``1 / F`` of the photoelectrons. This is what a variance-stabilising
  transform and a noise model need.
* **Dark counts are photons.** Thermionic electrons from the photocathode are amplified exactly
  like photoelectrons; the offset is the level of *zero* electrons, not the dark level.
* **The specimen is static between frames** (after the slow drift, which the estimator below is
  insensitive to); pixels that change beyond the noise are detected and left out.
* **No clipping.** Pixels that touch the ADC's top (``saturation``, the dtype maximum) or bottom
  (the dtype minimum of integer data) in any frame are left out: a clipped distribution has a
  smaller variance at a wrong mean (on a simulated field with 16 % of its pixels clipped at
  4095 ADU, they pulled the top of the curve down to a fifth of the line).

Fit
---
1. Per pixel: the temporal mean and the *successive-difference* variance
   ``sum((x[t+1] - x[t])**2) / (2 (T - 1))`` (von Neumann's mean square successive difference).
   For white noise its expectation is the variance; a slow change of the signal (drift of a few
   hundredths of a pixel per frame, bleaching) enters it only through its tiny frame-to-frame
   increments, where it would dominate the ordinary variance of the same pixel. A known
   expected signal per frame (``signal``: registration's mean moved back by each frame's drift)
   is subtracted first, which removes faster drift as well.
2. Trends: the ratio of the ordinary variance to the successive-difference variance is
   ``1 +- 1 / sqrt(T)`` for white noise and large where the signal has a temporal trend; pixels
   above ``1 + motion_sigma / sqrt(T)`` are left out.
3. The remaining pixels are binned by mean (equal-width bins between the 0.5th and 99.5th
   percentiles, bins with too few pixels dropped); each bin gives its mean signal and the mean
   of its pixels' variances after gross outliers are rejected.
4. A Theil-Sen line (median of the pairwise slopes) through the bins. Changes without a trend
   (a structure blinking or passing through a pixel) are caught next: pixels more than
   ``excess_sigma`` sampling standard deviations above the line are dropped and the line is
   refitted (:func:`~fastscan.photons.transfer._fit_line`). A curve the line explains less than half of (``r2 < 0.5``) is
   refused.

Measured on simulated 128 x 128 x 100 series (gain 8, 15 photons at the brightest structures,
mitochondria and tissue, 4 seeds each): the gain was within -1.4 to -0.1 % of the truth at the
simulator's default drift and within -0.3 to +4.9 % at five times that drift. The same raw
frames without the drift's signal changes removed gave -0.9 to +1.6 % and +2.8 to +26 %; the
registered (interpolated) frames -2 to -18 % and -11 to -22 %. On five static series with
gains of 2-20 ADU per photon and read noise of 2-8 ADU the gain was within 1.1 %. Fields with
blinking and passing structures over a third of their pixels biased the line by up to +60 %
(tissue: +26 to +40 %) without steps 2 and 4, and by -5 to +7 % with them. Theil-Sen scattered 0.9 %
(RMS over 10 static series) against 0.4 % for a weighted least-squares line, but stayed within
6 % on the blinking fields where the weighted line reached +17 %.

Offset and read noise
---------------------
One line gives two numbers, ``g`` and the intercept ``sigma_read**2 - g * offset``, for three
unknowns. The third comes from the darkest pixels of the series (the lowest 5 % of the means,
at least 20 pixels): their values are Poisson mixtures of Gaussian peaks
``N(offset + g k, sigma_read**2)``, ``k ~ Poisson(lambda_i)``, and at the few photons of a
video-rate background the zero-photon peak dominates. Given ``g``, each pixel's rate follows
from its mean, ``lambda_i = (m_i - offset) / g``, and the read noise from the pixels' mean
variance ``v``, ``sigma_read**2 = v - g (mean(m_i) - offset)``; the offset is then the one free
parameter, fitted by maximum likelihood to the dark pixels' values (integer values integrate
their unit ADC bin) (:func:`~fastscan.photons.dark._dark_core`). The dark pixels are chosen on the even frames and
measured on the odd ones, so that their selection does not favour low noise. The "variance
floor" alone (``offset`` = dark mean, ``sigma_read**2`` = dark variance) is biased by the dark
counts: on the default simulated detector (0.1 dark photons of 8 ADU per pixel) it reads a read
noise of 5 ADU for the true 3. On the simulated series above the offset was within 0.15 ADU
for a background of 0.1 photons, 0.4 ADU for 0.6-1 photons, and 1.4 ADU (0.2 photons) where
the read noise is as wide as a photon and the background holds 4; the read noise within 9 %.

Offset and read noise are reported as NaN, with the reason, when the zero-photon peak is not
observable: the darkest pixels reach the bottom of the ADC range (an offset turned down until
the background reads 0, common on confocal systems; or a photon counter whose zero is the
floor), or their variance is more than 30 photons' worth (peaks merged). The gain and the line
are still measured, and the generalised Anscombe transform (:func:`generalized_anscombe`) needs
only the line.

Raw frames, not registered ones
-------------------------------
Drift correction interpolates: the Fourier shift averages the variances of neighbouring pixels
of different means, and the resonant column resampling lowers the noise variance towards the
ends of the lines by up to a third; the registered frames' gain came out 2-22 % low (above).
Calibrate the ingested frames, passing the expected signal of each frame when the drift is
known (as :func:`fastscan.register.register_fov` does).

References
----------
J. R. Janesick, *Photon Transfer: DN -> lambda*, SPIE Press, 2007. DOI 10.1117/3.725073.

M. Makitalo and A. Foi, "Optimal inversion of the generalized Anscombe transformation for
Poisson-Gaussian noise", *IEEE Trans. Image Process.* 22(1), 91-103, 2013.
DOI 10.1109/TIP.2012.2202675.

J. von Neumann, R. H. Kent, H. R. Bellinson and B. I. Hart, "The mean square successive
difference", *Ann. Math. Statist.* 12(2), 153-162, 1941.

Modules
-------
The package is split by concept, lower layers first (no module imports a later one):

- :mod:`~fastscan.photons.calibration`: :class:`PhotonCalibration`, the measured detector, its
  JSON summary and the curve as text (:func:`curve_to_text`, :func:`curve_from_text`);
- :mod:`~fastscan.photons.transfer`: per-pixel temporal statistics, the binned mean-variance
  curve and the Theil-Sen photon transfer line (the gain);
- :mod:`~fastscan.photons.dark`: offset and read noise from the darkest pixels;
- :mod:`~fastscan.photons.calibrate`: :func:`calibrate_series`, the driver;
- :mod:`~fastscan.photons.anscombe`: :func:`generalized_anscombe` and its unbiased inverse.
"""

from fastscan.photons.anscombe import generalized_anscombe, inverse_generalized_anscombe
from fastscan.photons.calibrate import MIN_FRAMES, calibrate_series
from fastscan.photons.calibration import PhotonCalibration, curve_from_text, curve_to_text

__all__ = [
    "MIN_FRAMES",
    "PhotonCalibration",
    "calibrate_series",
    "curve_from_text",
    "curve_to_text",
    "generalized_anscombe",
    "inverse_generalized_anscombe",
]
