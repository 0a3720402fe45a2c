"""Damaged or foreign model files are refused with a message that names the file and the fault.

``model.json`` is checked against ``fastscan/schemas/model.schema.json``: what fastscan writes
passes, older files the code still reads pass, and a wrong type or value names its key.
``generator.pth`` that is truncated, empty or not a PyTorch file is told apart from one that
carries pickled objects (the unsafe case).
"""

from __future__ import annotations

import json
import logging
import os
import tomllib
from pathlib import Path

import pytest
import torch
from torch import nn

from fastscan.models import (
    DEFAULT_ARCHITECTURE,
    ModelError,
    build_generator,
    load_generator,
    load_state_dict,
    read_model_json,
    resolve_architecture,
    save_state_dict,
    write_model_json,
)

ROOT = Path(__file__).resolve().parents[1]

#: What a hand-made model.json needs for restoration; the cases below break one key each.
GOOD = {
    "format": "fastscan-model/1",
    "stage": "gan",
    "architecture": {"variant": "faithful", "residual": True},
    "scale": 2,
    "normalisation": {"lr": [0.0, 255.0], "hr": [0.0, 1.0]},
}

HINT = "The file was edited by hand or written by another program"


def _model_json(folder: Path, content: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps(content))
    return folder / "model.json"


def _refusal(folder: Path) -> str:
    with pytest.raises(ModelError) as err:
        read_model_json(folder)
    return str(err.value)


# --- model.json -------------------------------------------------------------------------------


@pytest.mark.parametrize(("content", "kind"), [([1, 2, 3], "a list"), ("model", "a string"), (2, "a number"), (None, "null")])
def test_model_json_that_is_not_an_object_says_so(tmp_path: Path, content: object, kind: str) -> None:
    path = _model_json(tmp_path / "m", content)
    message = _refusal(tmp_path / "m")
    assert message.startswith(f"{path}: must be a JSON object (the model's description), got {kind}. {HINT}")


def test_model_json_list_is_refused_before_the_generator_is_built(tmp_path: Path) -> None:
    # The traceback this replaces: 'list' object has no attribute 'get', without the file's name.
    path = _model_json(tmp_path / "m", [1, 2, 3])
    with pytest.raises(ModelError, match="must be a JSON object") as err:
        load_generator(tmp_path / "m")
    assert str(path) in str(err.value) and "attribute" not in str(err.value)


def _changed(key: str, value: object) -> dict:
    """:data:`GOOD` with ``key`` (dotted) set to ``value``, or removed when ``value`` is ``...``."""
    meta = json.loads(json.dumps(GOOD))
    *parents, last = key.split(".")
    node = meta
    for part in parents:
        node = node.setdefault(part, {})
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return meta


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("scale", "2", "key 'scale' must be an integer of 1 or more (HR pixels per LR pixel), got \"2\""),
        ("scale", 0, "key 'scale' must be an integer of 1 or more (HR pixels per LR pixel), got 0"),
        ("normalisation.lr", "abc", "key 'normalisation.lr' must be an array of 2 numbers (low, high), got \"abc\""),
        ("normalisation.hr", [0.0, "1"], "key 'normalisation.hr' must be an array of 2 numbers (low, high), got [0.0, \"1\"]"),
        ("normalisation.hr", [0.0, 1.0, 2.0], "key 'normalisation.hr' must be an array of 2 numbers"),
        ("normalisation.lr", ..., "key 'normalisation.lr' is missing: it must be an array of 2 numbers (low, high)"),
        ("normalisation", ..., 'key \'normalisation\' is missing: it must be an object with the intensity ranges "lr" and "hr"'),
        ("normalisation", [0, 1], 'key \'normalisation\' must be an object with the intensity ranges "lr" and "hr", got [0, 1]'),
        ("architecture.variant", "fast", 'key \'architecture.variant\' must be one of "faithful", "lowres", got "fast"'),
        ("architecture.residual", "yes", "key 'architecture.residual' must be true or false, got \"yes\""),
        ("architecture.hr_head", 8, "key 'architecture.hr_head' must be 0 or null, as the variant is not \"lowres\""),
        ("architecture.img_size", [64], "key 'architecture.img_size' must be an array of 2 integers of 32 or more"),
        ("architecture.norm_type", "Group", "key 'architecture.norm_type' must be null or one of fastai's NormType names"),
        ("architecture.colour", "red", "key 'architecture.colour' is unknown (known: arch, variant,"),
        ("architecture", "resnet34", "key 'architecture' must be an object of generator settings, got \"resnet34\""),
        ("geometry", {"correct": True}, "key 'geometry.field_fraction' is missing: it must be a number in [0, 1)"),
        ("geometry", {"correct": True, "field_fraction": 1.5}, "key 'geometry.field_fraction' must be a number in [0, 1)"),
        ("dataset", {"tile": "64"}, "key 'dataset.tile' must be an integer of 1 or more (the LR tile size), got \"64\""),
        ("config", {"generator": {"sizes": [32, "x"]}}, "key 'config.generator.sizes' must be an array of LR crop sizes"),
        ("critic", {"n_channels": 1}, "key 'critic.nf' is missing"),
        ("format", "other-program/3", "key 'format' must be \"fastscan-model/1\""),
        ("stage", ..., "key 'stage' is missing"),
        ("scale", 4, "key 'scale' is 4 but the generator ('architecture.scale') upsamples by 2"),
    ],
)
def test_wrong_key_is_named_with_the_file(tmp_path: Path, key: str, value: object, expected: str) -> None:
    path = _model_json(tmp_path / "m", _changed(key, value))
    message = _refusal(tmp_path / "m")
    assert message.startswith(f"{path}: ") and expected in message
    assert message.endswith("restore it from a copy of the model directory (or the training run's output), or retrain the model")


