# Optional experiments of the paper: fine-tuning a trained model on a new sample (Table IV) and
# the data-size ablation (Table III). Only planned when config has `finetune` / `ablation`.


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
        dataset=config["dataset"],
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
        restore=config["restore"],
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


rule ablation_dataset:
    input:
        fovs=get_dataset_fovs,
    output:
        directory("results/ablation/{model}/dataset_n{pairs}.zarr"),
    log:
        "logs/ablation/{model}/dataset_n{pairs}.log",
    benchmark:
        "benchmarks/ablation/{model}/dataset_n{pairs}.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        fovs=get_dataset_params,
        dataset=config["dataset"],
        seed=config["seed"],
    script:
        "../scripts/subset_dataset.py"


rule ablation_train:
    input:
        dataset=rules.ablation_dataset.output,
    output:
        mse="results/ablation/{model}/n{pairs}/mse/generator.pth",
        gan="results/ablation/{model}/n{pairs}/gan/generator.pth",
        gan_meta="results/ablation/{model}/n{pairs}/gan/model.json",
    log:
        "logs/ablation/{model}/n{pairs}.log",
    benchmark:
        "benchmarks/ablation/{model}/n{pairs}.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=1440,
        gpu=1,
    params:
        train=config["train"],
        seed=config["seed"],
        checkpoints="results/ablation/{model}/n{pairs}/checkpoints",
    script:
        "../scripts/ablation_train.py"


rule ablation_restore:
    input:
        registered="results/register/{sample}/{session}/{fov}.zarr",
        mse=rules.ablation_train.output.mse,
        gan=rules.ablation_train.output.gan,
    output:
        directory("results/ablation/{model}/n{pairs}/restore/{sample}/{session}/{fov}.zarr"),
    log:
        "logs/ablation/{model}/n{pairs}/restore/{sample}/{session}/{fov}.log",
    benchmark:
        "benchmarks/ablation/{model}/n{pairs}/restore/{sample}/{session}/{fov}.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    params:
        restore=config["restore"],
    script:
        "../scripts/restore_models.py"


rule ablation_metrics:
    input:
        get_ablation_restored,
    output:
        metrics="results/ablation/{model}/metrics.tsv",
    log:
        "logs/ablation/{model}/metrics.log",
    benchmark:
        "benchmarks/ablation/{model}/metrics.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        stores=get_ablation_restored_params,
    script:
        "../scripts/metrics.py"
