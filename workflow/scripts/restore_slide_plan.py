"""Scatter step: set up (or keep, when resuming) the partial store the part jobs of a slide fill."""

import json
import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.atomic import write_text
    from fastscan.restore.slide import prepare_slide, slide_options

    # The tiling is measured on the CPU here and recorded, so every part uses the same one.
    plan = prepare_slide(
        snakemake.input.slide,
        snakemake.params.store,
        model_dir=os.path.dirname(snakemake.input.weights),
        channel=snakemake.params.channel,
        device="cpu",
        threads=snakemake.threads,
        **slide_options(snakemake.params.restore, batch=False),
        # The store is the gather job's output, which Snakemake owns: an earlier restoration of
        # another input there is replaced (never a folder fastscan did not write).
        overwrite=True,
    )
    write_text(snakemake.output[0], json.dumps(plan, indent=1))
