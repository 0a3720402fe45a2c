"""Restore a whole slide into an OME-Zarr multiscale image."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.infer import restore_slide
    from fastscan.train import resolve_device

    cfg = snakemake.params.restore
    restore_slide(
        snakemake.input.slide,
        snakemake.output[0],
        model_dir=os.path.dirname(snakemake.input.weights),
        channel=snakemake.params.channel,
        tile=cfg["tile"],
        overlap=cfg["overlap"],
        batch_size=cfg["batch_size"],
        region=cfg["region"],
        pyramid_levels=cfg["pyramid_levels"],
        device=resolve_device(cfg["device"]),
        threads=snakemake.threads,
    )
