# Optional experiment of the paper: fine-tuning a trained model on a new sample (Table IV). Only
# planned when config has `finetune`.


rule finetune_dataset:
    input:
        fovs=get_finetune_fovs,
        source=get_finetune_source_meta,
    output:
        directory("results/finetune/{name}/dataset_n{pairs}.zarr"),
    log:
        "logs/finetune/{name}/dataset_n{pairs}.log",
    benchmark:
        "benchmarks/finetune/{name}/dataset_n{pairs}.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        fovs=get_finetune_fov_params,
        # No correct_geometry: the source model's geometry is reused.
        dataset=config_keys("dataset", "tile", "stride", "max_frames", "background", "percentiles"),
        seed=config["seed"],
    script:
        "../scripts/subset_dataset.py"


rule finetune:
    input:
        unpack(get_finetune_source),
        dataset=rules.finetune_dataset.output,
    output:
        weights="results/finetune/{name}/n{pairs}/generator.pth",
        critic="results/finetune/{name}/n{pairs}/critic.pth",
        meta="results/finetune/{name}/n{pairs}/model.json",
        curves="results/finetune/{name}/n{pairs}/curves.tsv",
    log:
        "logs/finetune/{name}/n{pairs}.log",
    benchmark:
        "benchmarks/finetune/{name}/n{pairs}.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=1,
    params:
        train=get_finetune_train_config,
        seed=config["seed"],
        checkpoints="results/finetune/{name}/n{pairs}/checkpoints",
    script:
        "../scripts/finetune.py"


rule finetune_restore:
    input:
        unpack(get_finetune_restore_models),
        registered="results/register/{sample}/{session}/{fov}.zarr",
    output:
        directory("results/finetune/{name}/restore/{sample}/{session}/{fov}.zarr"),
    log:
        "logs/finetune/{name}/restore/{sample}/{session}/{fov}.log",
    benchmark:
        "benchmarks/finetune/{name}/restore/{sample}/{session}/{fov}.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    params:
        restore=config_keys("restore", "frames", "tile", "overlap", "device", "ensemble"),
    script:
        "../scripts/restore_models.py"


rule finetune_metrics:
    input:
        get_finetune_restored,
    output:
        metrics="results/finetune/{name}/metrics.tsv",
    log:
        "logs/finetune/{name}/metrics.log",
    benchmark:
        "benchmarks/finetune/{name}/metrics.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        stores=get_finetune_restored_params,
    script:
        "../scripts/metrics.py"
