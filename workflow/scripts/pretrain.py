"""train.pretrain: simulated: the generator pretrained on the simulator calibrated to the model's
training FOVs (their microscope's noise, scan and optics), which stage 1 then starts from."""

import os

from fastscan.logs import rule_logging

with rule_logging(snakemake.log[0]):
    from fastscan.pretrain import pretrain_generator

    pretrain_generator(
        list(snakemake.input.fovs),
        snakemake.input.dataset[0],
        os.path.dirname(snakemake.output.weights),
        config=snakemake.params.train,
        seed=snakemake.params.seed,
        threads=snakemake.threads,
        checkpoint_dir=snakemake.params.checkpoints,
        register=snakemake.params.register,
    )
