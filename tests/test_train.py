import json

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from fastscan.dataset import normalise, read_dataset
from fastscan.infer import restore_fov

from fastscan.models import load_generator, load_state_dict
from fastscan.train import resolve_config, train_critic, train_gan, train_generator

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
    restored = restore_fov(tmp_path / "reg2.zarr", tmp_path / "restored.zarr", models={"mse": mse, "gan": gan}, frames=2, tile=32, overlap=8)
    assert restored["normalisation"] == meta["normalisation"]
    g = zarr.open_group(str(tmp_path / "restored.zarr"), mode="r")
    raw = zarr.open_group(str(tmp_path / "reg2.zarr"), mode="r")
    np.testing.assert_allclose(g["lr"][...], normalise(raw["lr"][:2], *meta["normalisation"]["lr"]), rtol=1e-6)
    assert g["gan"].shape == g["mse"].shape == g["classical"].shape == (2, 128, 128)
    assert g.attrs["fastscan"]["methods"] == ["classical", "mse", "gan"]
    # The GAN stage changed the generator it started from.
    before, after = load_state_dict(mse / "generator.pth"), load_state_dict(gan / "generator.pth")
    assert any(not torch.equal(before[k], after[k]) for k in before)
