import pytest
import torch
from torchvision.transforms import v2

from reidmodel.config import DataConfig
from reidmodel.data import IMAGENET_MEAN, IMAGENET_STD, build_test_transform, build_train_transform


def _cfg(**overrides) -> DataConfig:
    return DataConfig(height=16, width=8, **overrides)


def _image(height=20, width=10, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_test_transform_values():
    image = torch.empty(3, 16, 8, dtype=torch.uint8)
    for channel, value in enumerate((0, 128, 255)):
        image[channel] = value
    out = build_test_transform(_cfg())(image)
    assert out.dtype == torch.float32 and out.shape == (3, 16, 8)
    for channel, value in enumerate((0, 128, 255)):
        expected = (value / 255 - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
        assert torch.allclose(out[channel], torch.full((16, 8), expected), atol=1e-6)


def test_test_transform_resizes():
    out = build_test_transform(_cfg())(_image(40, 20))
    assert out.shape == (3, 16, 8)


def test_train_transform_shapes_and_range():
    transform = build_train_transform(_cfg(pad=2))
    torch.manual_seed(0)
    outs = torch.stack([transform(_image(seed=i)) for i in range(8)])
    assert outs.shape == (8, 3, 16, 8) and outs.dtype == torch.float32
    low = min((0 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    high = max((1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True))
    assert low - 1e-5 <= outs.min() and outs.max() <= high + 1e-5


def test_flip_only_equals_flipped_test_output():
    cfg = _cfg(flip_prob=1.0, pad=0, color_jitter=0.0, random_erasing_prob=0.0)
    image = _image(16, 8)
    assert torch.equal(build_train_transform(cfg)(image), build_test_transform(cfg)(image).flip(-1))
    assert not any(isinstance(t, v2.ColorJitter) for t in build_train_transform(cfg).transforms)


def test_pad_and_crop_shift_the_image():
    cfg = _cfg(flip_prob=0.0, pad=3, color_jitter=0.0, random_erasing_prob=0.0)
    image = torch.full((3, 16, 8), 200, dtype=torch.uint8)
    torch.manual_seed(1)
    outs = [build_train_transform(cfg)(image) for _ in range(20)]
    black = (0 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    # Some crops reach into the zero padding; none is larger than the padding allows.
    assert any(torch.isclose(o[0], torch.tensor(black)).any() for o in outs)
    for out in outs:
        padded_rows = torch.isclose(out[0], torch.tensor(black)).all(dim=1).sum()
        assert padded_rows <= 3


def test_random_erasing_paints_the_mean():
    cfg = _cfg(flip_prob=0.0, pad=0, color_jitter=0.0, random_erasing_prob=1.0)
    torch.manual_seed(0)
    out = build_train_transform(cfg)(torch.full((3, 16, 8), 255, dtype=torch.uint8))
    erased = (out == 0).all(dim=0)
    assert 0 < erased.sum() < 16 * 8


@pytest.mark.parametrize("jitter", [0.0, 0.4])
def test_deterministic_under_manual_seed(jitter):
    transform = build_train_transform(_cfg(color_jitter=jitter, pad=2))
    image = _image()
    torch.manual_seed(3)
    first = [transform(image) for _ in range(5)]
    torch.manual_seed(3)
    second = [transform(image) for _ in range(5)]
    torch.manual_seed(4)
    third = [transform(image) for _ in range(5)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a, c) for a, c in zip(first, third, strict=True))
