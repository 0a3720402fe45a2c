"""Restore the video-rate series of one FOV (a new session without HR target) into OME-Zarr (t, y, x)."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.io.memory import set_job_limit
    from fastscan.restore.series import restore_series
    from fastscan.train import resolve_device

    # The series is read whole: refuse one whose header declares more than the job's memory.
    set_job_limit(getattr(snakemake.resources, "mem_mb", None), rule=snakemake.rule)

    # restore.batch_size, frames_per_chunk and compile change speed and memory, never the result: read
    # from the config, not params (a rerun trigger), so that changing them reruns nothing.
    cfg = snakemake.params.restore
    fast = snakemake.config["restore"]
    series = snakemake.params.series
    restore_series(
        series["lr"],
        snakemake.output[0],
        model_dir=os.path.dirname(snakemake.input.weights),
        channel=series["channel"],
        pixel_size_um=series["lr_pixel_size_um"],
        tile=cfg["tile"],
        overlap=cfg["overlap"],
        batch_size=fast["batch_size"],
        frames_per_chunk=fast["frames_per_chunk"],
        pyramid_levels=cfg["pyramid_levels"],
        device=resolve_device(cfg["device"]),
        precision=cfg["precision"],
        compile=fast["compile"],
        ensemble=cfg["ensemble"],
        threads=snakemake.threads,
    )
