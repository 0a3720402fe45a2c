# Validation, sheet loading and input functions only (no rules, no heavy imports).
import glob
import sys

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
# Series to restore: rows without HR target (new sessions) and rows marked restore=yes. Only rows
# with a target take part in registration, training and the metrics.
SERIES = SAMPLES[(SAMPLES["hr"] == "") | (SAMPLES["restore"] == "yes")].copy()
SAMPLES = SAMPLES[SAMPLES["hr"] != ""].copy()
SAMPLES["split"] = assign_splits(
    SAMPLES,
    seed=config["seed"],
    val_fraction=config["split"]["val_fraction"],
    test_fraction=config["split"]["test_fraction"],
)

SLIDES = load_slides(config["slides"])
validate(SLIDES, schema="../schemas/slides.schema.yaml")

# The shipped config/config.yaml names no model: a --configfile is merged on top of it and can add
# keys to `models:` but never remove one, so a demo model there would be trained on every user's
# data. Pairs without a model would only be registered; say so before anything runs.
if not config["models"] and not SAMPLES.empty:
    _samples = sorted(set(SAMPLES["sample"]))
    raise SheetError(
        f"{config['samples']} has {len(SAMPLES)} FOV(s) with an HR target (samples {_samples}), but no model is "
        "trained on them: config/config.yaml (or the --configfile you pass) names no model under the `models:` "
        f"key. Add one, e.g.\nmodels:\n  my_model:\n    samples: [{', '.join(_samples)}]"
    )
# Slides without a model column and series of samples no model is trained on use restore.model;
# with a single model there is nothing to choose, so a first run needs no more than its name.
DEFAULT_MODEL = config["restore"].get("model") or (next(iter(config["models"])) if len(config["models"]) == 1 else "")
if SAMPLES.empty and SERIES.empty and SLIDES.empty:
    print(
        f"fastscan: nothing to do, {config['samples']} and {config['slides']} have no rows. Fill {config['samples']} "
        "(one row per field of view: sample, session, fov, lr, hr; see config/README.md) and name a model under "
        "`models:` in config/config.yaml or your --configfile; `make demo` runs the synthetic demo.",
        file=sys.stderr,
    )

for _model, _spec in config["models"].items():
    _unknown = sorted(set(_spec["samples"]) - set(SAMPLES["sample"]))
    if _unknown:
        raise SheetError(f"config models.{_model}.samples names {_unknown}, which {config['samples']} does not have")
for _name, _spec in config.get("finetune", {}).items():
    if _spec["model"] not in config["models"]:
        raise SheetError(f"config finetune.{_name}.model is {_spec['model']!r}, not one of config models {sorted(config['models'])}")
    _rows = SAMPLES[SAMPLES["sample"] == _spec["sample"]]
    for _split in ("train", "val", "test"):
        if not (_rows["split"] == _split).any():
            raise SheetError(
                f"config finetune.{_name}: sample {_spec['sample']!r} has no {_split} FOV in {config['samples']} "
                "(fine-tuning needs train and val FOVs of the new sample, and test FOVs to evaluate on)"
            )
for _model in config.get("ablation", {}).get("models", []):
    if _model not in config["models"]:
        raise SheetError(f"config ablation.models names {_model!r}, not one of config models {sorted(config['models'])}")
for _slide, _row in SLIDES.iterrows():
    _model = _row["model"] or DEFAULT_MODEL
    if _model not in config["models"]:
        raise SheetError(
            f"{config['slides']}: slide {_slide!r} uses model {_model!r}, not one of config models "
            f"{sorted(config['models'])} (set the model column or restore.model; with one model it is the default)"
        )


wildcard_constraints:
    sample=NAME_PATTERN,
    session=NAME_PATTERN,
    fov=NAME_PATTERN,
    model=NAME_PATTERN,
    slide=NAME_PATTERN,
    name=NAME_PATTERN,
    pairs=r"\d+",


GLOB_CHARS = set("*?[")


def config_keys(section, *keys):
    """The keys of config ``section`` that a rule's script reads, as the rule's params.

    Snakemake reruns a job whose params changed: a rule given a whole section would rerun for any of
    its keys (restore.region, a setting of whole-slide restoration, rerunning the FOV restorations
    and the metrics). Speed and memory knobs that never change a result
    (restore.batch_size, restore.frames_per_chunk, restore.compile) are no params at all: the scripts read them from
    the config, so changing them reruns nothing.
    """
    return {key: config[section][key] for key in keys}


def fov_key(wildcards):
    return f"{wildcards.sample}/{wildcards.session}/{wildcards.fov}"


def fov_row(wildcards):
    return SAMPLES.loc[fov_key(wildcards)]


