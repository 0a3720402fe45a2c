"""A dataset of at most N training pairs: fine-tuning on a new sample (rule finetune_dataset), or the
data-size ablation (rule ablation_dataset)."""

import json

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.dataset import FovEntry, build_dataset

    cfg = snakemake.params.dataset
    kwargs = {}
    if "source" in snakemake.input.keys():
        # Fine-tuning continues a trained network: it must see intensities and geometry exactly as
        # that network was trained on, so the source model's normalisation, geometry and reading
        # of the HR targets are reused.
        with open(snakemake.input.source) as fh:
            source = json.load(fh)
        kwargs["normalisation"] = source["normalisation"]
        kwargs["correct_geometry"] = bool(source.get("geometry", {}).get("correct", False))
        kwargs["match_hr_intensity"] = source.get("hr_intensity", "acquired") == "matched"
    else:
        kwargs["correct_geometry"] = cfg["correct_geometry"]
        kwargs["match_hr_intensity"] = cfg.get("match_hr_intensity", False)
    build_dataset(
        [FovEntry(**f) for f in snakemake.params.fovs],
        snakemake.output[0],
        tile=cfg["tile"],
        stride=cfg["stride"],
        max_frames=cfg["max_frames"],
        background=cfg["background"],
        percentiles=tuple(cfg["percentiles"]),
        max_tiles=int(snakemake.wildcards.pairs),
        seed=snakemake.params.seed,
        **kwargs,
    )
