import json

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from fastscan.dataset import normalise, read_dataset
from fastscan.models import load_generator, load_state_dict
from fastscan.restore.fov import restore_fov
from fastscan.train import recompute_bn_stats, resolve_config, train_critic, train_gan, train_generator

TINY = {
    "batch_size": 4,
    "device": "cpu",
    "generator": {"sizes": [16, 32], "epochs": [1, 1]},
    "critic": {"epochs": 1, "nf": 16},
    "gan": {"epochs": 1},
}


def test_config_defaults_and_checks():
    cfg = resolve_config({"generator": {"sizes": [32]}})
    assert cfg["generator"]["lr"] == 1e-3 and cfg["gan"]["weights_gen"] == [1.0, 50.0]
    with pytest.raises(ValueError, match="same length"):
        resolve_config({"generator": {"sizes": [16, 32], "epochs": [1]}})


def test_three_stages_write_loadable_models(tmp_path, tiny_dataset):
    mse, critic, gan = tmp_path / "mse", tmp_path / "critic", tmp_path / "gan"
    meta = train_generator(dataset=tiny_dataset, out_dir=mse, config=TINY, seed=1, threads=2)
    assert meta["stage"] == "mse" and meta["normalisation"]["hr"][1] > meta["normalisation"]["hr"][0]
    # The training split's statistics travel with the model, unchanged, to inference.
    assert meta["normalisation"] == read_dataset(tiny_dataset)[2]["normalisation"]
    curves = pd.read_csv(mse / "curves.tsv", sep="\t")
    assert list(curves["stage"]) == ["mse", "mse"]  # one row per epoch over both resizing steps
    assert curves["valid_psnr"].notna().all()

    train_critic(dataset=tiny_dataset, generator_dir=mse, out_dir=critic, config=TINY, seed=1, threads=2)
    assert set(load_state_dict(critic / "critic.pth")) and json.loads((critic / "model.json").read_text())["critic"]["nf"] == 16

    train_gan(dataset=tiny_dataset, generator_dir=mse, critic_dir=critic, out_dir=gan, config=TINY, seed=1, threads=2)
    model, meta = load_generator(gan)
    assert meta["stage"] == "gan" and meta["versions"]["torch"].startswith("2.14")
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 1, 64, 64)
    assert meta["normalisation"] == read_dataset(tiny_dataset)[2]["normalisation"]
    restored = restore_fov(tmp_path / "reg2.zarr", tmp_path / "restored.zarr", models={"mse": mse, "gan": gan}, frames=2, tile=32, overlap=8, batch_size=4)
    assert restored["normalisation"] == meta["normalisation"]
    g = zarr.open_group(str(tmp_path / "restored.zarr"), mode="r")
    raw = zarr.open_group(str(tmp_path / "reg2.zarr"), mode="r")
    np.testing.assert_allclose(g["lr"][...], normalise(raw["lr"][:2], *meta["normalisation"]["lr"]), rtol=1e-6)
    assert g["gan"].shape == g["mse"].shape == g["classical"].shape == (2, 128, 128)
    assert g.attrs["fastscan"]["methods"] == ["classical", "mse", "gan"]
    # The GAN stage changed the generator's weights, not only its BatchNorm statistics.
    before, after = load_state_dict(mse / "generator.pth"), load_state_dict(gan / "generator.pth")
    assert any(not torch.equal(before[k], after[k]) for k in before if "running_" not in k and "num_batches" not in k)
    # Its BatchNorm statistics are the training tiles' own, re-estimated at the end of the stage,
    # not where fastai's train-mode forward passes of the frozen generator (critic batches) left
    # them: a second estimate agrees. Tolerance: the second estimate runs one more power
    # iteration of the attention's spectral norm (train mode) and sums in another order; a drifted
    # exponential average of batches of 4 differs by percents.
    stats = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    assert stats and recompute_bn_stats(model, tiny_dataset, frames=1, size=None, seed=5)["tiles"] > 0
    again = model.state_dict()
    for k, v in stats.items():
        torch.testing.assert_close(again[k], v, rtol=1e-3, atol=1e-5, msg=k)


RESUME_SCRIPT = """
import sys
from fastscan.train import train_generator
train_generator(dataset=sys.argv[1], out_dir=sys.argv[2], checkpoint_dir=sys.argv[3], config={config!r}, seed=1, threads=1)
"""


