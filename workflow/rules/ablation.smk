# Optional experiment of the paper: the data-size ablation (Table III), all three training stages
# on subsets of a model's training pairs. Only planned when config has `ablation`.


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
        train=train_params("ablation"),
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
        restore=config_keys("restore", "frames", "tile", "overlap", "device", "ensemble"),
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
