# Drift correction of each video-rate series and alignment of its HR target, with QC.


rule register_fov:
    input:
        rules.ingest_fov.output,
    output:
        store=directory("results/register/{sample}/{session}/{fov}.zarr"),
        qc="results/register/{sample}/{session}/{fov}.qc.tsv",
    log:
        "logs/register/{sample}/{session}/{fov}.log",
    benchmark:
        "benchmarks/register/{sample}/{session}/{fov}.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        register=config["register"],
    script:
        "../scripts/register_fov.py"


rule registration_qc:
    input:
        get_all_registration_qc,
    output:
        report(
            "results/qc/registration.tsv",
            caption="../report/registration_qc.rst",
            category="Registration",
        ),
    log:
        "logs/qc/registration.log",
    benchmark:
        "benchmarks/qc/registration.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/registration_qc.py"