def test_killed_training_resumes_from_last_epoch(tmp_path, tiny_dataset, caplog):
    import logging
    import os
    import signal
    import subprocess
    import sys
    import time

    config = {**TINY, "generator": {"sizes": [16, 32], "epochs": [3, 2]}}
    out, ckdir = tmp_path / "mse", tmp_path / "ckpt"
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT.format(config=config))
    proc = subprocess.Popen([sys.executable, str(script), str(tiny_dataset), str(out), str(ckdir)])
    ckpt = ckdir / "mse.pth"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint was written before the kill"
    assert not (out / "generator.pth").exists()
    state = torch.load(ckpt, weights_only=True)
    done = (state["phase"], state["epoch"])
    assert done < (1, 2), "the run finished before it could be killed"
    first_rows = list(state["rows"])

    with caplog.at_level(logging.INFO, logger="fastscan.train"):
        train_generator(dataset=tiny_dataset, out_dir=out, checkpoint_dir=ckdir, config=config, seed=1, threads=1)
    assert f"resuming from checkpoint {ckpt}" in caplog.text
    curves = pd.read_csv(out / "curves.tsv", sep="\t")
    assert len(curves) == 5  # every epoch of both phases, once
    # The epochs done before the kill come from the checkpoint; only the rest were trained again.
    np.testing.assert_allclose(curves["train_loss"][: len(first_rows)], [r["train_loss"] for r in first_rows], rtol=1e-5)
    trained_again = caplog.text.count("mse epoch")
    assert trained_again == 5 - len(first_rows)