def fov_paths(rows, pattern):
    return [pattern.format(sample=r["sample"], session=r["session"], fov=r["fov"]) for _, r in rows.iterrows()]


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
        # None lets ingestion refuse an LR/HR pair whose channel counts differ instead of guessing.
        "channel": int(row["channel"]) if row["channel_given"] else None,
        "lr_pixel_size_um": float(row["lr_pixel_size_um"]) if row["lr_pixel_size_um"] else None,
        "hr_pixel_size_um": float(row["hr_pixel_size_um"]) if row["hr_pixel_size_um"] else None,
        "scale": config["ingest"]["scale"],
    }


def get_specimen(wildcards):
    specimens = config["simulate"]["specimens"]
    if wildcards.sample not in specimens:
        raise SheetError(
            f"sample {wildcards.sample!r} points at simulated data but config simulate.specimens has no specimen kind for it (known: {sorted(specimens)})"
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


def get_aggregates(wildcards):
    """The QC table, metrics and report: only for a sheet with LR/HR pairs (an empty one plans nothing)."""
    if SAMPLES.empty:
        return []
    return ["results/qc/registration.tsv", "results/report/metrics.tsv", "results/report/summary.tsv"]


def get_all_registration_qc(wildcards):
    return fov_paths(SAMPLES, "results/register/{sample}/{session}/{fov}.qc.tsv")


def get_dataset_fovs(wildcards):
    return fov_paths(model_rows(wildcards.model, ["train", "val"]), "results/register/{sample}/{session}/{fov}.zarr")


def train_params(job):
    """The ``train`` section as a training rule's params, so that no rule reruns for settings it
    does not use: the pretraining leaves out the critic and GAN schedules; the three stages leave
    out ``pretrain_set`` unless they pretrain; the ablation and the fine-tuning, which train from
    scratch and from the sample's GAN, leave out both pretraining keys, and so do the three stages
    without pretraining (their params are then those of runs made before pretraining existed).
    ``augment.motion`` is left out while 0 and ``generator.loss`` while ``mse``, for the same
    reason."""
    train = dict(config["train"])
    if not train["augment"].get("motion"):
        train["augment"] = {k: v for k, v in train["augment"].items() if k != "motion"}
    if train["generator"].get("loss", "mse") == "mse":
        train["generator"] = {k: v for k, v in train["generator"].items() if k != "loss"}
    if job == "pretrain":
        return {k: v for k, v in train.items() if k not in ("critic", "gan")}
    if job in ("ablation", "finetune") or train["pretrain"] != "simulated":
        del train["pretrain"], train["pretrain_set"]
    return train


def get_train_fovs(wildcards):
    """The registered train FOVs of a model: the microscope the simulator is calibrated to."""
    return fov_paths(model_rows(wildcards.model, ["train"]), "results/register/{sample}/{session}/{fov}.zarr")


def get_pretrained(wildcards):
    """The pretrained generator stage 1 starts from (train.pretrain: simulated), else nothing."""
    return [f"results/pretrain/{wildcards.model}/generator.pth"] if config["train"]["pretrain"] == "simulated" else []


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
    return SLIDES.loc[wildcards.slide, "model"] or DEFAULT_MODEL


def get_slide_model_files(wildcards):
    model = get_slide_model(wildcards)
    return {"weights": f"results/models/{model}/generator.pth", "meta": f"results/models/{model}/model.json"}


def get_all_slides(wildcards):
    return [f"results/restore/slides/{s}.ome.zarr" for s in SLIDES.index]


def get_all_models(wildcards):
    return [f"results/models/{m}/generator.pth" for m in config["models"]]


def get_all_exports(wildcards):
    """The bioimage.io package of every trained model (rule export_model)."""
    return [f"results/models/{m}/{m}.bioimageio.zip" for m in config["models"]]


def get_slide_channel(wildcards):
    """A channel index, or a list / ``all`` (as written in the sheet) for several planes."""
    return SLIDES.loc[wildcards.slide, "channel"]


def get_slide_parts(wildcards):
    """Part results gathered by restore_slide; none when the slide is restored in one job."""
    n = int(config["restore"]["parts"])
    return [f"results/restore/slides/{wildcards.slide}.parts/{i}.json" for i in range(n)] if n > 1 else []


def get_restore_slide_gpu(wildcards):
    """The single-job restore needs the GPU; the gather step after scattered parts does not."""
    return 0 if int(config["restore"]["parts"]) > 1 else 1


def series_models(row):
    """Models that restore a series: those trained on its sample, else restore.model."""
    models = [m for m, spec in config["models"].items() if row["sample"] in spec["samples"]]
    if not models and DEFAULT_MODEL not in config["models"]:
        raise SheetError(
            f"{config['samples']}: series {row['sample']}/{row['session']}/{row['fov']} has no model: no config models "
            "entry lists its sample and restore.model is not set to one of config models"
        )
    return models or [DEFAULT_MODEL]


def get_all_series(wildcards):
    return [f"results/restore/series/{m}/{r['sample']}/{r['session']}/{r['fov']}.ome.zarr" for _, r in SERIES.iterrows() for m in series_models(r)]


def get_series_input(wildcards):
    """The raw LR series (a file, or the files of a glob) and the model of one restored series."""
    row = SERIES.loc[fov_key(wildcards)]
    lr = row["lr"]
    if GLOB_CHARS & set(lr):
        lr = sorted(glob.glob(lr))
        if not lr:
            raise SheetError(f"{config['samples']}: FOV {fov_key(wildcards)}: no file matches {row['lr']!r}")
    model = wildcards.model
    return {"lr": lr, "weights": f"results/models/{model}/generator.pth", "meta": f"results/models/{model}/model.json"}


def get_series_params(wildcards):
    row = SERIES.loc[fov_key(wildcards)]
    return {
        "lr": row["lr"],
        "channel": int(row["channel"]),
        "lr_pixel_size_um": float(row["lr_pixel_size_um"]) if row["lr_pixel_size_um"] else None,
    }


def get_restored_params(wildcards):
    return [{"restored": f"results/restore/fov/{m}/{s}/{se}/{f}.zarr", "model": m, "sample": s, "session": se, "fov": f} for m, s, se, f in test_fov_models()]


def get_ablation_metrics(wildcards):
    """Per-image metrics of the data-size ablation (Table III), only for models listed under config ablation."""
    return [f"results/ablation/{m}/metrics.tsv" for m in config.get("ablation", {}).get("models", [])]


def get_finetune_metrics(wildcards):
    """Per-image metrics of each fine-tuning run (Table IV) named under config finetune."""
    return [f"results/finetune/{n}/metrics.tsv" for n in config.get("finetune", {})]


# Optional experiments: fine-tuning on a new sample (Table IV) and the data-size ablation (Table III).


def finetune_spec(wildcards):
    return config["finetune"][wildcards.name]


def get_finetune_fovs(wildcards):
    spec = finetune_spec(wildcards)
    rows = SAMPLES[(SAMPLES["sample"] == spec["sample"]) & SAMPLES["split"].isin(["train", "val"])]
    return fov_paths(rows, "results/register/{sample}/{session}/{fov}.zarr")


def get_finetune_fov_params(wildcards):
    spec = finetune_spec(wildcards)
    rows = SAMPLES[(SAMPLES["sample"] == spec["sample"]) & SAMPLES["split"].isin(["train", "val"])]
    return [
        {"path": p, "sample": r["sample"], "session": r["session"], "fov": r["fov"], "split": r["split"]}
        for p, (_, r) in zip(fov_paths(rows, "results/register/{sample}/{session}/{fov}.zarr"), rows.iterrows())
    ]


def get_finetune_source_meta(wildcards):
    return f"results/models/{finetune_spec(wildcards)['model']}/model.json"


def get_finetune_source(wildcards):
    model = finetune_spec(wildcards)["model"]
    return {
        "generator": f"results/models/{model}/generator.pth",
        "critic": f"results/models/{model}/critic.pth",
        "meta": f"results/models/{model}/model.json",
    }


def get_finetune_train_config(wildcards):
    spec = finetune_spec(wildcards)
    # finetune.<name>.epochs and .lr have their defaults from the schema (validate() fills them in).
    return {**train_params("finetune"), "gan": {**config["train"]["gan"], "epochs": spec["epochs"], "lr": spec["lr"]}}


def get_finetune_restore_models(wildcards):
    spec = finetune_spec(wildcards)
    models = {"gan": f"results/models/{spec['model']}/generator.pth"}
    for n in spec["pairs"]:
        models[f"finetune_{n}"] = f"results/finetune/{wildcards.name}/n{n}/generator.pth"
    return models


def finetune_test_rows(name):
    return SAMPLES[(SAMPLES["sample"] == config["finetune"][name]["sample"]) & (SAMPLES["split"] == "test")]


def get_finetune_restored(wildcards):
    return fov_paths(finetune_test_rows(wildcards.name), f"results/finetune/{wildcards.name}/restore/{{sample}}/{{session}}/{{fov}}.zarr")


def get_finetune_restored_params(wildcards):
    rows = finetune_test_rows(wildcards.name)
    return [
        {"restored": p, "model": wildcards.name, "sample": r["sample"], "session": r["session"], "fov": r["fov"]}
        for p, (_, r) in zip(get_finetune_restored(wildcards), rows.iterrows())
    ]


def get_ablation_restored_params(wildcards):
    out = []
    for n in config["ablation"]["pairs"]:
        for _, r in model_rows(wildcards.model, ["test"]).iterrows():
            path = f"results/ablation/{wildcards.model}/n{n}/restore/{r['sample']}/{r['session']}/{r['fov']}.zarr"
            out.append({"restored": path, "model": wildcards.model, "sample": r["sample"], "session": r["session"], "fov": r["fov"]})
    return out


def get_ablation_restored(wildcards):
    return [s["restored"] for s in get_ablation_restored_params(wildcards)]
