"""Restore a whole slide into an OME-Zarr multiscale image, or gather the parts restored by
restore_slide_part jobs (when restore.parts > 1) into one."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.restore.slide import finalize_slide, restore_slide, slide_options
    from fastscan.train import resolve_device

    # restore.batch_size and compile change speed and memory, never the result: read from the
    # config, not params (a rerun trigger), so that changing them reruns nothing.
    cfg = {**snakemake.params.restore, **{k: snakemake.config["restore"][k] for k in ("batch_size", "compile")}}
    if snakemake.input.parts:
        finalize_slide(snakemake.output[0])
    else:
        restore_slide(
            snakemake.input.slide,
            snakemake.output[0],
            model_dir=os.path.dirname(snakemake.input.weights),
            channel=snakemake.params.channel,
            device=resolve_device(cfg["device"]),
            threads=snakemake.threads,
            **slide_options(cfg),
        )
