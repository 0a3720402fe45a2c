"""Training curves: losses and validation PSNR of the training stages, laid end to end.

Owns how the training stages look (order, colours, names) and how curve files group into runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fastscan.baselines import METHOD_COLOURS
from fastscan.report.style import _placeholder, _pyplot, _save

if TYPE_CHECKING:
    from matplotlib.axes import Axes

_STAGE_ORDER: tuple[str, ...] = ("mse", "critic", "gan", "finetune")
_STAGE_COLOURS: dict[str, str] = {
    "mse": METHOD_COLOURS["mse"],
    "critic": "#0072B2",
    "gan": METHOD_COLOURS["gan"],
    "finetune": METHOD_COLOURS["finetuned"],
}
_STAGE_LABELS: dict[str, str] = {
    "mse": "Generator (MSE)",
    "critic": "Critic",
    "gan": "GAN",
    "finetune": "Fine-tuning",
}
_CURVE_COLUMNS: tuple[str, ...] = ("stage", "epoch", "train_loss", "valid_loss", "valid_psnr")
_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v", "P", "X", "*")


def _read_curves(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", dtype={"stage": str})
    missing = [c for c in _CURVE_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: training-curve table lacks columns {missing}")
    for c in _CURVE_COLUMNS[1:]:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def _stage_colour(stage: str, extra: dict[str, str]) -> str:
    if stage in _STAGE_COLOURS:
        return _STAGE_COLOURS[stage]
    if stage not in extra:
        palette = ("#56B4E9", "#009E73", "#F0E442", "#999999")
        extra[stage] = palette[len(extra) % len(palette)]
    return extra[stage]


def _stage_rank(stage: str) -> tuple[int, str]:
    return (_STAGE_ORDER.index(stage), "") if stage in _STAGE_ORDER else (len(_STAGE_ORDER), stage)


def _curve_runs(paths: Sequence[Path]) -> dict[str, list[Path]]:
    """Group curve files by training run.

    Each stage writes its own file (``results/train/{model}/mse/curves.tsv``,
    ``.../critic/curves.tsv``, ``results/models/{model}/curves.tsv``); a file
    whose folder is named after a stage belongs to the run of the folder above.
    """
    runs: dict[str, list[Path]] = {}
    for path in paths:
        # The stage-1 and critic files live under results/train/, the GAN's under results/models/:
        # only the model's folder name ties them together.
        folder = path.parent.parent if path.parent.name in _STAGE_ORDER else path.parent
        runs.setdefault(folder.name, []).append(path)
    return runs


def _read_runs(curve_tsvs: Sequence[str | Path] | Mapping[str, Sequence[str | Path]]) -> dict[str, pd.DataFrame]:
    """The curves of each training run that has files, its stages' tables concatenated in file order."""
    if isinstance(curve_tsvs, Mapping):
        runs = {str(name): [Path(p) for p in files] for name, files in curve_tsvs.items()}
    else:
        runs = _curve_runs([Path(p) for p in curve_tsvs])
    return {name: pd.concat([_read_curves(p) for p in files], ignore_index=True) for name, files in runs.items() if files}


def _plot_run(
    ax_loss: Axes,
    ax_psnr: Axes,
    df: pd.DataFrame,
    *,
    marker: str,
    name_stages: bool,
    extra_colours: dict[str, str],
    stages_seen: list[str],
) -> bool:
    """Draw one run's stages end to end; True if a loss is not positive (no log axis then)."""
    any_nonpositive = False
    offset = 0
    for stage in sorted(df["stage"].dropna().unique(), key=_stage_rank):
        # Rows keep file order inside a stage: progressive resizing may restart the epoch counter.
        part = df[df["stage"] == stage]
        x = offset + np.arange(1, len(part) + 1)
        colour = _stage_colour(stage, extra_colours)
        if stage not in stages_seen:
            stages_seen.append(stage)
        # Open markers for validation keep the two apart when a stage has a single epoch (no line).
        for column, style, face in (("train_loss", "-", colour), ("valid_loss", "--", "none")):
            y = part[column].to_numpy(dtype=np.float64)
            any_nonpositive |= bool(np.any(y[np.isfinite(y)] <= 0))
            ax_loss.plot(x, y, linestyle=style, marker=marker, markersize=4, color=colour, markerfacecolor=face)
        y = part["valid_psnr"].to_numpy(dtype=np.float64)
        if np.isfinite(y).any():
            ax_psnr.plot(x, y, linestyle="-", marker=marker, markersize=3, color=colour)
        if name_stages:
            for ax in (ax_loss, ax_psnr):
                _name_stage_span(ax, offset, len(part), stage, colour)
        offset += len(part)
    return any_nonpositive