def test_every_fault_is_listed(tmp_path: Path) -> None:
    meta = _changed("scale", "2")
    meta["normalisation"]["lr"] = "abc"
    _model_json(tmp_path / "m", meta)
    message = _refusal(tmp_path / "m")
    assert "key 'normalisation.lr' must be" in message and "key 'scale' must be" in message


def test_model_json_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = _model_json(tmp_path / "m", GOOD)
    path.write_bytes(path.read_bytes().replace(b'"gan"', b'"g\xe9n"'))
    assert _refusal(tmp_path / "m").startswith(f"{path} is not UTF-8 text (byte ")


def test_model_json_that_is_not_json_keeps_its_message_and_gains_the_hint(tmp_path: Path) -> None:
    (tmp_path / "model.json").write_text('{"scale": 2,')
    message = _refusal(tmp_path)
    assert message.startswith(f"{tmp_path / 'model.json'} is not valid JSON: ") and HINT in message


@pytest.mark.parametrize(
    "content",
    [
        GOOD,
        # Older and hand-made files: no format, no residual or hr_head (load_generator's defaults).
        {"architecture": {"variant": "lowres", "residual": True}, "scale": 2},
        {"architecture": {"variant": "faithful"}, "scale": 2},
        {"architecture": {}},
        {"scale": 2, "normalisation": {"lr": [100.0, 1100.0], "hr": [0.0, 1.0]}, "geometry": {"correct": True, "field_fraction": 0.8}},
        # Keys a later fastscan may add are left alone.
        {**GOOD, "provenance": {"note": "from a later version"}},
        {**GOOD, "architecture": resolve_architecture({"variant": "lowres"})},
    ],
)
def test_model_json_the_code_reads_is_accepted(tmp_path: Path, content: dict) -> None:
    _model_json(tmp_path / "m", content)
    assert read_model_json(tmp_path / "m") == content


def test_schema_describes_every_architecture_setting() -> None:
    schema = json.loads((ROOT / "src/fastscan/schemas/model.schema.json").read_text())
    assert set(schema["properties"]["architecture"]["properties"]) == set(DEFAULT_ARCHITECTURE)


def test_schema_is_installed_with_the_package() -> None:
    from importlib import resources

    assert resources.files("fastscan").joinpath("schemas", "model.schema.json").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "schemas/*.json" in config["tool"]["setuptools"]["package-data"]["fastscan"]


def test_model_json_written_by_training_passes(tmp_path: Path, tiny_dataset: Path) -> None:
    from fastscan.train import train_generator

    config = {"batch_size": 4, "device": "cpu", "generator": {"sizes": [16], "epochs": [1]}}
    meta = train_generator(dataset=tiny_dataset, out_dir=tmp_path / "mse", config=config, seed=1, threads=1)
    written = read_model_json(tmp_path / "mse")
    assert written["format"] == "fastscan-model/1" and written["stage"] == "mse"
    assert set(written) >= {"architecture", "scale", "normalisation", "geometry", "dataset", "config", "curves", "versions"}
    assert written["normalisation"] == meta["normalisation"]
    # The same content with the critic's entry, as the critic and GAN stages write it.
    write_model_json(tmp_path / "gan", {**written, "stage": "gan", "critic": {"nf": 16, "n_channels": 1}, "final_accuracy": float("nan")})
    assert read_model_json(tmp_path / "gan")["critic"]["nf"] == 16