def test_training_is_deterministic_on_cpu(tmp_path, tiny_dataset):
    config = {**TINY, "generator": {"sizes": [16], "epochs": [1]}}
    for name in ("a", "b"):
        train_generator(dataset=tiny_dataset, out_dir=tmp_path / name, config=config, seed=7, threads=2)
    a, b = load_state_dict(tmp_path / "a" / "generator.pth"), load_state_dict(tmp_path / "b" / "generator.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gan_and_critic_resume_from_checkpoints(tmp_path, tiny_dataset, caplog):
    import logging

    config = {**TINY, "generator": {"sizes": [16], "epochs": [1]}, "gan": {"epochs": 2}}
    ck = tmp_path / "ck"
    train_generator(dataset=tiny_dataset, out_dir=tmp_path / "mse", config=config, seed=1, threads=2)
    train_critic(dataset=tiny_dataset, generator_dir=tmp_path / "mse", out_dir=tmp_path / "critic", config=config, seed=1, threads=2, checkpoint_dir=ck)
    assert (ck / "critic.pth").is_file()
    args = dict(dataset=tiny_dataset, generator_dir=tmp_path / "mse", critic_dir=tmp_path / "critic", config=config, seed=1, threads=2, checkpoint_dir=ck)
    train_gan(out_dir=tmp_path / "gan1", **args)
    state = torch.load(ck / "gan.pth", weights_only=True)
    assert state["epoch"] == 2 and len(state["rows"]) == 2
    # The outputs were lost after the last epoch: the re-run trains nothing and restores the weights.
    with caplog.at_level(logging.INFO, logger="fastscan.train"):
        train_gan(out_dir=tmp_path / "gan2", **args)
    assert "resuming from checkpoint" in caplog.text and "gan epoch" not in caplog.text
    a, b = load_state_dict(tmp_path / "gan1" / "generator.pth"), load_state_dict(tmp_path / "gan2" / "generator.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Another configuration does not pick up the stale checkpoint.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="fastscan.train"):
        train_gan(out_dir=tmp_path / "gan3", **{**args, "config": {**config, "gan": {"epochs": 1, "lr": 2e-4}}})
    assert "belongs to another configuration" in caplog.text and caplog.text.count("gan epoch") == 1


def test_bf16_and_channels_last_only_on_cuda(tiny_dataset):
    from fastai.callback.channelslast import ChannelsLast
    from fastai.callback.fp16 import MixedPrecision

    from fastscan.dataset import make_dataloaders
    from fastscan.models import build_generator
    from fastscan.train import _generator_learner, accelerate

    def learner():
        return _generator_learner(make_dataloaders(tiny_dataset, size=16, batch_size=2), build_generator(), lr_wd=0.0)

    on_cpu = learner()
    assert accelerate(on_cpu, device="cpu", config={"mixed_precision": True, "channels_last": True}) == []
    assert not any(isinstance(c, (MixedPrecision, ChannelsLast)) for c in on_cpu.cbs)
    # The switches themselves (no GPU needed to attach the callbacks).
    gpu = learner()
    assert accelerate(gpu, device="cuda", config={"mixed_precision": True, "channels_last": True}) == ["channels_last", "bf16"]
    mp = [c for c in gpu.cbs if isinstance(c, MixedPrecision)]
    assert len(mp) == 1 and any(isinstance(c, ChannelsLast) for c in gpu.cbs)
    assert mp[0].amp_mode.name == "BF16"
    off = learner()
    assert accelerate(off, device="cuda", config={"mixed_precision": False, "channels_last": False}) == []


def test_model_json_records_geometry_and_pairs(tmp_path, tiny_dataset):
    meta = train_generator(dataset=tiny_dataset, out_dir=tmp_path / "mse", config={**TINY, "generator": {"sizes": [16], "epochs": [1]}}, seed=1, threads=2)
    attrs = read_dataset(tiny_dataset)[2]
    assert meta["geometry"] == attrs["geometry"]
    assert meta["dataset"]["tiles_train"] == attrs["counts"]["train"]
    assert meta["accelerations"] == []


def test_lowres_generator_trains_and_warns_about_small_crops(tmp_path, tiny_dataset, caplog):
    config = {**TINY, "architecture": {"variant": "lowres"}, "generator": {"sizes": [32], "epochs": [1]}}
    with caplog.at_level("WARNING", logger="fastscan.train"):
        meta = train_generator(dataset=tiny_dataset, out_dir=tmp_path / "mse", config=config, seed=1, threads=2)
    assert meta["architecture"]["variant"] == "lowres" and meta["architecture"]["hr_head"] == 16
    assert any("lowres U-Net runs on the LR crop itself" in r.getMessage() for r in caplog.records)
    model, _ = load_generator(tmp_path / "mse", device="cpu")
    with torch.no_grad():
        assert model(torch.rand(1, 1, 32, 32)).shape == (1, 1, 64, 64)


def test_recompute_bn_stats_gives_the_training_tiles_statistics(tiny_dataset):
    """Precise BN: the running statistics become the BatchNorm input's mean and (unbiased)
    variance over the training tiles, whatever they were, and the model is left in eval mode."""
    from fastscan.dataset import TileDataset

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3, padding=1), torch.nn.BatchNorm2d(3))
    model[1].running_mean.fill_(7.0)
    model[1].running_var.fill_(0.01)
    model.train()
    ds = TileDataset(tiny_dataset, "train", augment=False)
    assert len(ds) <= 32  # one batch: the cumulative average is the whole split's statistics
    info = recompute_bn_stats(model, tiny_dataset, frames=1, size=None)
    assert info == {"tiles": len(ds), "batch": 32} and not model.training
    with torch.no_grad():
        feats = model[0](torch.stack([ds[i][0] for i in range(len(ds))]))
    want_mean = feats.mean(dim=(0, 2, 3))
    want_var = feats.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True)
    # float32 sums over ~10^4 values in another order: agreement to 1e-5 relative.
    torch.testing.assert_close(model[1].running_mean, want_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, want_var, rtol=1e-5, atol=1e-6)
    assert model[1].momentum == 0.1  # the layer's own momentum is given back
    assert recompute_bn_stats(torch.nn.Conv2d(1, 1, 1), tiny_dataset, frames=1, size=None) == {"tiles": 0, "batch": 0}


def test_l1_content_loss_trains_a_different_generator_and_is_checked(tmp_path, tiny_dataset):
    """``train.generator.loss: l1`` reaches stage 1's learner and the GAN stage's content term."""
    from fastscan.dataset import make_dataloaders
    from fastscan.models import build_generator
    from fastscan.train import _generator_learner

    dls = make_dataloaders(tiny_dataset, size=16, batch_size=2)
    assert isinstance(_generator_learner(dls, build_generator(), lr_wd=0.0, loss="l1").loss_func.func, torch.nn.L1Loss)
    with pytest.raises(ValueError, match=r"train.generator.loss must be one of \['mse', 'l1'\], got 'l2'"):
        _generator_learner(dls, build_generator(), lr_wd=0.0, loss="l2")
    config = {**TINY, "generator": {"sizes": [16], "epochs": [1]}}
    for loss in ("mse", "l1"):
        train_generator(dataset=tiny_dataset, out_dir=tmp_path / loss, config={**config, "generator": {**config["generator"], "loss": loss}}, seed=7, threads=2)
    a, b = load_state_dict(tmp_path / "mse" / "generator.pth"), load_state_dict(tmp_path / "l1" / "generator.pth")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the same seed and data: only the loss differs
    crit = tmp_path / "critic"
    train_critic(dataset=tiny_dataset, generator_dir=tmp_path / "l1", out_dir=crit, config=config, seed=1, threads=2)
    l1 = {**config, "generator": {**config["generator"], "loss": "l1"}}
    meta = train_gan(dataset=tiny_dataset, generator_dir=tmp_path / "l1", critic_dir=crit, out_dir=tmp_path / "gan", config=l1, seed=1, threads=2)
    assert meta["config"]["generator"]["loss"] == "l1"


