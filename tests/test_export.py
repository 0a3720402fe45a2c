"""bioimage.io export: the package runs without fastscan and reproduces fastscan's restoration."""

import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
import yaml

from fastscan.cli import main
from fastscan.dataset import normalise
from fastscan.export import ARCH_KWARGS, ExportError, export_model
from fastscan.models import build_generator, load_generator, resolve_architecture, save_state_dict, write_model_json
from fastscan.restore.engine import predict_image
from fastscan.torch_generator import FastscanGenerator

#: model.json of the test model: a 12-bit-like LR range, a resonant scanner (field fraction 0.8)
#: and 32-px training crops, which give the self-attention generator tiles of 32 px with 8 px of
#: overlap (fastscan.restore.receptive.model_tiling) and keep every forward pass of the tests small.
META = {
    "format": "fastscan-model/1",
    "stage": "gan",
    "scale": 2,
    "normalisation": {"lr": [100.0, 4000.0], "hr": [50.0, 3000.0], "percentiles": [1.0, 99.5]},
    "geometry": {"correct": True, "field_fraction": 0.8},
    "dataset": {"path": "/nonexistent/dataset.zarr", "tile": 32, "counts": {"tiles": 40, "train": 32, "val": 8}},
    "versions": {"fastscan": "0.1.0", "torch": torch.__version__},
    # A GAN stage whose critic never handed over: the package says its weights are stage 1's.
    "gan_steps": {"generator": 0, "critic": 5},
}


def _generator(overrides, seed=0):
    """An untrained generator whose self-attention is switched on (fastai starts it at gamma 0)."""
    torch.manual_seed(seed)
    model = build_generator(resolve_architecture(overrides))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.3)
    return model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """The fast low-resolution variant with an HR head, saved as training would."""
    arch = resolve_architecture({"variant": "lowres", "img_size": [64, 64]})
    path = tmp_path_factory.mktemp("models") / "mito"
    path.mkdir()
    save_state_dict(_generator(arch), path / "generator.pth")
    write_model_json(path, {**META, "architecture": arch})
    return path


@pytest.fixture(scope="module")
def package(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "mito.bioimageio.zip"
    summary = export_model(model_dir, out, onnx=False, test=False)
    return out, summary


@pytest.mark.parametrize(
    "overrides",
    [
        {"img_size": [64, 64]},  # the paper's generator: U-Net on the resized tile
        {"variant": "lowres", "img_size": [64, 64]},  # U-Net on the LR tile, pixel shuffle, HR head
        # Models written before the residual connection (sigmoid output range), without HR head.
        {"variant": "lowres", "residual": False, "hr_head": 0, "img_size": [64, 64]},
        # A smoothed residual base (architecture.base_sigma), both variants.
        {"img_size": [64, 64], "base_sigma": 1.5},
        {"variant": "lowres", "img_size": [64, 64], "base_sigma": 1.0},
        # Temporal context: three frames in, the middle one restored (its base, its HR head input).
        {"img_size": [64, 64], "frames": 3},
        {"variant": "lowres", "img_size": [64, 64], "frames": 3, "base_sigma": 1.0},
        {"variant": "lowres", "img_size": [64, 64], "frames": 5, "hr_head": 8},
    ],
)
def test_plain_torch_architecture_loads_the_state_dict_and_gives_the_same_output(overrides):
    model = _generator(overrides).eval()
    arch = resolve_architecture(overrides)
    plain = FastscanGenerator(**{k: arch[k] for k in ARCH_KWARGS})
    plain.load_state_dict(model.state_dict(), strict=True)  # every key, same names and shapes
    x = torch.rand(2, arch["frames"], 32, 64, generator=torch.Generator().manual_seed(1))
    if arch["variant"] == "faithful":
        x = x[..., :16, :32]  # its U-Net runs on the tile resized by 2: the same U-Net input size
    with torch.inference_mode():
        want, got = model(x), plain.eval()(x)
    # The same float32 operations in the same order (weight norm through torch's own kernel):
    # equal to rounding; 1e-4 of the normalised HR range would still be invisible.
    assert got.shape == want.shape == (2, 1, 2 * x.shape[2], 2 * x.shape[3])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)


