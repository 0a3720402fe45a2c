# Validation, sheet loading and input functions only (no rules, no heavy imports).
import glob

from snakemake.utils import validate

from fastscan.sheets import (
    NAME_PATTERN,
    SheetError,
    assign_splits,
    fov_fraction,
    load_samples,
    load_slides,
)

validate(config, schema="../schemas/config.schema.yaml")

SAMPLES = load_samples(config["samples"])
validate(SAMPLES, schema="../schemas/samples.schema.yaml")
SAMPLES["split"] = assign_splits(
    SAMPLES,
    seed=config["seed"],
    val_fraction=config["split"]["val_fraction"],
    test_fraction=config["split"]["test_fraction"],
)

SLIDES = load_slides(config["slides"])
validate(SLIDES, schema="../schemas/slides.schema.yaml")

for _model, _spec in config["models"].items():
    _unknown = sorted(set(_spec["samples"]) - set(SAMPLES["sample"]))
    if _unknown:
        raise SheetError(
            f"config models.{_model}.samples names {_unknown}, which {config['samples']} does not have"
        )
for _slide, _row in SLIDES.iterrows():
    _model = _row["model"] or config["restore"].get("model", "")
    if _model not in config["models"]:
        raise SheetError(
            f"{config['slides']}: slide {_slide!r} uses model {_model!r}, not one of config models "
            f"{sorted(config['models'])} (set the model column or restore.model)"
        )


wildcard_constraints:
    sample=NAME_PATTERN,
    session=NAME_PATTERN,
    fov=NAME_PATTERN,
    model=NAME_PATTERN,
    slide=NAME_PATTERN,


GLOB_CHARS = set("*?[")


def fov_key(wildcards):
    return f"{wildcards.sample}/{wildcards.session}/{wildcards.fov}"


def fov_row(wildcards):
    return SAMPLES.loc[fov_key(wildcards)]


def fov_paths(rows, pattern):
    return [
        pattern.format(sample=r["sample"], session=r["session"], fov=r["fov"])
        for _, r in rows.iterrows()
    ]


def get_raw_fov(wildcards):
    """The raw LR series (a file, or the files of a glob) and HR target of one FOV."""
    row = fov_row(wildcards)
    lr = row["lr"]
    if GLOB_CHARS & set(lr):
        lr = sorted(glob.glob(lr))
        if not lr:
            raise SheetError(f"{config['samples']}: FOV {fov_key(wildcards)}: no file matches {row['lr']!r}")
    return {"lr": lr, "hr": row["hr"]}


def get_ingest_params(wildcards):
    row = fov_row(wildcards)
    return {
        "lr": row["lr"],
        "hr": row["hr"],
        "channel": int(row["channel"]),
        "lr_pixel_size_um": float(row["lr_pixel_size_um"]) if row["lr_pixel_size_um"] else None,
        "hr_pixel_size_um": float(row["hr_pixel_size_um"]) if row["hr_pixel_size_um"] else None,
        "scale": config["ingest"]["scale"],
    }


def get_specimen(wildcards):
    specimens = config["simulate"]["specimens"]
    if wildcards.sample not in specimens:
        raise SheetError(
            f"sample {wildcards.sample!r} points at simulated data but config simulate.specimens "
            f"has no specimen kind for it (known: {sorted(specimens)})"
        )
    return specimens[wildcards.sample]


def get_fov_seed(wildcards):
    return int(fov_fraction(wildcards.sample, wildcards.session, wildcards.fov, seed=config["seed"]) * 2**31)


def get_slide_spec(wildcards):
    slides = config["simulate"]["slides"]
    if wildcards.slide not in slides:
        raise SheetError(f"no simulate.slides entry for simulated slide {wildcards.slide!r}")
    return slides[wildcards.slide]


def model_rows(model, splits):
    samples = config["models"][model]["samples"]
    return SAMPLES[SAMPLES["sample"].isin(samples) & SAMPLES["split"].isin(splits)]


def get_all_registration_qc(wildcards):
    return fov_paths(SAMPLES, "results/register/{sample}/{session}/{fov}.qc.tsv")


def get_dataset_fovs(wildcards):
    return fov_paths(model_rows(wildcards.model, ["train", "val"]), "results/register/{sample}/{session}/{fov}.zarr")


def get_dataset_params(wildcards):
    rows = model_rows(wildcards.model, ["train", "val"])
    return [
        {"path": p, "sample": r["sample"], "session": r["session"], "fov": r["fov"], "split": r["split"]}
        for p, (_, r) in zip(fov_paths(rows, "results/register/{sample}/{session}/{fov}.zarr"), rows.iterrows())
    ]


def test_fov_models():
    """(model, sample, session, fov) of every held-out test FOV, per model that covers its sample."""
    out = []
    for model in config["models"]:
        for _, r in model_rows(model, ["test"]).iterrows():
            out.append((model, r["sample"], r["session"], r["fov"]))
    return out


def get_restored_fovs(wildcards):
    return [f"results/restore/fov/{m}/{s}/{se}/{f}.zarr" for m, s, se, f in test_fov_models()]


def get_curves(wildcards):
    return [f"results/train/{m}/{stage}/curves.tsv" for m in config["models"] for stage in ("mse", "critic")] + [
        f"results/models/{m}/curves.tsv" for m in config["models"]
    ]


def get_slide_input(wildcards):
    return SLIDES.loc[wildcards.slide, "path"]


def get_slide_model(wildcards):
    return SLIDES.loc[wildcards.slide, "model"] or config["restore"]["model"]


def get_slide_model_files(wildcards):
    model = get_slide_model(wildcards)
    return {"weights": f"results/models/{model}/generator.pth", "meta": f"results/models/{model}/model.json"}


def get_all_slides(wildcards):
    return [f"results/restore/slides/{s}.ome.zarr" for s in SLIDES.index]


def get_all_models(wildcards):
    return [f"results/models/{m}/generator.pth" for m in config["models"]]


def get_slide_channel(wildcards):
    return int(SLIDES.loc[wildcards.slide, "channel"])


def get_restored_params(wildcards):
    return [
        {"restored": f"results/restore/fov/{m}/{s}/{se}/{f}.zarr", "model": m, "sample": s, "session": se, "fov": f}
        for m, s, se, f in test_fov_models()
    ]


def get_ablation_metrics(wildcards):
    """Per-image metrics of the data-size ablation (Table III), only for models listed under config ablation."""
    return [f"results/ablation/{m}/metrics.tsv" for m in config.get("ablation", {}).get("models", [])]


def get_finetune_metrics(wildcards):
    """Per-image metrics of each fine-tuning run (Table IV) named under config finetune."""
    return [f"results/finetune/{n}/metrics.tsv" for n in config.get("finetune", {})]
