import pytest
import torch
from torch import nn

from reidmodel.model.backbone import build_backbone, stage_channels


def feature_map(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return nn.Sequential(*list(backbone.children())[:-2])(x)  # everything before avgpool and fc


@pytest.mark.parametrize("name", ["resnet10", "resnet18"])
@pytest.mark.parametrize("last_stride, size", [(1, (4, 2)), (2, (2, 1))])
def test_feature_map_size_follows_last_stride(name, last_stride, size):
    backbone = build_backbone(name, last_stride=last_stride).eval()
    with torch.no_grad():
        out = feature_map(backbone, torch.randn(2, 3, 64, 32))
    assert out.shape == (2, 512, *size)


def test_stage_channels():
    basic = {"conv2": 64, "conv3": 128, "conv4": 256, "conv5": 512}
    assert stage_channels(build_backbone("resnet10")) == basic
    assert stage_channels(build_backbone("resnet34")) == basic
    resnet50 = build_backbone("resnet50")
    assert stage_channels(resnet50) == {"conv2": 256, "conv3": 512, "conv4": 1024, "conv5": 2048}
    with torch.no_grad():
        assert feature_map(resnet50.eval(), torch.randn(1, 3, 64, 32)).shape == (1, 2048, 4, 2)


def test_resnet10_is_one_block_per_stage():
    backbone = build_backbone("resnet10")
    assert [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]


def test_bad_name_and_stride():
    with pytest.raises(ValueError, match="unknown backbone 'resnet99'.*model.backbone"):
        build_backbone("resnet99")
    with pytest.raises(ValueError, match="model.last_stride"):
        build_backbone("resnet10", last_stride=3)


def test_pretrained_path_loads_everything_but_fc(tmp_path):
    torch.manual_seed(1)
    source = build_backbone("resnet10")
    state = source.state_dict()
    state["fc.weight"] = torch.randn(5, 512)  # another classifier: ignored
    state["fc.bias"] = torch.randn(5)
    path = tmp_path / "resnet10.pth"
    torch.save(state, path)
    torch.manual_seed(2)
    loaded = build_backbone("resnet10", pretrained=str(path))
    for key, value in loaded.state_dict().items():
        if key.startswith("fc."):
            assert value.shape[0] == 1000
        else:
            assert torch.equal(value, source.state_dict()[key]), key


def test_pretrained_path_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(ValueError, match="nope.pth") as info:
        build_backbone("resnet10", pretrained=str(missing))
    assert "\n" not in str(info.value)

    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth could not be read") as info:
        build_backbone("resnet10", pretrained=str(garbage))
    assert "\n" not in str(info.value)

    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(ValueError, match="list.pth is not a state dict"):
        build_backbone("resnet10", pretrained=str(not_a_dict))

    other_arch = tmp_path / "resnet18.pth"
    torch.save(build_backbone("resnet18").state_dict(), other_arch)
    with pytest.raises(ValueError, match="resnet18.pth has unexpected key 'layer1.1"):
        build_backbone("resnet10", pretrained=str(other_arch))

    state = build_backbone("resnet10").state_dict()
    state["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save(state, wrong_shape)
    with pytest.raises(ValueError, match="'conv1.weight' shape \\(64, 3, 3, 3\\)"):
        build_backbone("resnet10", pretrained=str(wrong_shape))


def test_imagenet_without_cache_or_network_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dst, *args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(RuntimeError) as info:
        build_backbone("resnet18", pretrained="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "ImageNet weights for resnet18 could not be loaded" in message
    assert "model.pretrained" in message and "resnet18-f37072fd.pth" in message and "none" in message


def test_imagenet_reads_the_hub_cache_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    cached = build_backbone("resnet18", last_stride=2)
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(cached.state_dict(), checkpoints / "resnet18-f37072fd.pth")

    def no_download(url, dst, *args, **kwargs):
        raise AssertionError("the cached file must be used")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    loaded = build_backbone("resnet18", pretrained="imagenet")
    assert torch.equal(loaded.layer4[1].conv2.weight, cached.layer4[1].conv2.weight)


def test_imagenet_cache_is_read_weights_only(tmp_path, monkeypatch):
    """A cached file holding more than tensors is refused rather than unpickled."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(1), "extra": nn.ReLU()}, checkpoints / "resnet18-f37072fd.pth")
    with pytest.raises(RuntimeError, match="ImageNet weights for resnet18 could not be loaded"):
        build_backbone("resnet18", pretrained="imagenet")


def test_resnet10_has_no_imagenet_weights():
    with pytest.raises(ValueError, match="no ImageNet weights for resnet10"):
        build_backbone("resnet10", pretrained="imagenet")
