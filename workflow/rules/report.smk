# Metrics of every method on the held-out FOVs, and the figures of the HTML report.


rule metrics:
    input:
        get_restored_fovs,
    output:
        metrics=report(
            "results/report/metrics.tsv",
            caption="../report/metrics.rst",
            category="Metrics",
        ),
    log:
        "logs/report/metrics.log",
    benchmark:
        "benchmarks/report/metrics.tsv"
    params:
        stores=get_restored_params,
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/fastscan.yaml"
    script:
        "../scripts/metrics.py"


rule report:
    input:
        metrics=rules.metrics.output.metrics,
        restored=get_restored_fovs,
        curves=get_curves,
        qc=rules.registration_qc.output,
    output:
        summary=report(
            "results/report/summary.tsv",
            caption="../report/summary.rst",
            category="Metrics",
        ),
        psnr=report(
            "results/report/psnr_boxes.png",
            caption="../report/psnr_boxes.rst",
            category="Metrics",
        ),
        ssim=report(
            "results/report/ssim_boxes.png",
            caption="../report/ssim_boxes.rst",
            category="Metrics",
        ),
        examples=report(
            "results/report/examples.png",
            caption="../report/examples.rst",
            category="Examples",
        ),
        curves=report(
            "results/report/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
        ),
        qc=report(
            "results/report/registration_qc.html",
            caption="../report/registration_qc.rst",
            category="Registration",
        ),
    log:
        "logs/report/figures.log",
    benchmark:
        "benchmarks/report/figures.tsv"
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../../envs/fastscan.yaml"
    script:
        "../scripts/report_figures.py"
