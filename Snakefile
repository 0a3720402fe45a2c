# fastscan: restore fast video-rate laser-scanning microscopy with a GAN.
# Run from the repository root: snakemake --profile profiles/default --cores 16
from snakemake.utils import min_version

min_version("9.16")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/simulate.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/register.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/restore.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/ablation.smk"
include: "workflow/rules/export.smk"


rule all:
    default_target: True
    input:
        get_aggregates,
        get_all_slides,
        get_all_series,
        get_all_exports,


rule train_all:
    input:
        get_all_models,


rule restore_all:
    input:
        get_all_slides,
        get_all_series,


rule restore_sessions:
    input:
        get_all_series,
