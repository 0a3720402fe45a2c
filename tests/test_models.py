import json

import pytest
import torch

from fastscan.models import (
    ModelError,
    build_generator,
    find_pretrained_weights,
    load_generator,
    load_state_dict,
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
    write_model_json(tmp_path, {"architecture": {}, "scale": 2, "normalisation": {"lr": [0, 1], "hr": [0, 1]}})
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
