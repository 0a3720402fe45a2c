"""All three training stages on a subset of the training pairs (the data-size ablation)."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.train import train_critic, train_gan, train_generator

    root = os.path.dirname(os.path.dirname(snakemake.output.mse))
    common = dict(config=snakemake.params.train, seed=snakemake.params.seed, threads=snakemake.threads, checkpoint_dir=snakemake.params.checkpoints)
    dataset = snakemake.input.dataset[0]
    mse, critic, gan = (os.path.join(root, s) for s in ("mse", "critic", "gan"))
    train_generator(dataset=dataset, out_dir=mse, **common)
    train_critic(dataset=dataset, generator_dir=mse, out_dir=critic, **common)
    train_gan(dataset=dataset, generator_dir=mse, critic_dir=critic, out_dir=gan, **common)