def test_torch_generator_imports_only_torch(root):
    import ast

    tree = ast.parse((root / "src" / "fastscan" / "torch_generator.py").read_text())
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert modules <= {"torch", "__future__"}, modules


def test_package_describes_the_model(package, model_dir):
    out, summary = package
    assert summary["formats"] == ["pytorch_state_dict", "torchscript"] and summary["max_abs_diff"] <= 1e-4
    assert summary["tiling"] == {"tile": 32, "overlap": 8, "min": 32, "step": 32, "test": 32}
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
        state = z.read("generator.pth")
    assert {"rdf.yaml", "README.md", "cover.png", "test_input.npy", "test_output.npy", "torch_generator.py", "generator.torchscript.pt"} <= names
    assert state == (model_dir / "generator.pth").read_bytes()  # fastscan's weights, unchanged
    assert "- GAN stage: the GAN stage trained the critic for 5 batches and never the generator" in readme
    # Advice to retrain is for whoever trained it (log, report), not for the package's users.
    assert "more training tiles" not in readme
    assert rdf["format_version"].startswith("0.5.") and rdf["license"] == "BSD-3-Clause"
    assert rdf["cite"][0]["doi"] == "10.1038/s41592-021-01080-z"
    (inp,), (outp,) = rdf["inputs"], rdf["outputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    assert [a.get("id", a["type"]) for a in outp["axes"]] == ["batch", "channel", "y", "x"]
    for axis in outp["axes"][2:]:
        # Twice the input's size (scale 0.5 against 1), the 8-px LR overlap as an HR halo.
        assert axis["size"] == {"tensor_id": "raw", "axis_id": axis["id"]} and axis["scale"] == 0.5 and axis["halo"] == 16
    scale_linear = next(p for p in inp["preprocessing"] if p["id"] == "scale_linear")["kwargs"]
    low, high = META["normalisation"]["lr"]
    assert scale_linear["gain"] == pytest.approx(1 / (high - low)) and scale_linear["offset"] == pytest.approx(-low / (high - low))
    assert not any(p["id"] in ("scale_range", "zero_mean_unit_variance") for p in inp["preprocessing"])  # no per-image statistics
    corrections = rdf["config"]["fastscan"]["input_corrections"]
    assert corrections["required"] and corrections["field_fraction"]["value"] == 0.8
    assert corrections["line_phase_px"]["per_acquisition"] and corrections["line_phase_px"]["value"] is None
    assert "line-phase and resonance corrected" in rdf["description"] and "line-phase and resonance corrected" in readme
    assert "## Validation" in readme and rdf["authors"] == [{"name": "fastscan contributors"}]


def test_package_validates_statically(package):
    from bioimageio.spec import InvalidDescr, load_model_description

    descr = load_model_description(package[0], perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary


@pytest.mark.slow
def test_bioimageio_core_model_test_passes_for_both_weight_formats(package):
    """bioimage.io's own test: each weight format reproduces the test output within the package's
    tolerance, and runs at several sizes and batch sizes (about 50 s on two cores)."""
    from bioimageio.core import test_model

    summary = test_model(package[0], devices=["cpu"])
    passed = {d.name for d in summary.details if d.status == "passed"}
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]
    for fmt in ("pytorch_state_dict", "torchscript"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in passed


_PLAIN_TORCH = r"""
import sys, zipfile, io
import numpy as np, torch, yaml
package, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(package) as z:
    rdf = yaml.safe_load(z.read("rdf.yaml"))
    model = torch.jit.load(io.BytesIO(z.read("generator.torchscript.pt")))
    tile = np.load(io.BytesIO(z.read("test_input.npy")))
pre = next(p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_linear")["kwargs"]
rng = np.random.default_rng(0)
other = (100 + 3900 * rng.random((1, 1, 64, 96))).astype(np.float32)  # another size than the traced one
results = {}
with torch.inference_mode():
    for name, raw in (("test", tile), ("other", other)):
        x = torch.from_numpy(raw * np.float32(pre["gain"]) + np.float32(pre["offset"]))
        results[name] = model(x).numpy()
assert "fastai" not in sys.modules and "fastscan" not in sys.modules, sorted(m for m in sys.modules if m.startswith("fast"))
np.savez(out, other_input=other, **results)
"""


def test_torchscript_alone_restores_like_fastscan(package, model_dir, tmp_path):
    out = tmp_path / "plain.npz"
    # -I: isolated mode, nothing of the test process (path, environment hooks) is inherited.
    run = subprocess.run([sys.executable, "-I", "-c", _PLAIN_TORCH, str(package[0]), str(out)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = np.load(out)
    model, meta = load_generator(model_dir)
    with zipfile.ZipFile(package[0]) as z:
        tile = np.load(z.open("test_input.npy"))[0, 0]
    for raw, restored in ((tile, got["test"]), (got["other_input"][0, 0], got["other"])):
        # fastscan's own restoration: its normalisation and tile engine, one tile covering the image.
        want = predict_image(model, normalise(raw, *meta["normalisation"]["lr"]), scale=2, tile=max(raw.shape), overlap=0, precision="float32")
        assert restored.shape == (1, 1) + want.shape
        # float32 in both; the normalisation is a multiply-add there and a divide here (1 ulp), and
        # the traced graph may fuse operations differently: 1e-3 of the HR range is far above
        # that and far below any wrong weight, layer or size handling.
        np.testing.assert_allclose(restored[0, 0], want, rtol=0, atol=1e-3)


@pytest.mark.parametrize(
    "overrides",
    [
        {"variant": "lowres", "hr_head": 16},
        # A smoothed residual base (its blur kernel must keep a constant shape when traced) over
        # a temporal window of three frames.
        {"variant": "lowres", "hr_head": 16, "base_sigma": 2.0, "frames": 3},
        {"base_sigma": 1.0, "frames": 3},
    ],
)
def test_onnx_weights_reproduce_the_network(tmp_path, overrides):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from fastscan.export.weights import _export_onnx

    arch = resolve_architecture({**overrides, "img_size": [64, 64]})
    plain = FastscanGenerator(**{k: arch[k] for k in ARCH_KWARGS}).eval()
    plain.load_state_dict(_generator(arch).state_dict(), strict=True)
    path = tmp_path / "g.onnx"
    k = arch["frames"]
    assert _export_onnx(plain, torch.rand(1, k, 32, 32), path) is None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, k, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        want = plain(x).numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    # Another engine with its own kernels and graph optimisations: agreement to float32 rounding
    # of the convolution sums (3e-7 seen), checked at 1e-4 of the HR range, on a dynamic size.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_cli_errors_name_the_file_and_the_fix(tmp_path, model_dir, caplog):
    with caplog.at_level(logging.ERROR, logger="fastscan"):
        assert main(["export", str(tmp_path / "none"), "--out", str(tmp_path / "x.bioimageio.zip")]) == 2
        assert f"model directory {tmp_path / 'none'} has no model.json" in caplog.text
        assert main(["export", str(model_dir), "--out", str(tmp_path / "x.tar")]) == 2
        assert f"{tmp_path / 'x.tar'}: the package must be a .zip file (NAME.bioimageio.zip)" in caplog.text
        assert main(["export", str(model_dir), "--out", str(tmp_path / "y.bioimageio.zip"), "--sample", str(tmp_path / "nope.tif")]) == 2
        assert f"{tmp_path / 'nope.tif'}: the sample image does not exist" in caplog.text
        assert main(["info", str(tmp_path / "none")]) == 2
        assert f"{tmp_path / 'none'}: not a folder" in caplog.text
    assert not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob(".*"))


def test_info_shows_training_normalisation_geometry_metrics_and_version(model_dir, tmp_path, capsys, caplog):
    metrics = tmp_path / "metrics.tsv"
    rows = [
        {"model": "mito", "sample": "s", "session": "a", "fov": "f1", "frame": 0, "method": "gan", "psnr": 25.0, "ssim": 0.7, "nrmse": 0.1, "pairs": 3},
        {"model": "mito", "sample": "s", "session": "a", "fov": "f2", "frame": 0, "method": "gan", "psnr": 27.0, "ssim": 0.8, "nrmse": 0.1, "pairs": 3},
        {"model": "other", "sample": "s", "session": "a", "fov": "f1", "frame": 0, "method": "gan", "psnr": 5.0, "ssim": 0.1, "nrmse": 0.9, "pairs": 3},
    ]
    metrics.write_text("\t".join(rows[0]) + "\n" + "\n".join("\t".join(str(v) for v in r.values()) for r in rows) + "\n")
    assert main(["info", str(model_dir), "--metrics", str(metrics)]) == 0
    text = capsys.readouterr().out
    assert "made by        fastscan 0.1.0" in text
    assert "LR [100.0, 4000.0] -> [0, 1], HR [50.0, 3000.0] -> [0, 1]" in text
    assert "field fraction 0.8" in text and "LR tiles of 32 px" in text and json.dumps(META["dataset"]["counts"]) in text
    assert "gan" in text and "PSNR  26.00 dB  SSIM 0.750" in text  # the mean of this model's rows only
    assert "gan stage      the GAN stage trained the critic for 5 batches and never the generator" in text

    # Inside a workflow project the model finds the project's metrics table by itself, and only its own rows count.
    project = tmp_path / "results"
    shutil.copytree(model_dir, project / "models" / "mito")
    (project / "report").mkdir()
    shutil.copy(metrics, project / "report" / "metrics.tsv")
    assert main(["info", str(project / "models" / "mito")]) == 0
    text = capsys.readouterr().out
    assert f"metrics        {project / 'report' / 'metrics.tsv'}" in text and "PSNR  26.00 dB  SSIM 0.750" in text
    shutil.copytree(model_dir, project / "models" / "unscored")
    with caplog.at_level(logging.WARNING, logger="fastscan"):
        assert main(["info", str(project / "models" / "unscored")]) == 0
    # The table holds mito's and other's rows, not its: no scores of another model under its name.
    assert "metrics        none at hand" in capsys.readouterr().out and "holds no rows of model 'unscored'" in caplog.text
    # Given by the user, such a table is an error that names it, not the mean of every model.
    assert main(["info", str(project / "models" / "unscored"), "--metrics", str(metrics)]) == 2
    assert f"{metrics}: the metrics table holds no rows of model 'unscored' (its models: mito, other)" in caplog.text
    # A model retrained after the metrics were computed: those scores are of the earlier model.
    weights = project / "models" / "mito" / "generator.pth"
    stamp = (project / "report" / "metrics.tsv").stat().st_mtime
    os.utime(weights, (stamp + 10, stamp + 10))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastscan"):
        assert main(["info", str(project / "models" / "mito")]) == 0
    assert "metrics        none at hand" in capsys.readouterr().out and "is older than" in caplog.text
    # A project table that cannot be read does not stop info: a warning names it.
    (project / "report" / "metrics.tsv").write_text("psnr\n1\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastscan"):
        assert main(["info", str(project / "models" / "unscored")]) == 0
    assert "metrics        none at hand" in capsys.readouterr().out and "missing metrics columns ['model', 'sample'" in caplog.text


@pytest.fixture(scope="module")
def temporal_package(tmp_path_factory):
    """A generator with a temporal window of three frames (``train.architecture.frames: 3``),
    exported with a sample stack whose frames differ, so the window's order matters."""
    arch = resolve_architecture({"variant": "lowres", "img_size": [64, 64], "frames": 3, "base_sigma": 1.0})
    root = tmp_path_factory.mktemp("temporal")
    model_dir = root / "mito3"
    model_dir.mkdir()
    save_state_dict(_generator(arch, seed=3), model_dir / "generator.pth")
    write_model_json(model_dir, {**META, "architecture": arch})
    rng = np.random.default_rng(5)
    stack = (100 + 3900 * rng.random((4, 40, 40))).astype(np.float32)  # a 4-frame series; the first 3 are the window
    np.save(root / "series.npy", stack)
    out = root / "mito3.bioimageio.zip"
    summary = export_model(model_dir, out, onnx=False, test=False, sample=root / "series.npy")
    return out, summary, model_dir, stack


def test_a_temporal_generator_exports_with_one_channel_per_frame_of_its_window(temporal_package):
    from bioimageio.spec import InvalidDescr, load_model_description

    out, summary, model_dir, stack = temporal_package
    assert summary["max_abs_diff"] <= 1e-4  # the plain-torch architecture takes the window too
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
        tile = np.load(z.open("test_input.npy"))
        restored = np.load(z.open("test_output.npy"))
    channel = rdf["inputs"][0]["axes"][1]
    assert channel["channel_names"] == ["t_minus_1", "t", "t_plus_1"]
    assert rdf["outputs"][0]["axes"][1]["channel_names"] == ["restored"]  # one restored frame
    assert rdf["config"]["fastscan"]["temporal_window"]["frames"] == 3
    assert "3 consecutive registered frames" in rdf["description"] and "A temporal window of 3 frames" in readme
    assert "frames 1, 0, 1" in readme  # the reflection at a series' start, spelled out
    # The sample's first three frames, centre-cropped to the test tile (32 px), in order.
    assert tile.shape == (1, 3, 32, 32) and restored.shape == (1, 1, 64, 64)
    np.testing.assert_array_equal(tile[0], stack[:3, 4:36, 4:36])
    model, meta = load_generator(model_dir)
    want = predict_image(model, normalise(tile[0], *meta["normalisation"]["lr"]), scale=2, tile=32, overlap=0, precision="float32")
    np.testing.assert_allclose(restored[0, 0], want, rtol=0, atol=1e-6)  # fastscan's own restoration of the window
    # The window is read as a window: its middle frame is the one restored.
    swapped = predict_image(model, normalise(tile[0][[1, 0, 2]], *meta["normalisation"]["lr"]), scale=2, tile=32, overlap=0, precision="float32")
    assert np.abs(swapped - want).max() > 1e-3
    descr = load_model_description(out, perform_io_checks=True)
    assert not isinstance(descr, InvalidDescr), descr.validation_summary


@pytest.mark.slow
def test_bioimageio_core_runs_a_temporal_package(temporal_package):
    """bioimage.io's own test on the three-frame package: the window goes in as the channel
    axis, and each weight format reproduces the test output (about 50 s on two cores)."""
    from bioimageio.core import test_model

    summary = test_model(temporal_package[0], devices=["cpu"])
    assert summary.status == "passed", [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status != "passed"]


def test_a_temporal_export_takes_a_one_image_sample_as_a_static_window(tmp_path):
    arch = resolve_architecture({"variant": "lowres", "img_size": [64, 64], "frames": 3})
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    save_state_dict(_generator(arch), model_dir / "generator.pth")
    write_model_json(model_dir, {**META, "architecture": arch})
    image = np.linspace(100, 4000, 32 * 32, dtype=np.float32).reshape(32, 32)
    summary = export_model(model_dir, tmp_path / "m.bioimageio.zip", onnx=False, test=False, sample=image)
    with zipfile.ZipFile(summary["path"]) as z:
        tile = np.load(z.open("test_input.npy"))
        readme = z.read("README.md").decode()
    assert tile.shape == (1, 3, 32, 32) and all(np.array_equal(f, image) for f in tile[0])
    assert "one image repeated, as a one-frame series is reflected" in readme
    with pytest.raises(ExportError, match=r"a 2-D image or a stack of at least 3 frames"):
        export_model(model_dir, tmp_path / "n.bioimageio.zip", onnx=False, test=False, sample=np.zeros((2, 32, 32), np.float32))
    # Sample files that are no series of one channel are refused, naming the file and the shape.
    import tifffile

    np.save(tmp_path / "tcyx.npy", np.zeros((4, 3, 32, 32), np.float32))
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((32, 32, 3), np.uint8), photometric="rgb")
    np.save(tmp_path / "line.npy", np.zeros(32, np.float32))
    for name, message in (
        ("tcyx.npy", r"tcyx.npy: the sample must be one channel's frames \(T, Y, X\) or one 2-D image for a 3-frame model, got shape \(4, 3, 32, 32\)"),
        ("rgb.tif", r"rgb.tif: the sample must be one channel's frames \(T, Y, X\) or one 2-D image for a 3-frame model, got shape \(32, 32, 3\)"),
        ("line.npy", r"line.npy: the sample image must be a 2-D grayscale image, got shape \(32,\)"),
    ):
        with pytest.raises(ExportError, match=message):
            export_model(model_dir, tmp_path / "n.bioimageio.zip", onnx=False, test=False, sample=tmp_path / name)
    assert not (tmp_path / "n.bioimageio.zip").exists()
