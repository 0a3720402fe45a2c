"""Read one FOV's raw files into the canonical per-FOV Zarr store."""

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.io import ingest_fov

    fov = snakemake.params.fov
    ingest_fov(
        out=snakemake.output[0],
        sample=snakemake.wildcards.sample,
        session=snakemake.wildcards.session,
        fov=snakemake.wildcards.fov,
        **fov,
    )
