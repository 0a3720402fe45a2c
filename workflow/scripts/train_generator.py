"""Stage 1: train the U-Net generator with MSE loss."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.train import train_generator

    train_generator(
        dataset=snakemake.input.dataset[0],
        out_dir=os.path.dirname(snakemake.output.weights),
        config=snakemake.params.train,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
        checkpoint_dir=snakemake.params.checkpoints,
        # train.pretrain: simulated: start from the generator pretrained on the calibrated simulator.
        init=os.path.dirname(snakemake.input.init[0]) if snakemake.input.init else None,
    )