def test_cli_reports_a_bad_model_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np
    import tifffile

    from fastscan.cli import main

    folder = tmp_path / "model"
    path = _model_json(folder, _changed("normalisation.lr", "abc"))
    save_state_dict(build_generator(), folder / "generator.pth")
    slide = tmp_path / "slide.tif"
    tifffile.imwrite(slide, np.zeros((64, 64), np.uint8))
    with caplog.at_level(logging.ERROR, logger="fastscan"):
        code = main(["restore", str(slide), "--model", str(folder), "--out", str(tmp_path / "out.ome.zarr"), "--device", "cpu"])
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)
    assert code == 2 and not (tmp_path / "out.ome.zarr").exists()
    assert f"{path}: key 'normalisation.lr' must be an array of 2 numbers (low, high), got \"abc\"" in errors


# --- weights files ------------------------------------------------------------------------------


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    """A state dict as fastscan saves one (a small network keeps the file small)."""
    torch.manual_seed(0)
    path = tmp_path / "generator.pth"
    save_state_dict(nn.Sequential(nn.Conv2d(1, 8, 3), nn.Conv2d(8, 1, 3)), path)
    return path


def _weights_refusal(path: Path) -> str:
    with pytest.raises(ModelError) as err:
        load_state_dict(path)
    return str(err.value)


def test_intact_weights_load(weights: Path) -> None:
    assert set(load_state_dict(weights)) == {"0.weight", "0.bias", "1.weight", "1.bias"}


def test_truncated_weights_are_called_truncated(weights: Path) -> None:
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    size = weights.stat().st_size
    message = _weights_refusal(weights)
    assert message.startswith(f"{weights}: the weights file is truncated or corrupt ({size} bytes; torch.load: PytorchStreamReader")
    assert "copy it again from where the model was trained, or retrain" in message
    assert "pickle" not in message and "weights_only" not in message


def test_empty_weights_are_called_empty(weights: Path) -> None:
    weights.write_bytes(b"")
    message = _weights_refusal(weights)
    assert message.startswith(f"{weights}: the weights file is truncated or corrupt (0 bytes: the file is empty)")


def test_random_bytes_are_not_a_weights_file(weights: Path) -> None:
    weights.write_bytes(os.urandom(4096))
    message = _weights_refusal(weights)
    assert message.startswith(f"{weights}: the weights file is truncated or corrupt (4096 bytes that start like no file torch.save writes)")


def test_truncated_legacy_format_is_called_truncated(tmp_path: Path) -> None:
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.zeros(256)}, path, _use_new_zipfile_serialization=False)
    assert set(load_state_dict(path)) == {"w"}
    path.write_bytes(path.read_bytes()[:-100])
    assert _weights_refusal(path).startswith(f"{path}: the weights file is truncated or corrupt (")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickle_with_objects_is_still_unsafe(weights: Path) -> None:
    torch.save({"w": torch.zeros(1), "evil": _Payload()}, weights)
    message = _weights_refusal(weights)
    assert message.startswith(f"{weights} is not a plain state_dict and was refused by torch.load(weights_only=True)")
    assert "a pickle that carries code or objects cannot be loaded safely" in message
    assert "print was not an allowed global" in message and "truncated" not in message


def test_a_tensor_is_not_a_state_dict(weights: Path) -> None:
    torch.save(torch.zeros(3), weights)
    assert _weights_refusal(weights) == f"{weights} holds a Tensor, not a state_dict (a mapping of parameter names to tensors)"


def test_truncated_generator_is_named_when_a_model_is_loaded(tmp_path: Path) -> None:
    arch = resolve_architecture({"variant": "lowres", "img_size": [64, 64]})
    save_state_dict(build_generator(arch), tmp_path / "generator.pth")
    write_model_json(tmp_path, {**GOOD, "architecture": arch})
    data = (tmp_path / "generator.pth").read_bytes()
    (tmp_path / "generator.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="the weights file is truncated or corrupt") as err:
        load_generator(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'generator.pth'}: ")
