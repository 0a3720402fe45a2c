"""Restore the first frames of a held-out FOV with every model named in the rule's inputs."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.restore.fov import restore_fov
    from fastscan.train import resolve_device

    # restore.batch_size changes speed and memory, never the result: read from the config, not params
    # (a rerun trigger), so that changing it reruns nothing.
    cfg = snakemake.params.restore
    models = {name: os.path.dirname(path) for name, path in snakemake.input.items() if name != "registered"}
    restore_fov(
        snakemake.input.registered,
        snakemake.output[0],
        models=models,
        frames=cfg["frames"],
        tile=cfg["tile"],
        overlap=cfg["overlap"],
        batch_size=snakemake.config["restore"]["batch_size"],
        device=resolve_device(cfg["device"]),
        ensemble=cfg["ensemble"],
        threads=snakemake.threads,
    )
