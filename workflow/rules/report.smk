# Metrics of every method on the held-out FOVs, and the tables and figures of the HTML report.


rule metrics:
    input:
        get_restored_fovs,
    output:
        metrics=report(
            "results/report/metrics.tsv",
            caption="../report/metrics.rst",
            category="Metrics",
            labels={"item": "Per-image metrics", "form": "table (TSV)"},
        ),
    log:
        "logs/report/metrics.log",
    benchmark:
        "benchmarks/report/metrics.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        stores=get_restored_params,
    script:
        "../scripts/metrics.py"


rule report:
    input:
        metrics=rules.metrics.output.metrics,
        restored=get_restored_fovs,
        curves=get_curves,
        qc=rules.registration_qc.output,
        slides=get_all_slides,
        # What each model's GAN stage trained (model.json gan_steps), said under Table II.
        models=expand("results/models/{model}/model.json", model=config["models"]),
        # Optional: empty unless the config lists an ablation or fine-tuning runs.
        ablation=get_ablation_metrics,
        finetune=get_finetune_metrics,
    output:
        summary=report(
            "results/report/summary.tsv",
            caption="../report/summary.rst",
            category="Metrics",
            labels={"item": "Table II", "form": "table (TSV)"},
        ),
        summary_html=report(
            "results/report/summary.html",
            caption="../report/summary.rst",
            category="Metrics",
            labels={"item": "Table II", "form": "table (rendered)"},
        ),
        psnr=report(
            "results/report/psnr_boxes.png",
            caption="../report/psnr_boxes.rst",
            category="Metrics",
            labels={"item": "Fig. 5: PSNR", "form": "figure"},
        ),
        ssim=report(
            "results/report/ssim_boxes.png",
            caption="../report/ssim_boxes.rst",
            category="Metrics",
            labels={"item": "Fig. 5: SSIM", "form": "figure"},
        ),
        examples=report(
            "results/report/examples.png",
            caption="../report/examples.rst",
            category="Examples",
            labels={"item": "Fig. 4/7: example restorations", "form": "figure"},
        ),
        hallucination=report(
            "results/report/hallucination.png",
            caption="../report/hallucination.rst",
            category="Examples",
            labels={"item": "GAN departures from the MSE generator", "form": "figure"},
        ),
        hallucination_tsv=report(
            "results/report/hallucination.tsv",
            caption="../report/hallucination_table.rst",
            category="Examples",
            labels={"item": "GAN departures per image", "form": "table (TSV)"},
        ),
        hallucination_html=report(
            "results/report/hallucination.html",
            caption="../report/hallucination_table.rst",
            category="Examples",
            labels={"item": "GAN departures per image", "form": "table (rendered)"},
        ),
        ablation=report(
            "results/report/ablation.tsv",
            caption="../report/ablation.rst",
            category="Data-size ablation",
            labels={"item": "Table III", "form": "table (TSV)"},
        ),
        ablation_html=report(
            "results/report/ablation.html",
            caption="../report/ablation.rst",
            category="Data-size ablation",
            labels={"item": "Table III", "form": "table (rendered)"},
        ),
        ablation_png=report(
            "results/report/ablation.png",
            caption="../report/ablation_figure.rst",
            category="Data-size ablation",
            labels={"item": "Fig. 6", "form": "figure"},
        ),
        generalisation=report(
            "results/report/generalisation.tsv",
            caption="../report/generalisation.rst",
            category="Generalisation",
            labels={"item": "Table IV", "form": "table (TSV)"},
        ),
        generalisation_html=report(
            "results/report/generalisation.html",
            caption="../report/generalisation.rst",
            category="Generalisation",
            labels={"item": "Table IV", "form": "table (rendered)"},
        ),
        curves=report(
            "results/report/training_curves.png",
            caption="../report/training_curves.rst",
            category="Training",
            labels={"item": "Training curves", "form": "figure"},
        ),
        qc=report(
            "results/report/registration_qc.html",
            caption="../report/registration_qc.rst",
            category="Registration",
            labels={"item": "Registration QC", "form": "table (rendered)"},
        ),
        slides=report(
            "results/report/slides.png",
            caption="../report/slides.rst",
            category="Restored slides",
            labels={"item": "Restored slides", "form": "figure"},
        ),
    log:
        "logs/report/figures.log",
    benchmark:
        "benchmarks/report/figures.tsv"
    conda:
        "../../envs/fastscan.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        example_fovs=config["report"]["example_fovs"],
    script:
        "../scripts/report.py"
