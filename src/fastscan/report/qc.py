"""Registration QC: the per-FOV table as HTML, failed FOVs marked, with the photon transfer plot inline.

Kept apart from :mod:`fastscan.report.tables`, whose pages show metric summaries: this one reads
the QC table as written (strings), decides pass/fail and draws the photon calibration of
:mod:`fastscan.photons`.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from fastscan.photons import curve_from_text
from fastscan.report.style import _pyplot

logger = logging.getLogger(__name__)

_FALSE_WORDS = frozenset({"false", "0", "no", "f", "n", "fail", "failed"})
# Columns of the QC table drawn rather than printed, and the most FOVs the photon plot shows.
_QC_PLOTTED = ("photon_curve",)
_MAX_PHOTON_PANELS = 12
_TRUE_WORDS = frozenset({"true", "1", "yes", "t", "y", "pass", "passed"})


def _qc_failed(df: pd.DataFrame) -> pd.Series:
    if "passed" in df.columns:
        words = df["passed"].fillna("").astype(str).str.strip().str.lower()
        # A FOV whose QC was never decided is not known to be good.
        return ~words.isin(_TRUE_WORDS)
    if {"ncc", "min_ncc"} <= set(df.columns):
        ncc = pd.to_numeric(df["ncc"], errors="coerce")
        min_ncc = pd.to_numeric(df["min_ncc"], errors="coerce")
        return ~(ncc >= min_ncc)
    raise ValueError("registration QC table needs a 'passed' column, or 'ncc' and 'min_ncc'")


def registration_qc_table(qc_tsv: str | Path) -> str:
    """Render the registration QC table as a small HTML fragment.

    Parameters
    ----------
    qc_tsv : str or Path
        Tab-separated QC table, one row per FOV (``results/qc/registration.tsv``).
        A FOV fails when ``passed`` is not true (``True``/``true``/``1``/``yes``),
        or, without a ``passed`` column, when ``ncc < min_ncc``. The file is
        only read.

    Returns
    -------
    str
        A ``<p>`` with the count of failed FOVs and a ``<table>`` with every
        column as written (``photons_at_median``: photons per pixel at the
        median signal of the FOV) plus a ``status`` column; failed rows are
        shaded. With a ``photon_curve`` column, that column is drawn instead
        of printed: an inline PNG of each FOV's temporal mean-variance curve
        and its fitted photon transfer line (:mod:`fastscan.photons`), at most
        12 FOVs.
    """
    df = pd.read_csv(qc_tsv, sep="\t", dtype=str, keep_default_na=False)
    failed = _qc_failed(df) if len(df) else pd.Series([], dtype=bool)
    figure = _photon_curve_figure(df) if "photon_curve" in df.columns else ""
    brightness = _intensity_note(df[~failed.to_numpy(dtype=bool)]) if "lr_per_hr" in df.columns and len(df) else ""
    df = df.drop(columns=[c for c in _QC_PLOTTED if c in df.columns])
    n_failed = int(failed.sum())
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in [*df.columns, "status"])
    body = []
    for (_, row), bad in zip(df.iterrows(), failed, strict=True):
        cells = "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
        status = '<td style="color:#b00000;font-weight:bold">FAILED</td>' if bad else "<td>passed</td>"
        style = ' class="failed" style="background:#fde0dc"' if bad else ""
        body.append(f"<tr{style}>{cells}{status}</tr>")
    summary = f"<p>{n_failed} of {len(df)} FOV{'s' if len(df) != 1 else ''} failed registration QC.</p>"
    table = (
        '<table class="fastscan-qc" style="border-collapse:collapse;font-family:sans-serif;font-size:small" '
        'border="1" cellpadding="3">'
        f"<thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )
    if n_failed:
        logger.warning("%d of %d FOVs failed registration QC", n_failed, len(df))
    return summary + "\n" + brightness + table + figure


def _intensity_note(df: pd.DataFrame) -> str:
    """A paragraph naming, per sample, the FOVs whose ``lr_per_hr`` lies far off the sample's
    median (:func:`fastscan.dataset.intensity_outliers`); empty when none does.

    Per sample, since a model trains on samples, and two samples may be two microscopes.
    """
    from fastscan.dataset import INTENSITY_RELATION_FACTOR, intensity_outliers

    lines = []
    for sample, part in df.groupby("sample", sort=True):
        slopes = {"/".join((str(r["session"]), str(r["fov"]))): pd.to_numeric(r["lr_per_hr"], errors="coerce") for _, r in part.iterrows()}
        median, far = intensity_outliers(slopes)
        if far:
            named = ", ".join(f"{html.escape(k)} (x{f:.2f})" for k, f in far)
            lines.append(f"sample <b>{html.escape(str(sample))}</b> (median {median:.4g}): {named}")
    if not lines:
        return ""
    return (
        f"<p>HR targets far brighter or dimmer for their fast frames than the rest of their sample (<code>lr_per_hr</code> more "
        f"than {INTENSITY_RELATION_FACTOR:g} times off the sample's median): {'; '.join(lines)}. One normalisation maps every "
        "HR target of a model, so the network learns their average brightness. Was the detector gain, laser power or dwell of "
        "the slow scan changed between these FOVs? <code>dataset.match_hr_intensity: true</code> maps each target into its "
        "own series' units.</p>\n"
    )


def registration_qc_page(qc_tsv: str | Path | None) -> str:
    """The ``registration_qc.html`` page: :func:`registration_qc_table`, or a note without a QC table."""
    fragment = registration_qc_table(qc_tsv) if qc_tsv is not None else "<p>No registration QC table was given.</p>"
    return f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Registration QC</title></head>\n<body>\n{fragment}\n</body></html>\n'


def _qc_number(row: pd.Series, column: str) -> float:
    try:
        return float(row.get(column, ""))
    except (TypeError, ValueError):
        return math.nan


def _photon_curve_figure(df: pd.DataFrame) -> str:
    """Small multiples of the FOVs' mean-variance curves with their lines, as an inline PNG.

    Each panel shows the binned temporal variance against the mean signal (points) and the
    photon transfer line ``gain * (mean - offset) + read_noise**2`` of the QC row; its title
    gives the photons per pixel at the median signal. FOVs without a curve (one frame) are
    listed in a note.
    """
    panels, missing = [], []
    for _, row in df.iterrows():
        label = "/".join(str(row.get(k, "")) for k in ("sample", "session", "fov"))
        try:
            mean, variance = curve_from_text(row.get("photon_curve", ""))
        except ValueError as exc:
            logger.warning("registration QC row %s: %s", label, exc)
            mean = np.empty(0)
        if mean.size == 0:
            missing.append(label)
            continue
        panels.append((label, mean, variance, row))
    note = (
        f"<p>No photon transfer curve for {len(missing)} FOV(s) (fewer than 2 frames, or no usable pixels): {html.escape(', '.join(missing))}.</p>"
        if missing
        else ""
    )
    if not panels:
        return "\n" + note if note else ""
    shown = panels[:_MAX_PHOTON_PANELS]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.9 * rows), squeeze=False)
    for ax in axes.ravel()[len(shown) :]:
        ax.set_axis_off()
    for ax, (label, mean, variance, row) in zip(axes.ravel(), shown, strict=False):
        ax.plot(mean, variance, "o", ms=2.5, color="#0072B2")
        gain = _qc_number(row, "gain_adu_per_photon")
        offset = _qc_number(row, "offset_adu")
        read = _qc_number(row, "read_noise_adu")
        if all(math.isfinite(v) for v in (gain, offset, read)):
            x = np.array([min(mean.min(), offset), mean.max()])
            ax.plot(x, gain * (x - offset) + read**2, "-", lw=1, color="#D55E00")
        photons = _qc_number(row, "photons_at_median")
        title = f"{label}\n{photons:.3g} photons at median" if math.isfinite(photons) else label
        ax.set_title(title, fontsize=6)
        ax.tick_params(labelsize=5)
        ax.set_xlabel("mean (ADU)", fontsize=6)
        ax.set_ylabel("variance (ADU²)", fontsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=90)
    finally:
        plt.close(fig)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    more = f" (the first {_MAX_PHOTON_PANELS} of {len(panels)} FOVs)" if len(panels) > _MAX_PHOTON_PANELS else ""
    return (
        "\n<h4>Photon calibration</h4>\n<p>Temporal variance against mean signal per FOV "
        "(binned pixels) and the fitted photon transfer line "
        f"var = gain (mean - offset) + read noise²{more}.</p>\n"
        f'<img alt="photon transfer curves" src="data:image/png;base64,{encoded}">' + note
    )
