"""Stage 2: pretrain the critic on real HR tiles vs stage-1 outputs."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.train import train_critic

    train_critic(
        dataset=snakemake.input.dataset[0],
        generator_dir=os.path.dirname(snakemake.input.generator),
        out_dir=os.path.dirname(snakemake.output.weights),
        config=snakemake.params.train,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
        checkpoint_dir=snakemake.params.checkpoints,
    )
