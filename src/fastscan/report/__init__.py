"""Figures and tables embedded in the Snakemake HTML report.

Every figure uses the method order and colours of :mod:`fastscan.baselines`, so
a method looks the same wherever it appears. Figures are written with the Agg
backend (no display needed on cluster nodes) and, like the tables, to a
temporary sibling that is renamed into place.

Modules
-------
:mod:`~fastscan.report.style`
    Headless pyplot, the PNG writer and labelled placeholders shared by every figure.
:mod:`~fastscan.report.boxes`
    Box plots of a metric per method (Fig. 5).
:mod:`~fastscan.report.panels`
    Image panels read from the restored stores: examples (Fig. 4/7), GAN departures, slide thumbnails.
:mod:`~fastscan.report.curves`
    Training curves of the training stages.
:mod:`~fastscan.report.qc`
    Registration QC table with the photon transfer plot.
:mod:`~fastscan.report.tables`
    Summary tables (Tables II-IV) and the departure table as HTML pages.
:mod:`~fastscan.report.ablation`
    Data-size ablation figure (Fig. 6).
:mod:`~fastscan.report.build`
    Every figure and table of the report into one directory (the report rule's driver).
"""

from fastscan.report.ablation import plot_ablation
from fastscan.report.boxes import plot_metric_boxes
from fastscan.report.build import REPORT_FILES, write_report_figures
from fastscan.report.curves import plot_training_curves
from fastscan.report.panels import plot_example_panels, plot_hallucination_panels, plot_slide_thumbnails
from fastscan.report.qc import registration_qc_table
from fastscan.report.tables import table_html

__all__ = [
    "REPORT_FILES",
    "plot_ablation",
    "plot_example_panels",
    "plot_hallucination_panels",
    "plot_metric_boxes",
    "plot_slide_thumbnails",
    "plot_training_curves",
    "registration_qc_table",
    "table_html",
    "write_report_figures",
]
