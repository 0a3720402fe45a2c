"""PSNR, SSIM and NRMSE of every method on every restored held-out frame.

One script for rules metrics, finetune_metrics and ablation_metrics (they differ only in the stores).
"""

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.metrics import evaluate_many, write_tsv

    write_tsv(evaluate_many(snakemake.params.stores), snakemake.output.metrics)