def test_critic_depth_fits_the_hr_tile():
    from fastscan.models import critic_blocks

    # fastai's 3 blocks from 64 px on; each halving of the tile costs a block.
    assert [critic_blocks(t) for t in (16, 31, 32, 63, 64, 128, 512)] == [1, 1, 2, 2, 3, 3, 3]
    with pytest.raises(ValueError, match="8 px are too small for the critic"):
        critic_blocks(8)


def test_denoising_project_with_small_tiles_trains_and_restores(tmp_path):
    """``ingest.scale: 1`` (same-size noisy frames and averaged targets) with 16-px tiles: the
    critic is built shallow enough for 16-px HR tiles, the GAN stage reloads it with that depth,
    and restoration keeps the frame's size."""
    from conftest import write_registered

    from fastscan.dataset import FovEntry, build_dataset

    entries = [
        FovEntry(str(write_registered(tmp_path / f"reg{i}.zarr", seed=i, scale=1)), "fmd", "s1", f"f{i}", s) for i, s in enumerate(["train", "train", "val"])
    ]
    dataset = tmp_path / "ds.zarr"
    build_dataset(entries, dataset, tile=16, stride=16)
    config = {**TINY, "generator": {"sizes": [16], "epochs": [1]}}
    train_generator(dataset=dataset, out_dir=tmp_path / "mse", config=config, seed=1, threads=2)
    meta = train_critic(dataset=dataset, generator_dir=tmp_path / "mse", out_dir=tmp_path / "critic", config=config, seed=1, threads=2)
    assert meta["critic"]["n_blocks"] == 1
    train_gan(dataset=dataset, generator_dir=tmp_path / "mse", critic_dir=tmp_path / "critic", out_dir=tmp_path / "gan", config=config, seed=1, threads=2)
    model, meta = load_generator(tmp_path / "gan")
    assert meta["scale"] == 1
    test = write_registered(tmp_path / "test.zarr", seed=7, scale=1)
    restore_fov(test, tmp_path / "restored.zarr", models={"gan": tmp_path / "gan"}, frames=1, tile=32, overlap=8, batch_size=4)
    assert zarr.open_group(str(tmp_path / "restored.zarr"), mode="r")["gan"].shape == (1, 64, 64)


