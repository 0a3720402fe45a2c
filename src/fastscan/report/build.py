"""The whole report at once: every figure and table of :data:`REPORT_FILES` written into one directory.

The driver of the report rule (``workflow/scripts/report.py``): read the inputs, compute the
tables and pages, then write the files in a fixed order. The figures and tables themselves are
the other modules' of :mod:`fastscan.report`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fastscan.atomic import write_text
from fastscan.hallucination import DEFAULT_K, hallucination_table
from fastscan.metrics import (
    ablation_table,
    generalisation_table,
    model_record,
    read_metrics_tsv,
    read_optional_metrics,
    summarise,
    write_tsv,
)
from fastscan.report.ablation import _NO_ABLATION, plot_ablation
from fastscan.report.boxes import plot_metric_boxes
from fastscan.report.curves import plot_training_curves
from fastscan.report.panels import _MAX_EXAMPLE_ROWS, plot_example_panels, plot_hallucination_panels, plot_slide_thumbnails
from fastscan.report.qc import registration_qc_page
from fastscan.report.tables import gan_stage_notes, hallucination_html, table_html

logger = logging.getLogger(__name__)

#: Files :func:`write_report_figures` writes into its ``out_dir``, in the order returned.
REPORT_FILES: tuple[str, ...] = (
    "summary.tsv",
    "summary.html",
    "psnr_boxes.png",
    "ssim_boxes.png",
    "examples.png",
    "hallucination.png",
    "hallucination.tsv",
    "hallucination.html",
    "ablation.tsv",
    "ablation.html",
    "ablation.png",
    "generalisation.tsv",
    "generalisation.html",
    "training_curves.png",
    "registration_qc.html",
    "slides.png",
)

_NO_FINETUNE = (
    "No generalisation results: the optional files results/finetune/{name}/metrics.tsv do not exist. "
    "Configure fine-tuning under the config key 'finetune' and run the workflow to fill Table IV."
)


def _write_text(text: str, path: Path) -> Path:
    write_text(path, text)
    logger.info("wrote %s", path)
    return path


def _pick_examples(restored: Sequence[Path], n: int = _MAX_EXAMPLE_ROWS) -> list[Path]:
    # Prefer one FOV per sample so that the example figure shows the variety of structures.
    chosen: list[Path] = []
    samples: set[str] = set()
    for path in restored:
        sample = path.parts[-3] if len(path.parts) >= 3 else str(path)
        if sample not in samples:
            chosen.append(path)
            samples.add(sample)
    for path in restored:
        if path not in chosen:
            chosen.append(path)
    return chosen[:n]


@dataclass(frozen=True)
class _Table:
    """A table of the report and its HTML page, computed before anything is written."""

    name: str  # the file stem: {name}.tsv and {name}.html
    frame: pd.DataFrame
    page: str


def _report_tables(
    df: pd.DataFrame,
    restored: Sequence[Path],
    *,
    ablation_metrics: Sequence[str | Path],
    finetune_metrics: Sequence[str | Path],
    models: Sequence[str | Path],
    k: float,
) -> dict[str, _Table]:
    """Tables II-IV and the departure table, each with its HTML page, keyed by file stem."""
    metas = {Path(m).name: model_record(m, consequence="the report cannot say what its GAN stage trained") for m in models}
    summary = summarise(df)
    departures = hallucination_table(restored, k=k)
    ablation = ablation_table(read_optional_metrics(list(ablation_metrics), key="ablation"))
    generalisation = generalisation_table(read_optional_metrics(list(finetune_metrics), key="finetune"))
    tables = [
        _Table(
            "summary",
            summary,
            table_html(
                summary,
                title="Table II: test-set metrics per method",
                empty_note="No test images were restored, so there are no metrics.",
                notes=gan_stage_notes(metas),
            ),
        ),
        _Table("hallucination", departures, hallucination_html(departures)),
        _Table(
            "ablation",
            ablation,
            table_html(ablation, title="Table III: metrics against the number of training pairs", empty_note=_NO_ABLATION),
        ),
        _Table(
            "generalisation",
            generalisation,
            table_html(
                generalisation,
                title="Table IV: generalisation to another sample, as is and fine-tuned",
                empty_note=_NO_FINETUNE,
            ),
        ),
    ]
    return {table.name: table for table in tables}


def _write_table(table: _Table, out: Path) -> list[Path]:
    return [write_tsv(table.frame, out / f"{table.name}.tsv"), _write_text(table.page, out / f"{table.name}.html")]


def write_report_figures(
    *,
    metrics_tsv: str | Path,
    restored: Sequence[str | Path],
    curves: Sequence[str | Path] | Mapping[str, Sequence[str | Path]],
    qc_tsv: str | Path | None,
    out_dir: str | Path,
    ablation_metrics: Sequence[str | Path] = (),
    finetune_metrics: Sequence[str | Path] = (),
    slides: Sequence[str | Path] = (),
    models: Sequence[str | Path] = (),
    example_fovs: int = _MAX_EXAMPLE_ROWS,
    hallucination_k: float = DEFAULT_K,
) -> list[Path]:
    """Write every report figure and table into `out_dir`.

    Parameters
    ----------
    metrics_tsv : str or Path
        Per-image metrics (``results/report/metrics.tsv``).
    restored : sequence of str or Path
        Restored FOV stores; up to `example_fovs` are shown, one per sample
        first (the sample is read from the ``.../{sample}/{session}/{fov}.zarr``
        path). All of them enter the departure table.
    curves : sequence of str or Path, or mapping
        Training-curve tables (see :func:`plot_training_curves`).
    qc_tsv : str or Path or None
        Registration QC table; ``None`` writes a note instead of the table.
    out_dir : str or Path
        Directory for the outputs (created if needed).
    ablation_metrics, finetune_metrics : sequence of str or Path, optional
        Per-image metrics of the data-size ablation
        (``results/ablation/{model}/metrics.tsv``) and of the fine-tuning runs
        (``results/finetune/{name}/metrics.tsv``). Optional: files that do not
        exist are skipped, and with none the tables and Fig. 6 say so.
    slides : sequence of str or Path, optional
        Restored whole-slide OME-Zarr images for the thumbnails.
    models : sequence of str or Path, optional
        Final model directories (``results/models/{model}``): Table II says
        under the table what each one's GAN stage trained (``gan_steps``).
    example_fovs : int, optional
        FOVs shown in the example and departure figures.
    hallucination_k : float, optional
        Departure threshold in multiples of the noise level.

    Returns
    -------
    list of Path
        ``out_dir`` joined with each name of :data:`REPORT_FILES`, in that
        order: ``summary.tsv`` / ``.html`` (Table II), the box plots
        (Fig. 5), ``examples.png`` (Fig. 4/7), the departure figure and table
        ``hallucination.png`` / ``.tsv`` / ``.html``, ``ablation.tsv`` /
        ``.html`` (Table III) and ``ablation.png`` (Fig. 6),
        ``generalisation.tsv`` / ``.html`` (Table IV),
        ``training_curves.png``, ``registration_qc.html`` and ``slides.png``.
        Every file is written even when its input is empty, so they can all be
        declared as rule outputs.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = read_metrics_tsv(metrics_tsv)
    restored_paths = [Path(p) for p in restored]
    examples = _pick_examples(restored_paths, len(restored_paths))
    tables = _report_tables(df, restored_paths, ablation_metrics=ablation_metrics, finetune_metrics=finetune_metrics, models=models, k=hallucination_k)
    qc_page = registration_qc_page(qc_tsv)
    # In the order of REPORT_FILES.
    return [
        *_write_table(tables["summary"], out),
        plot_metric_boxes(df, out / "psnr_boxes.png", metric="psnr"),
        plot_metric_boxes(df, out / "ssim_boxes.png", metric="ssim"),
        plot_example_panels(examples, out / "examples.png", max_rows=example_fovs),
        plot_hallucination_panels(examples, out / "hallucination.png", k=hallucination_k, max_rows=example_fovs),
        *_write_table(tables["hallucination"], out),
        *_write_table(tables["ablation"], out),
        plot_ablation(tables["ablation"].frame, out / "ablation.png"),
        *_write_table(tables["generalisation"], out),
        plot_training_curves(curves, out / "training_curves.png"),
        _write_text(qc_page, out / "registration_qc.html"),
        plot_slide_thumbnails(list(slides), out / "slides.png"),
    ]