def _name_stage_span(ax: Axes, offset: int, n_epochs: int, stage: str, colour: str) -> None:
    """Shade the epochs of one stage and name the stage along the top edge."""
    ax.axvspan(offset + 0.5, offset + n_epochs + 0.5, color=colour, alpha=0.08, linewidth=0)
    ax.text(
        offset + 0.5 + n_epochs / 2,
        1.01,
        _STAGE_LABELS.get(stage, stage),
        transform=ax.get_xaxis_transform(),
        ha="center",
        va="bottom",
        fontsize=7,
        color=colour,
    )


def _format_curve_axes(ax_loss: Axes, ax_psnr: Axes, *, symlog: bool) -> None:
    if symlog:
        ax_loss.set_yscale("symlog", linthresh=1e-3)
    else:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("Loss (log scale)")
    ax_psnr.set_ylabel("Validation PSNR (dB)")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_psnr):
        ax.set_xlabel("Cumulative epoch (generator, then critic, then GAN)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    # Titles sit above the stage names drawn along the top edge.
    ax_loss.set_title("Losses", fontsize=10, pad=14)
    ax_psnr.set_title("Validation PSNR", fontsize=10, pad=14)


def _curve_legends(ax_loss: Axes, ax_psnr: Axes, stages_seen: list[str], extra_colours: dict[str, str], labels: list[str]) -> None:
    """Stage colours and line styles on the loss panel; with several runs, their markers on the PSNR panel."""
    from matplotlib.lines import Line2D

    stage_handles = [
        Line2D([], [], color=_stage_colour(s, extra_colours), linewidth=2, label=_STAGE_LABELS.get(s, s)) for s in sorted(stages_seen, key=_stage_rank)
    ]
    style_handles = [
        Line2D([], [], color="black", linestyle="-", marker="o", markersize=4, label="training"),
        Line2D([], [], color="black", linestyle="--", marker="o", markersize=4, markerfacecolor="none", label="validation"),
    ]
    file_handles = (
        [Line2D([], [], color="black", marker=_MARKERS[i % len(_MARKERS)], linestyle="none", label=label) for i, label in enumerate(labels)]
        if len(labels) > 1
        else []
    )
    ax_loss.legend(handles=stage_handles + style_handles, fontsize=7, loc="best")
    if file_handles:
        ax_psnr.legend(handles=file_handles, fontsize=7, loc="best")


def plot_training_curves(curve_tsvs: Sequence[str | Path] | Mapping[str, Sequence[str | Path]], out_png: str | Path) -> Path:
    """Training and validation losses and validation PSNR of the training stages.

    Parameters
    ----------
    curve_tsvs : sequence of str or Path, or mapping
        Tab-separated tables with columns ``stage, epoch, train_loss,
        valid_loss, valid_psnr`` (one row per epoch; ``valid_psnr`` may be
        empty or NaN, e.g. for the critic). A mapping gives the files of each
        training run under its name; a sequence is grouped into runs by
        :func:`_curve_runs` (the stage folders of one model form one run).
        Several runs are told apart by marker shape.
    out_png : str or Path
        PNG to write.

    Returns
    -------
    Path
        `out_png`.

    Notes
    -----
    Within a run, the stages are laid end to end in the order mse, critic,
    gan (then any other), each occupying as many epochs as it has rows, so
    the x axis counts epochs over the whole schedule; stage colour is fixed
    and, for a single run, each stage's span is shaded and named. Losses use
    a log axis (symmetric log if a loss is not positive, as some GAN losses
    can be).
    """
    tables = _read_runs(curve_tsvs)
    if not tables:
        return _placeholder(out_png, "No training curves to plot.")
    labels = list(tables) if len(tables) > 1 else [""]

    plt = _pyplot()
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    extra_colours: dict[str, str] = {}
    stages_seen: list[str] = []
    any_nonpositive = False
    for i, df in enumerate(tables.values()):
        marker = _MARKERS[i % len(_MARKERS)]
        any_nonpositive |= _plot_run(ax_loss, ax_psnr, df, marker=marker, name_stages=len(tables) == 1, extra_colours=extra_colours, stages_seen=stages_seen)
    _format_curve_axes(ax_loss, ax_psnr, symlog=any_nonpositive)
    _curve_legends(ax_loss, ax_psnr, stages_seen, extra_colours, labels)
    return _save(fig, out_png)
