"""Fine-tune a trained GAN (generator and critic) on N pairs of a new sample."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.train import train_gan

    source = os.path.dirname(snakemake.input.generator)
    train_gan(
        dataset=snakemake.input.dataset[0],
        generator_dir=source,
        critic_dir=source,
        out_dir=os.path.dirname(snakemake.output.weights),
        config=snakemake.params.train,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
        checkpoint_dir=snakemake.params.checkpoints,
    )
