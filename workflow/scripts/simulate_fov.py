"""Simulate one FOV: a video-rate series, its HR target and the ground-truth geometry."""

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.simulate import write_fov

    write_fov(
        lr_path=snakemake.output.lr,
        hr_path=snakemake.output.hr,
        truth_path=snakemake.output.truth,
        specimen=snakemake.params.specimen,
        seed=snakemake.params.seed,
        params=snakemake.params.sim,
    )
