"""One part of a scattered slide restoration: its share of the regions, into the shared store."""

import json
import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.atomic import write_text
    from fastscan.restore.slide import restore_slide, slide_options
    from fastscan.train import resolve_device

    # restore.batch_size and compile change speed and memory, never the result: read from the
    # config, not params (a rerun trigger), so that changing them reruns nothing.
    cfg = {**snakemake.params.restore, **{k: snakemake.config["restore"][k] for k in ("batch_size", "compile")}}
    stats = restore_slide(
        snakemake.input.slide,
        snakemake.params.store,
        model_dir=os.path.dirname(snakemake.input.weights),
        channel=snakemake.params.channel,
        device=resolve_device(cfg["device"]),
        threads=snakemake.threads,
        part=(int(snakemake.wildcards.part), int(cfg["parts"])),
        # The store is the gather job's output, which Snakemake owns: an earlier restoration of
        # another input there is replaced (never a folder fastscan did not write).
        overwrite=True,
        **slide_options(cfg),
    )
    write_text(snakemake.output[0], json.dumps(stats, indent=1))
