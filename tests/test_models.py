import json

import numpy as np
import pytest
import torch

from fastscan.models import (
    ModelError,
    build_generator,
    find_pretrained_weights,
    load_generator,
    load_state_dict,
    resolve_architecture,
    save_state_dict,
    write_model_json,
)


@pytest.fixture(scope="module")
def generator():
    return build_generator()


def test_generator_maps_lr_to_hr(generator):
    with torch.inference_mode():
        y = generator.eval()(torch.rand(2, 1, 32, 48))
    assert y.shape == (2, 1, 64, 96)


def test_pretrained_without_local_weights_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(ModelError, match="resnet34-b627a593.pth"):
        build_generator(pretrained=True)
    with pytest.raises(ModelError, match="does not exist"):
        find_pretrained_weights(tmp_path / "missing.pth")


def test_pretrained_from_local_file(tmp_path):
    import torchvision

    path = tmp_path / "resnet34.pth"
    ref = torchvision.models.resnet34(weights=None)
    torch.save(ref.state_dict(), path)
    model = build_generator(pretrained=True, weights=str(path))
    first = model.unet[0][0].weight
    # A single-channel input gets the sum of the RGB filters.
    torch.testing.assert_close(first, ref.conv1.weight.sum(dim=1, keepdim=True))


def test_round_trip_through_model_dir(tmp_path, generator):
    save_state_dict(generator, tmp_path / "generator.pth")
    write_model_json(tmp_path, {"architecture": resolve_architecture(), "scale": 2, "normalisation": {"lr": [0, 1], "hr": [0, 1]}})
    model, meta = load_generator(tmp_path)
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), generator.eval()(x))
    assert meta["scale"] == 2


def test_missing_model_json_is_explained(tmp_path):
    with pytest.raises(ModelError, match="has no model.json"):
        load_generator(tmp_path)


class Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "generator.pth"
    torch.save({"w": torch.zeros(1), "evil": Payload()}, path)
    with pytest.raises(ModelError, match="weights_only=True"):
        load_state_dict(path)
    (tmp_path / "model.json").write_text(json.dumps({"architecture": {}}))
    with pytest.raises(ModelError, match="refused"):
        load_generator(tmp_path)


def test_lowres_variant_upsamples_with_icnr_start():
    model = build_generator({"variant": "lowres", "residual": False, "hr_head": 0}).eval()
    with torch.inference_mode():
        y = model(torch.rand(2, 1, 32, 48))
    assert y.shape == (2, 1, 64, 96)
    # ICNR: the four sub-pixels of each LR pixel start out equal (no checkerboard).
    torch.testing.assert_close(y[..., 0::2, 0::2], y[..., 1::2, 1::2])
    torch.testing.assert_close(y[..., 0::2, 1::2], y[..., 1::2, 0::2])


def test_lowres_variant_costs_a_quarter_of_the_compute():
    from torch.utils.flop_counter import FlopCounterMode

    flops = {}
    for variant in ("faithful", "lowres"):
        model = build_generator({"variant": variant}).eval()
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            model(torch.rand(1, 1, 64, 64))
        flops[variant] = fc.get_total_flops()
    assert flops["lowres"] < 0.3 * flops["faithful"]


def test_lowres_variant_has_an_hr_head_by_default_and_starts_near_bilinear():
    from torch.nn import functional as F

    from fastscan.models import LOWRES_HR_HEAD, ModelError, resolve_architecture

    assert resolve_architecture({"variant": "lowres"})["hr_head"] == LOWRES_HR_HEAD
    assert resolve_architecture({})["hr_head"] == 0
    with pytest.raises(ModelError, match="applies to the lowres variant only"):
        resolve_architecture({"hr_head": 8})
    torch.manual_seed(0)
    model = build_generator({"variant": "lowres"}).eval()
    assert model.head is not None and model.head[0].in_channels == LOWRES_HR_HEAD + 1
    x = torch.rand(2, 1, 32, 48)
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (2, 1, 64, 96)
    up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    # The head's last convolution starts small: the untrained generator is close to bilinear.
    assert (y - up).abs().max() < 0.05
    # The U-Net feeds the head 16 feature maps per HR pixel, ICNR-initialised.
    feats = model.shuffle(model.unet(x))
    assert feats.shape == (2, LOWRES_HR_HEAD, 64, 96)
    torch.testing.assert_close(feats[..., 0::2, 0::2], feats[..., 1::2, 1::2])


def test_model_json_of_a_lowres_model_without_hr_head_key_loads_it_without_head(tmp_path):
    model = build_generator({"variant": "lowres", "hr_head": 0})
    save_state_dict(model, tmp_path / "generator.pth")
    write_model_json(tmp_path, {"architecture": {"variant": "lowres", "residual": True}, "scale": 2})
    loaded, _ = load_generator(tmp_path)
    assert loaded.head is None


def test_residual_generator_starts_near_bilinear():
    from torch.nn import functional as F

    x = torch.rand(1, 1, 32, 32)
    up = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        res = build_generator({"residual": True}).eval()(x)
        plain = build_generator({"residual": False}).eval()(x)
    assert (res - up).abs().mean() < (plain - up).abs().mean()


def test_model_json_without_residual_key_loads_the_plain_network(tmp_path):
    # Models written before the residual option existed have no such key and no skip connection.
    model = build_generator({"residual": False})
    arch = {k: v for k, v in json.loads(json.dumps({"variant": "faithful"})).items()}
    save_state_dict(model, tmp_path / "generator.pth")
    write_model_json(tmp_path, {"architecture": arch, "scale": 2})
    loaded, _ = load_generator(tmp_path)
    assert loaded.residual is False
    x = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model.eval()(x))


@pytest.mark.parametrize("variant", ["faithful", "lowres"])
def test_channels_last_generator_keeps_its_last_block_channels_last(variant):
    """The U-Net's last cross connection concatenates its one-channel input with NHWC features;
    with default strides the result was NCHW, which the last residual block converted back."""
    from fastai.layers import ResBlock

    from fastscan.restore.prepare import prepare_generator

    def built():
        torch.manual_seed(0)
        return build_generator({"variant": variant, "img_size": [64, 64]})

    ref = prepare_generator(built(), channels_last=False)
    model = prepare_generator(built())
    last = [m for m in model.unet.modules() if isinstance(m, ResBlock)][-1]
    seen = []
    last.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].is_contiguous(memory_format=torch.channels_last)))
    x = torch.rand(2, 1, 32, 40)
    with torch.inference_mode():
        y = model(x)
        expected = ref(x)
    assert seen == [True]
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-4)
    assert y.is_contiguous()  # the NCHW base of the residual sum decides the output layout


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_residual_base_lowpass_is_a_gaussian_blur(sigma):
    """The smoothed residual base (architecture.base_sigma) is scipy's Gaussian filter with
    torch's reflect padding (scipy's 'mirror') truncated at 3 sigma."""
    from scipy import ndimage as ndi

    from fastscan.torch_generator import lowpass

    x = np.random.default_rng(0).random((1, 1, 24, 20)).astype(np.float32)
    got = lowpass(torch.from_numpy(x), sigma)[0, 0].numpy()
    want = ndi.gaussian_filter(x[0, 0].astype(np.float64), sigma, mode="mirror", truncate=3.0)
    np.testing.assert_allclose(got, want, atol=1e-5)  # float32 sums of about 13 taps
    assert lowpass(torch.from_numpy(x), 0.0) is not None and np.allclose(lowpass(torch.from_numpy(x), 0.0).numpy(), x)
