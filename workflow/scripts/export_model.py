"""Write the bioimage.io package of one trained model (fastscan.export.export_model)."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    import torch

    from fastscan.export import export_model

    torch.set_num_threads(snakemake.threads)
    cfg = snakemake.params.export
    export_model(
        os.path.dirname(snakemake.input.weights),
        snakemake.output[0],
        name=cfg.get("name") or f"fastscan {snakemake.wildcards.model}",
        description=cfg.get("description"),
        authors=cfg.get("authors"),
        license=cfg.get("license"),
        tags=cfg.get("tags"),
        version=cfg.get("version"),
        metrics=snakemake.input.metrics,
        onnx=cfg.get("onnx", True),
        test=cfg.get("test", True),
    )
