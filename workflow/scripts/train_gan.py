"""Stage 3: train generator and critic jointly as a GAN."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.train import train_gan

    train_gan(
        dataset=snakemake.input.dataset[0],
        generator_dir=os.path.dirname(snakemake.input.generator),
        critic_dir=os.path.dirname(snakemake.input.critic),
        out_dir=os.path.dirname(snakemake.output.weights),
        config=snakemake.params.train,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
        checkpoint_dir=snakemake.params.checkpoints,
    )
