"""Figure plumbing shared by every report figure: headless pyplot, the PNG writer, placeholders.

Every figure goes through :func:`_save` (one resolution; written to a temporary sibling that is
renamed into place) and, when its input is empty, :func:`_placeholder`, so that every declared
rule output exists. Method order, labels and colours are :mod:`fastscan.baselines`'; the metric
axis labels shared by the box plots and the ablation figure are here. Kept apart so that the
figure modules share one backend choice, one resolution and one way of writing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastscan.atomic import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

_METRIC_AXIS_LABELS: dict[str, str] = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM (unitless)",
    "nrmse": "NRMSE (unitless)",
}

_DPI = 150


def _pyplot() -> Any:
    # Report jobs run on headless nodes; Agg must be chosen before pyplot is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Figure, out_png: str | Path) -> Path:
    plt = _pyplot()
    out = Path(out_png)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    logger.info("wrote %s", out)
    return out


def _placeholder(out_png: str | Path, message: str) -> Path:
    # The rule declares every figure as an output, so missing data still yields a (labelled) file.
    plt = _pyplot()
    import textwrap

    fig, ax = plt.subplots(figsize=(6.5, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, textwrap.fill(message, 75), ha="center", va="center", fontsize=9)
    logger.warning("%s: %s", out_png, message)
    return _save(fig, out_png)
