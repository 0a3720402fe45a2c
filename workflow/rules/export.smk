# bioimage.io package of each trained model, for Fiji (deepImageJ), napari and ilastik.


rule export_model:
    input:
        weights="results/models/{model}/generator.pth",
        meta="results/models/{model}/model.json",
        metrics="results/report/metrics.tsv",
    output:
        "results/models/{model}/{model}.bioimageio.zip",
    log:
        "logs/export/{model}.log",
    benchmark:
        "benchmarks/export/{model}.tsv"
    conda:
        "../../envs/fastscan-ml.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        export=config["export"],
    script:
        "../scripts/export_model.py"
