"""Restore the first frames of a held-out FOV with the stage-1 generator and the GAN."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.restore.fov import restore_fov
    from fastscan.train import resolve_device

    # restore.batch_size changes speed and memory, never the result: read from the config, not params
    # (a rerun trigger), so that changing it reruns nothing.
    cfg = snakemake.params.restore
    restore_fov(
        snakemake.input.registered,
        snakemake.output[0],
        models={"mse": os.path.dirname(snakemake.input.mse), "gan": os.path.dirname(snakemake.input.gan)},
        frames=cfg["frames"],
        tile=cfg["tile"],
        overlap=cfg["overlap"],
        batch_size=snakemake.config["restore"]["batch_size"],
        device=resolve_device(cfg["device"]),
        ensemble=cfg["ensemble"],
        threads=snakemake.threads,
    )