def test_a_model_of_matched_targets_is_scored_on_matched_targets(tmp_path, tiny_dataset):
    """``dataset.match_hr_intensity``: the model records it, and restoration reads a held-out
    FOV's target through that FOV's own line, so a slow scan at 3x the gain scores as the others;
    a model of acquired targets cannot be compared with it on one store."""
    from conftest import write_registered

    from fastscan.dataset import FovEntry, build_dataset

    entries = [
        FovEntry(str(write_registered(tmp_path / f"m{i}.zarr", seed=i, hr_gain=g, lr_per_hr=1.0 / g, lr_at_zero_hr=0.0)), "m", "s", f"f{i}", split)
        for i, (g, split) in enumerate([(1.0, "train"), (2.0, "train"), (1.0, "val")])
    ]
    dataset = tmp_path / "matched.zarr"
    build_dataset(entries, dataset, tile=32, stride=32, match_hr_intensity=True)
    config = {**TINY, "generator": {"sizes": [16], "epochs": [1]}}
    meta = train_generator(dataset=dataset, out_dir=tmp_path / "mse", config=config, seed=1, threads=2)
    assert meta["hr_intensity"] == "matched" and json.loads((tmp_path / "mse" / "model.json").read_text())["hr_intensity"] == "matched"

    test = write_registered(tmp_path / "test.zarr", seed=7, hr_gain=3.0, lr_per_hr=1.0 / 3.0, lr_at_zero_hr=0.0)
    restore_fov(test, tmp_path / "restored.zarr", models={"mse": tmp_path / "mse"}, frames=1, tile=32, overlap=8, batch_size=4, classical=False)
    g = zarr.open_group(str(tmp_path / "restored.zarr"), mode="r")
    acquired = zarr.open_group(str(test), mode="r")["hr"][...]
    # float32 arithmetic on values of about 4000 ADU, against the factor 3 of the gain.
    np.testing.assert_allclose(g["hr"][...], normalise(acquired / 3.0, *meta["normalisation"]["hr"]), rtol=1e-4, atol=1e-4)
    assert g.attrs["fastscan"]["hr_intensity"] == "matched"
    # The same frames and, matched, the same targets as tiny_dataset's: one normalisation, so
    # only the reading of the targets tells the two models apart.
    other = train_generator(dataset=tiny_dataset, out_dir=tmp_path / "acq", config=config, seed=1, threads=2)
    assert other["hr_intensity"] == "acquired" and other["normalisation"] == meta["normalisation"]
    with pytest.raises(ValueError, match="read their HR targets differently"):
        restore_fov(test, tmp_path / "both.zarr", models={"mse": tmp_path / "mse", "acq": tmp_path / "acq"}, frames=1, tile=32, overlap=8)


def _drive_switcher(switcher, losses):
    """The side (G or C) the switcher's GAN trainer is on before each batch, for critic losses."""
    from types import SimpleNamespace

    state = SimpleNamespace(gen_mode=False)
    state.switch = lambda: setattr(state, "gen_mode", not state.gen_mode)
    switcher.learn = SimpleNamespace(gan_trainer=state, training=True, loss=None)
    switcher.before_fit()
    sides = []
    for loss in losses:
        sides.append("G" if state.gen_mode else "C")
        switcher.learn.loss = torch.tensor(loss)
        switcher.after_batch()
    return "".join(sides)


def test_gan_switcher_hands_over_only_below_the_threshold_and_counts():
    from fastscan.train import _gan_switcher

    # A good critic hands the generator one batch after each of its own.
    good = _gan_switcher(critic_thresh=0.65)
    assert _drive_switcher(good, [0.5] * 6) == "CGCGCG" and good.steps == {"generator": 3, "critic": 3}
    # A critic at chance (BCE 0.69) keeps every batch.
    chance = _gan_switcher(critic_thresh=0.65)
    assert _drive_switcher(chance, [0.69, 0.69, 0.6, 0.0, 0.69]) == "CCCGC" and chance.steps == {"generator": 1, "critic": 4}


def test_gan_stage_says_when_the_critic_never_handed_over(tmp_path, tiny_dataset, caplog):
    """A critic loss threshold no critic reaches: the generator gets no batch, its weights stay
    those of stage 1, ``model.json`` records it and the log says so."""
    import logging

    config = {**TINY, "generator": {"sizes": [16], "epochs": [1]}, "gan": {"epochs": 1, "critic_thresh": 1e-6}}
    train_generator(dataset=tiny_dataset, out_dir=tmp_path / "mse", config=config, seed=1, threads=2)
    train_critic(dataset=tiny_dataset, generator_dir=tmp_path / "mse", out_dir=tmp_path / "critic", config=config, seed=1, threads=2)
    with caplog.at_level(logging.WARNING, logger="fastscan.train"):
        meta = train_gan(
            dataset=tiny_dataset, generator_dir=tmp_path / "mse", critic_dir=tmp_path / "critic", out_dir=tmp_path / "gan", config=config, seed=1, threads=2
        )
    assert meta["gan_steps"]["generator"] == 0 and meta["gan_steps"]["critic"] >= 1
    assert json.loads((tmp_path / "gan" / "model.json").read_text())["gan_steps"] == meta["gan_steps"]
    # Trainable parameters only: BatchNorm statistics and spectral-norm power iterations move on
    # every forward pass.
    (before, _), (after, _) = load_generator(tmp_path / "mse"), load_generator(tmp_path / "gan")
    after = dict(after.named_parameters())
    assert all(torch.equal(p, after[k]) for k, p in before.named_parameters())
    assert "never the generator" in caplog.text and "more training tiles or critic epochs" in caplog.text
