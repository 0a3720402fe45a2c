# The paper's three training stages: generator (MSE) -> critic -> GAN; with train.pretrain:
# simulated, the generator starts from one pretrained on the simulator calibrated to the
# training FOVs' microscope.


rule pretrain:
    input:
        dataset=rules.build_dataset.output,
        fovs=get_train_fovs,
    output:
        weights="results/pretrain/{model}/generator.pth",
        meta="results/pretrain/{model}/model.json",
        dataset=directory("results/pretrain/{model}/dataset.zarr"),
    log:
        "logs/pretrain/{model}.log",
    benchmark:
        "benchmarks/pretrain/{model}.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=1,
    params:
        train=train_params("pretrain"),
        register=config["register"],
        seed=config["seed"],
        checkpoints="results/pretrain/{model}/checkpoints",
    script:
        "../scripts/pretrain.py"


rule train_generator:
    input:
        dataset=rules.build_dataset.output,
        init=get_pretrained,
    output:
        weights="results/train/{model}/mse/generator.pth",
        meta="results/train/{model}/mse/model.json",
        curves="results/train/{model}/mse/curves.tsv",
    log:
        "logs/train/{model}/generator.log",
    benchmark:
        "benchmarks/train/{model}/generator.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=1,
    params:
        train=train_params("stages"),
        seed=config["seed"],
        checkpoints="results/train/{model}/checkpoints",
    script:
        "../scripts/train_generator.py"


rule train_critic:
    input:
        dataset=rules.build_dataset.output,
        generator=rules.train_generator.output.weights,
        generator_meta=rules.train_generator.output.meta,
    output:
        weights="results/train/{model}/critic/critic.pth",
        meta="results/train/{model}/critic/model.json",
        curves="results/train/{model}/critic/curves.tsv",
    log:
        "logs/train/{model}/critic.log",
    benchmark:
        "benchmarks/train/{model}/critic.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=240,
        gpu=1,
    params:
        train=train_params("stages"),
        seed=config["seed"],
        checkpoints="results/train/{model}/checkpoints",
    script:
        "../scripts/train_critic.py"


rule train_gan:
    input:
        dataset=rules.build_dataset.output,
        generator=rules.train_generator.output.weights,
        generator_meta=rules.train_generator.output.meta,
        critic=rules.train_critic.output.weights,
        critic_meta=rules.train_critic.output.meta,
    output:
        weights=protected("results/models/{model}/generator.pth"),
        critic="results/models/{model}/critic.pth",
        meta="results/models/{model}/model.json",
        curves="results/models/{model}/curves.tsv",
    log:
        "logs/train/{model}/gan.log",
    benchmark:
        "benchmarks/train/{model}/gan.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=720,
        gpu=1,
    params:
        train=train_params("stages"),
        seed=config["seed"],
        checkpoints="results/train/{model}/checkpoints",
    script:
        "../scripts/train_gan.py"
