# The acquisition simulator: writes the files a microscope would (demo and synthetic tests only).


rule simulate_fov:
    output:
        lr="results/simulated/{sample}/{session}/{fov}_lr.ome.tif",
        hr="results/simulated/{sample}/{session}/{fov}_hr.ome.tif",
        truth="results/simulated/{sample}/{session}/{fov}_truth.json",
    log:
        "logs/simulate/{sample}/{session}/{fov}.log",
    benchmark:
        "benchmarks/simulate/{sample}/{session}/{fov}.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        specimen=get_specimen,
        seed=get_fov_seed,
        sim=config["simulate"]["params"],
    script:
        "../scripts/simulate_fov.py"


rule simulate_slide:
    output:
        "results/simulated/slides/{slide}.ome.tif",
    log:
        "logs/simulate/slides/{slide}.log",
    benchmark:
        "benchmarks/simulate/slides/{slide}.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        spec=get_slide_spec,
        seed=config["seed"],
        sim=config["simulate"]["params"],
    script:
        "../scripts/simulate_slide.py"
