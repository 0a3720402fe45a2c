"""Scatter step: set up (or keep, when resuming) the partial store the part jobs of a slide fill."""

import json
import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.atomic import write_text
    from fastscan.infer import prepare_slide

    cfg = snakemake.params.restore
    # The tiling is measured on the CPU here and recorded, so every part uses the same one.
    plan = prepare_slide(
        snakemake.input.slide,
        snakemake.params.store,
        model_dir=os.path.dirname(snakemake.input.weights),
        channel=snakemake.params.channel,
        level=cfg["level"],
        tile=cfg["tile"],
        overlap=cfg["overlap"],
        region=cfg["region"],
        pyramid_levels=cfg["pyramid_levels"],
        device="cpu",
        precision=cfg["precision"],
        threads=snakemake.threads,
    )
    write_text(snakemake.output[0], json.dumps(plan, indent=1))
