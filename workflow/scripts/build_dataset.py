"""Tile a model's registered train/val FOVs into one dataset store."""

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.dataset import FovEntry, build_dataset

    cfg = snakemake.params.dataset
    build_dataset(
        [FovEntry(**f) for f in snakemake.params.fovs],
        snakemake.output[0],
        tile=cfg["tile"],
        stride=cfg["stride"],
        max_frames=cfg["max_frames"],
        background=cfg["background"],
        percentiles=tuple(cfg["percentiles"]),
        correct_geometry=cfg["correct_geometry"],
        match_hr_intensity=cfg.get("match_hr_intensity", False),
    )
