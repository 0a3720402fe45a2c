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
    params:
        fovs=get_dataset_params,
        dataset=config["dataset"],
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        "../../envs/fastscan.yaml"
    script:
        "../scripts/build_dataset.py"
