import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fastscan.infer import blend_window, predict_image, tile_starts


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
    out = predict_image(Nearest(), image, scale=2, tile=24, overlap=6)
    np.testing.assert_allclose(out[::2, ::2], image, rtol=1e-6)
