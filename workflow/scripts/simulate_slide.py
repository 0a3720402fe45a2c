"""Simulate a whole slide acquired in the fast mode."""

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.simulate import write_slide

    spec = snakemake.params.spec
    write_slide(
        snakemake.output[0],
        shape_px=tuple(spec["shape_px"]),
        specimen=spec.get("specimen", "tissue"),
        seed=snakemake.params.seed,
        params=snakemake.params.sim,
    )
