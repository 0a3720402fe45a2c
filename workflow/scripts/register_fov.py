"""Register one FOV's series to its HR target and write its QC row."""

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.register import register_fov, write_qc

    qc = register_fov(snakemake.input[0], snakemake.output.store, **snakemake.params.register)
    write_qc(qc, snakemake.output.qc)
