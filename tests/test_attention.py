import pytest
import torch

from reidmodel.model.attention import CBAM, ChannelAttention, SpatialAttention


def test_fresh_cbam_is_exactly_the_identity():
    torch.manual_seed(0)
    x = torch.randn(2, 32, 6, 4)
    assert torch.equal(CBAM(32)(x), x)
    assert torch.equal(ChannelAttention(32)(x), x)
    assert torch.equal(SpatialAttention()(x), x)


def test_hidden_width_has_a_floor_of_eight():
    assert ChannelAttention(32, reduction=16).mlp[0].out_channels == 8
    assert ChannelAttention(512, reduction=16).mlp[0].out_channels == 32


def test_cbam_learns_from_identity_init():
    torch.manual_seed(0)
    module = CBAM(16)
    x = torch.randn(2, 16, 5, 3)
    weights = torch.randn(2, 16, 5, 3)
    (module(x) * weights).sum().backward()
    assert module.channel.mlp[2].weight.grad.abs().sum() > 0
    assert module.spatial.conv.weight.grad.abs().sum() > 0
    torch.optim.SGD(module.parameters(), lr=0.1).step()
    assert not torch.allclose(module(x), x)


def test_gates_follow_the_cbam_formulas():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 5, 3)
    channel = ChannelAttention(16)
    torch.nn.init.normal_(channel.mlp[2].weight)
    w1, w2 = channel.mlp[0].weight[:, :, 0, 0], channel.mlp[2].weight[:, :, 0, 0]
    avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
    z = torch.relu(avg @ w1.t()) @ w2.t() + torch.relu(mx @ w1.t()) @ w2.t()
    torch.testing.assert_close(channel(x), x * 2 * torch.sigmoid(z)[:, :, None, None])

    spatial = SpatialAttention(kernel_size=3)
    torch.nn.init.normal_(spatial.conv.weight)
    maps = torch.stack([x.mean(dim=1), x.amax(dim=1)], dim=1)
    z = torch.nn.functional.conv2d(maps, spatial.conv.weight, padding=1)
    torch.testing.assert_close(spatial(x), x * 2 * torch.sigmoid(z))


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="kernel_size=6 must be odd"):
        SpatialAttention(kernel_size=6)
