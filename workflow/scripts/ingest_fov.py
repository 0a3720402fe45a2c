"""Read one FOV's raw files into the canonical per-FOV Zarr store."""

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.io import ingest_fov
    from fastscan.io.memory import set_job_limit

    # mem_mb only schedules jobs; the readers compare each file's declared size with it.
    set_job_limit(getattr(snakemake.resources, "mem_mb", None), rule=snakemake.rule)

    fov = snakemake.params.fov
    ingest_fov(
        out=snakemake.output[0],
        sample=snakemake.wildcards.sample,
        session=snakemake.wildcards.session,
        fov=snakemake.wildcards.fov,
        **fov,
    )
