# Raw OIB/OIF/TIFF/OME-TIFF -> canonical per-FOV Zarr (LR series, HR target, metadata).


rule ingest_fov:
    input:
        unpack(get_raw_fov),
    output:
        temp(directory("results/ingest/{sample}/{session}/{fov}.zarr")),
    log:
        "logs/ingest/{sample}/{session}/{fov}.log",
    benchmark:
        "benchmarks/ingest/{sample}/{session}/{fov}.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        fov=get_ingest_params,
    script:
        "../scripts/ingest_fov.py"
