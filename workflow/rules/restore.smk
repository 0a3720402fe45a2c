# Restoration with trained models: held-out FOVs (for the metrics) and whole slides (OME-Zarr).


rule restore_fov:
    input:
        registered=rules.register_fov.output.store,
        mse=rules.train_generator.output.weights,
        mse_meta=rules.train_generator.output.meta,
        gan=rules.train_gan.output.weights,
        gan_meta=rules.train_gan.output.meta,
    output:
        directory("results/restore/fov/{model}/{sample}/{session}/{fov}.zarr"),
    log:
        "logs/restore/fov/{model}/{sample}/{session}/{fov}.log",
    benchmark:
        "benchmarks/restore/fov/{model}/{sample}/{session}/{fov}.tsv"
    params:
        restore=config["restore"],
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    conda:
        "../../envs/fastscan-ml.yaml"
    script:
        "../scripts/restore_fov.py"


rule restore_slide:
    input:
        unpack(get_slide_model_files),
        slide=get_slide_input,
    output:
        directory("results/restore/slides/{slide}.ome.zarr"),
    log:
        "logs/restore/slides/{slide}.log",
    benchmark:
        "benchmarks/restore/slides/{slide}.tsv"
    params:
        restore=config["restore"],
        channel=get_slide_channel,
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    conda:
        "../../envs/fastscan-ml.yaml"
    script:
        "../scripts/restore_slide.py"
