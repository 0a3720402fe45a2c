"""One part of a scattered slide restoration: its share of the regions, into the shared store."""

import json
import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.atomic import write_text
    from fastscan.infer import restore_slide
    from fastscan.train import resolve_device

    cfg = snakemake.params.restore
    stats = restore_slide(
        snakemake.input.slide,
        snakemake.params.store,
        model_dir=os.path.dirname(snakemake.input.weights),
        channel=snakemake.params.channel,
        level=cfg["level"],
        tile=cfg["tile"],
        overlap=cfg["overlap"],
        batch_size=cfg["batch_size"],
        region=cfg["region"],
        pyramid_levels=cfg["pyramid_levels"],
        device=resolve_device(cfg["device"]),
        precision=cfg["precision"],
        threads=snakemake.threads,
        part=(int(snakemake.wildcards.part), int(cfg["parts"])),
    )
    write_text(snakemake.output[0], json.dumps(stats, indent=1))
