import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fastscan.restore.engine import TileEngine, predict_image
from fastscan.restore.prepare import fuse_for_inference, resolve_precision
from fastscan.restore.receptive import receptive_radius
from fastscan.restore.tiling import blend_window, fit_tile, tile_starts


class Bilinear(nn.Module):
    """A stand-in generator with a small receptive field: bilinear 2x upsampling, then a blur."""

    def __init__(self):
        super().__init__()
        self.blur = nn.Conv2d(1, 1, 5, padding=2, bias=False, padding_mode="reflect")
        nn.init.constant_(self.blur.weight, 1 / 25)

    def forward(self, x):
        return self.blur(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False))


def test_blend_window_partition_of_unity():
    w = blend_window(64, 16)
    # Two neighbouring tiles overlapping by 16 px sum to 1 across the overlap.
    np.testing.assert_allclose(w[-16:] + w[:16], 1.0, atol=1e-6)
    assert (w[:4] == 0).all() and (w[-4:] == 0).all()  # the outer quarter of the overlap is discarded
    assert (w[16:-16] == 1).all()


def test_tile_starts_cover_axis():
    starts = tile_starts(300, 128, 32)
    assert starts[0] == 0 and starts[-1] + 128 >= 300
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_starts(100, 32, 32)


@pytest.mark.parametrize("shape", [(100, 140), (64, 64), (37, 90)])
def test_tiled_matches_whole(shape):
    rng = np.random.default_rng(0)
    image = rng.random(shape).astype(np.float32)
    model = Bilinear().eval()
    with torch.inference_mode():
        whole = model(torch.from_numpy(np.pad(image, 8, mode="reflect"))[None, None])[0, 0].numpy()[16:-16, 16:-16]
    tiled = predict_image(model, image, scale=2, tile=32, overlap=8, batch_size=3)
    assert tiled.shape == (2 * shape[0], 2 * shape[1])
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_identity_copy_through_tiles():
    """Copying through the tiles returns the image unchanged (CSBDeep's round-trip check)."""

    class Nearest(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode="nearest")

    image = np.arange(50 * 70, dtype=np.float32).reshape(50, 70)
    out = predict_image(Nearest(), image, scale=2, tile=24, overlap=6, batch_size=4)
    np.testing.assert_allclose(out[::2, ::2], image, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# engine: automatic tiling, tiled == whole, seams, batching and precision switches


class ConvStack(nn.Module):
    """Bilinear 2x upsampling, then zero-padded 3x3 convolutions with batch norm: a bounded receptive
    field, and the same zero padding at every tile border that makes the U-Net's tile edges wrong."""

    def __init__(self, depth=5, width=8, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers, c = [], 1
        for i in range(depth):
            out = 1 if i == depth - 1 else width
            conv = nn.Conv2d(c, out, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (0.6 / (3 * c**0.5)))
                conv.bias.copy_(torch.randn(out, generator=g) * 0.05)
            layers.append(conv)
            if i < depth - 1:
                bn = nn.BatchNorm2d(out)
                with torch.no_grad():
                    bn.running_mean.copy_(torch.randn(out, generator=g) * 0.1)
                    bn.running_var.copy_(torch.rand(out, generator=g) + 0.5)
                    bn.weight.copy_(torch.rand(out, generator=g) + 0.5)
                layers += [bn, nn.ReLU()]
            c = out
        self.body = nn.Sequential(*layers)
        self.eval()

    def forward(self, x):
        up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.body(up) + up


def texture(shape, seed=0):
    """A smooth random texture in [0, 1] (normalised units)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.random(shape), 2.0)
    return ((img - img.min()) / (img.max() - img.min())).astype(np.float32)


def whole_image(model, image, pad):
    """The model applied to the whole image at once (reflection padded like the engine)."""
    with torch.inference_mode():
        out = model(torch.from_numpy(np.pad(image, pad, mode="reflect"))[None, None])[0, 0].numpy()
    return out[2 * pad : -2 * pad, 2 * pad : -2 * pad]


@pytest.mark.parametrize("length,tile,overlap", [(100, 64, 16), (512, 256, 32), (37, 256, 8), (1000, 128, 32), (224, 256, 32)])
def test_fit_tile_uses_the_fewest_tiles_and_covers_the_axis(length, tile, overlap):
    t = fit_tile(length, tile, overlap)
    assert t % 8 == 0 and t - overlap > 0
    starts = tile_starts(length + 2 * overlap, t, overlap)
    assert starts[-1] + t >= length + 2 * overlap  # the halo on both sides is covered
    fewest = tile_starts(length + 2 * overlap, tile, overlap)
    assert len(starts) == len(fewest)  # no more tiles than the largest tile would need
    assert t <= tile + 8  # and never more than the alignment above the largest tile


def test_receptive_radius_finds_a_bounded_field():
    class Local(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 2 * k + 1, padding=k, bias=False)
            nn.init.constant_(self.conv.weight, 1.0)

        def forward(self, x):
            return F.interpolate(self.conv(x), scale_factor=2, mode="nearest")

    assert receptive_radius(Local(3), size=48) == 3
    assert receptive_radius(Local(9), size=48) == 9


def test_tiled_matches_whole_with_automatic_overlap():
    """Tiles restore like the whole image within 1e-3 away from the border, with the overlap the
    engine measured from the receptive field; without overlap the same tiles are far off."""
    model = ConvStack()
    image = texture((150, 170))
    whole = whole_image(model, image, 16)
    engine = TileEngine(model, scale=2, tile=48, overlap=None, batch_size=5, precision="float32")
    assert 8 <= engine.overlap <= 16
    tiled = engine.predict(image)
    assert engine.tiles_run > 9  # several tiles per axis, so tile borders lie inside the image
    b = 2 * engine.overlap
    np.testing.assert_allclose(tiled[b:-b, b:-b], whole[b:-b, b:-b], atol=1e-3)
    no_overlap = TileEngine(model, scale=2, tile=48, overlap=0, batch_size=5, precision="float32").predict(image)
    assert np.abs(no_overlap - whole)[b:-b, b:-b].max() > 1e-2


def gradient_profile(img):
    """Mean gradient magnitude of every HR column (x) of the image."""
    gy, gx = np.gradient(img.astype(np.float64))
    return np.hypot(gy, gx).mean(axis=0)


def test_no_seam_across_tile_boundaries():
    model = ConvStack()
    image = texture((96, 200), seed=1)
    whole = whole_image(model, image, 16)
    engine = TileEngine(model, scale=2, tile=64, overlap=16, batch_size=4, precision="float32")
    tiled = engine.predict(image)
    # Tile borders of the engine (HR columns), where a seam would show up.
    step = fit_tile(200, 64, 16) - 16
    borders = [2 * (x - 16) for x in tile_starts(200 + 32, fit_tile(200, 64, 16), 16)[1:]]
    assert borders and all(0 < x < tiled.shape[1] for x in borders)
    diff = np.abs(gradient_profile(tiled) - gradient_profile(whole))[8:-8]
    assert diff.max() < 1e-3, f"gradient profile deviates by {diff.max():.2e} near HR columns {borders} (step {step})"
    # Abutting tiles without overlap do leave a seam the profile picks up.
    seam = np.abs(gradient_profile(TileEngine(model, scale=2, tile=64, overlap=0, precision="float32").predict(image)) - gradient_profile(whole))[8:-8]
    assert seam.max() > 10 * max(diff.max(), 1e-5)


def test_cpu_batch_holds_a_fixed_number_of_unet_input_pixels():
    from fastscan.restore.engine import CPU_BATCH_PIXELS, default_batch_size

    assert default_batch_size("cpu", (64, 64), 2) == CPU_BATCH_PIXELS // (128 * 128) == 16
    assert default_batch_size("cpu", (64, 64), 2, input_scale=1) == 64  # lowres: its U-Net runs on the LR tile
    assert default_batch_size("cpu", (256, 256), 2) == 1 and default_batch_size("cpu", (16, 16), 2, input_scale=1) == 64


def test_batch_size_and_memory_format_do_not_change_the_result():
    model = ConvStack()
    image = texture((90, 120), seed=2)
    ref = TileEngine(model, scale=2, tile=48, overlap=16, batch_size=1, precision="float32").predict(image)
    for bs in (3, 7, 64):
        np.testing.assert_allclose(TileEngine(model, scale=2, tile=48, overlap=16, batch_size=bs, precision="float32").predict(image), ref, atol=1e-6)
    cl = TileEngine(model, scale=2, tile=48, overlap=16, batch_size=4, channels_last=True, precision="float32").predict(image)
    np.testing.assert_allclose(cl, ref, atol=1e-5)
    # The CUDA path's prefetch thread, run on the CPU.
    pre = TileEngine(model, scale=2, tile=48, overlap=16, batch_size=2, prefetch=True, precision="float32")
    np.testing.assert_allclose(pre.predict(image), ref, atol=1e-6)
    assert pre.tiles_run > 2 * pre.batch_size  # several batches went through the thread


def test_reduced_precision_on_cpu_runs_bf16_weights_and_leaves_the_model_alone():
    """bf16 on the CPU: bf16 copies of the weights, close to fp32 but not identical."""
    model = ConvStack()
    image = texture((64, 80), seed=3)
    fp32 = TileEngine(model, scale=2, tile=48, overlap=16, precision="float32").predict(image)
    engine = TileEngine(model, scale=2, tile=48, overlap=16, precision="bfloat16")
    bf16 = engine.predict(image)
    assert bf16.dtype == np.float32
    err = np.abs(bf16 - fp32).max()
    assert 0 < err < 5e-2
    # The weights the engine ran are bf16; the model's own stay float32 for other users.
    assert all(v.dtype == torch.bfloat16 for k, v in engine._lowp_state.items() if k.endswith("weight"))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    np.testing.assert_array_equal(TileEngine(model, scale=2, tile=48, overlap=16, precision="float32").predict(image), fp32)
    # float16 goes through autocast, the path CUDA takes.
    fp16 = TileEngine(model, scale=2, tile=48, overlap=16, precision="float16")
    assert fp16._lowp_state is None and fp16._autocast
    assert 0 < np.abs(fp16.predict(image) - fp32).max() < 5e-2


def test_auto_precision_is_bf16_only_where_the_processor_has_bf16_units(monkeypatch):
    from fastscan.restore import prepare

    monkeypatch.setattr(prepare, "native_bf16_cpu", lambda: True)
    assert resolve_precision("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(prepare, "native_bf16_cpu", lambda: False)
    assert resolve_precision("auto", "cpu") == torch.float32
    model = ConvStack()
    image = texture((40, 40))
    auto = TileEngine(model, scale=2, tile=32, overlap=8, precision="auto").predict(image)
    np.testing.assert_array_equal(auto, TileEngine(model, scale=2, tile=32, overlap=8, precision="float32").predict(image))
    assert resolve_precision("float32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("half", "cpu")


def test_generator_keeps_float32_input_and_residual_under_a_bf16_unet():
    """The bilinear base and the residual sum stay float32; only the U-Net's correction is bf16."""
    from fastscan.models import build_generator
    from fastscan.restore.prepare import prepare_generator

    torch.manual_seed(0)
    for variant in ("faithful", "lowres"):
        model = prepare_generator(build_generator({"variant": variant, "img_size": [64, 64]}))
        image = texture((48, 48), seed=1)
        fp32 = TileEngine(model, scale=2, tile=48, overlap=8, precision="float32").predict(image)
        engine = TileEngine(model, scale=2, tile=48, overlap=8, precision="bfloat16")
        assert not engine._cast_input  # the generator casts for its U-Net itself
        bf16 = engine.predict(image)
        assert 0 < np.abs(bf16 - fp32).max() < 5e-3, variant
        # A sum computed in bf16 would leave only bf16 values (steps of 2e-3 near 0.5); here the
        # float32 base shows through almost everywhere.
        representable = torch.from_numpy(bf16).to(torch.bfloat16).float().numpy() == bf16
        assert representable.mean() < 0.1, variant


def test_predict_stack_batches_frames_like_single_images():
    model = ConvStack()
    frames = np.stack([texture((40, 52), seed=s) for s in range(3)])
    engine = TileEngine(model, scale=2, tile=32, overlap=8, batch_size=6, precision="float32")
    stack = engine.predict_stack(frames)
    assert stack.shape == (3, 80, 104)
    for f, out in zip(frames, stack):
        np.testing.assert_allclose(out, predict_image(model, f, scale=2, tile=32, overlap=8, batch_size=2), atol=1e-6)


def test_fuse_for_inference_keeps_the_generator_output():
    from fastscan.models import build_generator

    torch.manual_seed(0)
    model = build_generator({"img_size": [64, 64]}).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.rand(2, 1, 32, 32)
    with torch.inference_mode():
        ref = model(x)
        fused = fuse_for_inference(model)
        out = fused(x)
    assert not any(hasattr(m, "weight_g") for m in fused.modules())
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert n_bn < 10  # the encoder's 36 batch norms are folded into their convolutions
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


class GlobalMix(ConvStack):
    """ConvStack plus a term every output pixel shares, as self-attention gives: a global field."""

    def forward(self, x):
        return super().forward(x) + 0.2 * x.mean(dim=(-2, -1), keepdim=True)


def test_attention_generators_tile_by_their_training_crops_local_ones_by_receptive_field():
    from fastscan.restore.receptive import RADIUS_PROBE, auto_tiling, receptive_radius, training_context

    assert receptive_radius(GlobalMix(), size=RADIUS_PROBE) >= 0.9 * (RADIUS_PROBE // 2)
    assert training_context({"dataset": {"tile": 64}}) == 64 and training_context({}) is None
    # A stage-1 generator last trained on smaller crops than the dataset's: those.
    mse = {"stage": "mse", "dataset": {"tile": 64}, "config": {"generator": {"sizes": [16, 32]}}}
    assert training_context(mse) == 32
    assert training_context({**mse, "stage": "gan"}) == 64  # the GAN stage trains on whole tiles
    assert training_context({**mse, "config": {"generator": {"sizes": [32, None]}}}) == 64
    # Global field and known training crops: tiles of the crop, a quarter of it as overlap.
    assert auto_tiling(GlobalMix(), context=64) == (64, 16)
    assert auto_tiling(GlobalMix(), context=64, tile=200) == (200, 16)
    engine = TileEngine(GlobalMix(), scale=2, context=48, precision="float32")
    assert (engine.tile, engine.overlap) == (48, 12)
    # Without the crop size: the receptive-field rule, its overlap at the cap.
    assert auto_tiling(GlobalMix()) == (256, 32)
    assert auto_tiling(GlobalMix(), input_scale=1) == (512, 64)
    # A local field is measured, whatever the training crops.
    local = auto_tiling(ConvStack(), context=64)
    assert local == auto_tiling(ConvStack()) and 8 <= local[1] <= 16 and local[0] == 256


def test_receptive_field_is_measured_once_per_model(monkeypatch):
    from fastscan.restore import receptive

    calls = []
    real = receptive.receptive_radius
    monkeypatch.setattr(receptive, "receptive_radius", lambda model, **kw: calls.append(1) or real(model, **kw))
    model = ConvStack()
    image = texture((40, 40))
    for _ in range(3):  # frame after frame, as restore_fov does
        predict_image(model, image, scale=2, tile=None, overlap=None, batch_size=4)
    assert len(calls) == 1
    with torch.no_grad():
        model.body[0].weight.mul_(2.0)  # new weights: measured again
    predict_image(model, image, scale=2, tile=None, overlap=None, batch_size=4)
    assert len(calls) == 2


def test_one_tiling_decision_records_where_each_value_came_from():
    from fastscan.restore.receptive import GIVEN, PLAN, RECEPTIVE_FIELD, TRAINING_CROPS, Tiling, resolve_tiling

    # Given values are kept and nothing is measured; a plan fills only what was not given.
    assert resolve_tiling(GlobalMix(), tile=96, overlap=8, input_scale=2) == Tiling(96, 8, GIVEN, GIVEN)
    assert resolve_tiling(GlobalMix(), tile=None, overlap=8, input_scale=2, planned={"tile": 80, "overlap": 16}) == Tiling(80, 8, PLAN, GIVEN)
    # Then the generator: its training crops for a global field, else its receptive field.
    assert resolve_tiling(GlobalMix(), tile=200, overlap=None, input_scale=2, context=64) == Tiling(200, 16, GIVEN, TRAINING_CROPS)
    assert resolve_tiling(GlobalMix(), tile=None, overlap=None, input_scale=2) == Tiling(256, 32, RECEPTIVE_FIELD, RECEPTIVE_FIELD)
    engine = TileEngine(GlobalMix(), scale=2, tiling=Tiling(64, 16), precision="float32")
    assert (engine.tile, engine.overlap, engine.tiling.tile_from) == (64, 16, GIVEN)
    with pytest.raises(ValueError, match="not both"):
        TileEngine(GlobalMix(), scale=2, tiling=Tiling(64, 16), tile=64)
    with pytest.raises(ValueError, match="smaller than the tile size"):
        Tiling(16, 16)


@pytest.mark.parametrize("indexed_add", [False, True])
def test_blocks_of_different_sizes_share_batches_and_match_alone(indexed_add):
    """Tiles of several blocks (slide regions at an edge are smaller) are added to their own
    block's accumulator, by slices (the CPU) or by one indexed add per batch (CUDA, run here on
    the CPU): each block comes out as if restored alone."""
    rng = np.random.default_rng(3)
    o = 8
    blocks = [rng.random((y + 2 * o, x + 2 * o)).astype(np.float32) for y, x in ((40, 56), (24, 72), (56, 16))]
    engine = TileEngine(Bilinear().eval(), scale=2, tile=32, overlap=o, batch_size=5)
    engine.indexed_add = indexed_add
    together = engine.predict_blocks(blocks, tile_shape=(32, 32))
    for block, out in zip(blocks, together, strict=True):
        alone = TileEngine(Bilinear().eval(), scale=2, tile=32, overlap=o, batch_size=1).predict_blocks([block], tile_shape=(32, 32))[0]
        assert out.shape == (2 * (block.shape[0] - 2 * o), 2 * (block.shape[1] - 2 * o))
        # Float32 sums of the same few window-weighted terms, in another order at most.
        np.testing.assert_allclose(out, alone, atol=1e-6)


def test_compiled_generator_gets_full_batches_and_the_same_result(monkeypatch):
    """restore.compile: every batch reaches the compiled generator at the full batch size (one
    shape, one compilation); the padding is cut off again, so the result is the eager one."""
    import fastscan.restore.engine as engine_module

    model = Bilinear().eval()
    seen = []

    def fake_compile(m, *, compile, device):
        def run(x):
            seen.append(x.shape[0])
            return m(x)

        return run if compile == "auto" else None

    monkeypatch.setattr(engine_module, "compile_generator", fake_compile)
    image = np.random.default_rng(4).random((50, 70)).astype(np.float32)
    eager = TileEngine(model, scale=2, tile=32, overlap=8, batch_size=5, precision="float32").predict(image)
    compiled = TileEngine(model, scale=2, tile=32, overlap=8, batch_size=5, precision="float32", compile="auto")
    out = compiled.predict(image)
    assert compiled.tiles_run % 5 != 0, "the test needs a partial last batch"
    assert seen and set(seen) == {5}
    np.testing.assert_allclose(out, eager, atol=1e-6)


def test_a_failed_compilation_falls_back_to_the_eager_generator(monkeypatch, caplog):
    import fastscan.restore.engine as engine_module

    def broken(x):
        raise RuntimeError("no C compiler")

    monkeypatch.setattr(engine_module, "compile_generator", lambda m, *, compile, device: broken)
    model = Bilinear().eval()
    image = np.random.default_rng(5).random((40, 40)).astype(np.float32)
    engine = TileEngine(model, scale=2, tile=32, overlap=8, batch_size=2, precision="float32", compile="auto")
    with caplog.at_level("WARNING"):
        out = engine.predict(image)
    assert "torch.compile of the generator failed" in caplog.text and "no C compiler" in caplog.text
    assert engine._compiled is None
    np.testing.assert_allclose(out, TileEngine(model, scale=2, tile=32, overlap=8, precision="float32").predict(image), atol=1e-6)


def test_compile_knob_is_eager_on_the_cpu_and_refuses_unknown_values():
    from fastscan.restore.prepare import compile_generator

    assert compile_generator(Bilinear(), compile="auto", device="cpu") is None
    assert compile_generator(Bilinear(), compile="off", device="cpu") is None
    with pytest.raises(ValueError, match="compile must be one of"):
        compile_generator(Bilinear(), compile="max", device="cpu")


def test_compiled_generator_sees_one_batch_shape_and_layout_across_calls(monkeypatch):
    """The automatic batch is decided once per tile shape (on CUDA it follows the free memory,
    which the engine itself lowers) and padded NHWC batches stay NHWC: one compilation."""
    import fastscan.restore.engine as engine_module

    seen = []

    def fake_compile(m, *, compile, device):
        def run(x):
            seen.append((x.shape[0], x.is_contiguous(memory_format=torch.channels_last)))
            return m(x)

        return run

    class Window(nn.Module):
        """A generator with temporal context: three frames as channels (NHWC shows only then)."""

        def __init__(self):
            super().__init__()
            self.up = Bilinear()

        def forward(self, x):
            return self.up(x.mean(dim=1, keepdim=True))

    sizes = iter([5, 3, 7])
    monkeypatch.setattr(engine_module, "compile_generator", fake_compile)
    monkeypatch.setattr(engine_module, "default_batch_size", lambda *a, **k: next(sizes))
    engine = TileEngine(Window().eval(), scale=2, tile=32, overlap=8, precision="float32", channels_last=True, compile="auto")
    image = np.random.default_rng(6).random((3, 50, 70)).astype(np.float32)
    first, second = engine.predict(image), engine.predict(image)
    assert {s for s, _ in seen} == {5} and all(nhwc for _, nhwc in seen)
    np.testing.assert_array_equal(first, second)


# --------------------------------------------------------------------------------------------
# restore.ensemble: the flip self-ensemble


class NearestPlusColumn(nn.Module):
    """Nearest 2x upsampling plus the output column index: flip-equivariant content plus an
    error that does not follow the image's flips (as a generator's position-bound artefacts)."""

    def forward(self, x):
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        return up + torch.arange(up.shape[-1], dtype=up.dtype).expand_as(up)


def test_flip_ensemble_averages_the_four_flips_back_in_place():
    image = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    plain = TileEngine(NearestPlusColumn(), scale=2, tile=16, overlap=0, batch_size=1, precision="float32")
    flips = TileEngine(NearestPlusColumn(), scale=2, tile=16, overlap=0, batch_size=1, precision="float32", ensemble="flips")
    up = np.kron(image, np.ones((2, 2), np.float32))
    np.testing.assert_allclose(plain.predict(image), up + np.arange(32, dtype=np.float32), rtol=1e-6)
    # Column j and its mirror 31 - j average to 15.5: the content stays where it is, the
    # position-bound error becomes its mean.
    np.testing.assert_allclose(flips.predict(image), up + 15.5, rtol=1e-6)


def test_flip_ensemble_of_an_equivariant_generator_is_the_generator_through_tiles():
    class Nearest(nn.Module):
        def forward(self, x):
            return F.interpolate(x, scale_factor=2, mode="nearest")

    image = np.random.default_rng(1).random((50, 70)).astype(np.float32)
    plain = TileEngine(Nearest(), scale=2, tile=24, overlap=6, batch_size=4, precision="float32")
    engine = TileEngine(Nearest(), scale=2, tile=24, overlap=6, batch_size=4, precision="float32", ensemble="flips")
    np.testing.assert_allclose(engine.predict(image), plain.predict(image), rtol=1e-6)
    assert engine.tiles_run == plain.tiles_run  # the same tiles, each run four times


def test_flip_ensemble_only_for_generators_of_geometry_corrected_frames(caplog):
    from fastscan.restore.engine import check_ensemble

    corrected = {"geometry": {"correct": True, "field_fraction": 0.8}}
    assert check_ensemble("flips", corrected, model_dir="m") == "flips"
    assert check_ensemble("none", {}, model_dir="m") == "none"
    # A project-wide default must not fail a model it does not fit: that one restores without it.
    assert check_ensemble("flips", {"geometry": {"correct": False}}, model_dir="raw/model") == "none"
    assert "raw/model: restoring without restore.ensemble 'flips': the generator was not trained on geometry-corrected" in caplog.text
    assert check_ensemble("flips", {}, model_dir="old/model") == "none"
    with pytest.raises(ValueError, match="restore.ensemble must be one of"):
        check_ensemble("rotations", corrected, model_dir="m")
    with pytest.raises(ValueError, match="restore.ensemble must be one of"):
        TileEngine(NearestPlusColumn(), scale=2, tile=16, overlap=0, ensemble="rotations")
