"""Tables and figures of the HTML report."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.report import write_report_figures

    write_report_figures(
        metrics_tsv=snakemake.input.metrics,
        restored=list(snakemake.input.restored),
        curves=list(snakemake.input.curves),
        qc_tsv=snakemake.input.qc[0],
        out_dir=os.path.dirname(snakemake.output.summary),
        ablation_metrics=list(snakemake.input.ablation),
        finetune_metrics=list(snakemake.input.finetune),
        slides=list(snakemake.input.slides),
        models=[os.path.dirname(m) for m in snakemake.input.models],
        example_fovs=snakemake.params.example_fovs,
    )
