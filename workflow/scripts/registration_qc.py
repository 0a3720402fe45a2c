"""Gather the per-FOV registration QC rows into one table."""

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.register import gather_qc

    gather_qc(list(snakemake.input), snakemake.output[0])
