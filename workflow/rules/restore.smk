# Restoration with trained models: held-out FOVs (for the metrics), whole slides and video-rate
# series of new sessions (OME-Zarr). Slides scatter into restore.parts jobs when it is above 1.


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
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=1,
    params:
        # Always float32 (restore.precision is for slides and series); restore.batch_size: see config_keys.
        restore=config_keys("restore", "frames", "tile", "overlap", "device", "ensemble"),
    script:
        "../scripts/restore_fov.py"


rule restore_slide_plan:
    # Scatter step (restore.parts > 1): resolve the tiling once and set up the store the parts fill.
    input:
        unpack(get_slide_model_files),
        slide=get_slide_input,
    output:
        temp("results/restore/slides/{slide}.parts/plan.json"),
    log:
        "logs/restore/slides/{slide}.plan.log",
    benchmark:
        "benchmarks/restore/slides/{slide}.plan.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        # The tiling is measured on the CPU whatever restore.device says.
        restore=config_keys("restore", "level", "tile", "overlap", "region", "pyramid_levels", "precision", "ensemble"),
        channel=get_slide_channel,
        store="results/restore/slides/{slide}.ome.zarr",
    script:
        "../scripts/restore_slide_plan.py"


rule restore_slide_part:
    # One chunk-aligned share of the slide's regions, written into the store set up by the plan.
    input:
        unpack(get_slide_model_files),
        slide=get_slide_input,
        plan=rules.restore_slide_plan.output[0],
    output:
        temp("results/restore/slides/{slide}.parts/{part}.json"),
    log:
        "logs/restore/slides/{slide}.part{part}.log",
    benchmark:
        "benchmarks/restore/slides/{slide}.part{part}.tsv"
    wildcard_constraints:
        part=r"[0-9]+",
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    params:
        restore=config_keys("restore", "level", "tile", "overlap", "region", "pyramid_levels", "precision", "device", "parts", "ensemble"),
        channel=get_slide_channel,
        store="results/restore/slides/{slide}.ome.zarr",
    script:
        "../scripts/restore_slide_part.py"


rule restore_slide:
    # With restore.parts = 1 the whole slide in this job; otherwise the gather step after the parts.
    input:
        unpack(get_slide_model_files),
        slide=get_slide_input,
        parts=get_slide_parts,
    output:
        directory("results/restore/slides/{slide}.ome.zarr"),
    log:
        "logs/restore/slides/{slide}.log",
    benchmark:
        "benchmarks/restore/slides/{slide}.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=get_restore_slide_gpu,
    params:
        restore=config_keys("restore", "level", "tile", "overlap", "region", "pyramid_levels", "precision", "device", "ensemble"),
        channel=get_slide_channel,
    script:
        "../scripts/restore_slide.py"


rule restore_series:
    # A video-rate series without HR target (or marked restore=yes) restored frame by frame.
    input:
        unpack(get_series_input),
    output:
        directory("results/restore/series/{model}/{sample}/{session}/{fov}.ome.zarr"),
    log:
        "logs/restore/series/{model}/{sample}/{session}/{fov}.log",
    benchmark:
        "benchmarks/restore/series/{model}/{sample}/{session}/{fov}.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=1,
    params:
        restore=config_keys("restore", "tile", "overlap", "pyramid_levels", "precision", "device", "ensemble"),
        series=get_series_params,
    script:
        "../scripts/restore_series.py"
