# Tiled LR/HR training pairs of one model's samples, split by FOV.


rule build_dataset:
    input:
        get_dataset_fovs,
    output:
        directory("results/dataset/{model}.zarr"),
    log:
        "logs/dataset/{model}.log",
    benchmark:
        "benchmarks/dataset/{model}.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        fovs=get_dataset_params,
        dataset=config["dataset"],
    script:
        "../scripts/build_dataset.py"
