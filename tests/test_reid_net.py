
import pytest
import torch
import torch.nn.functional as F

from reidmodel.config import ModelConfig, preset
from reidmodel.model import CBAM, ReIDNet, ReIDOutput, build_backbone, build_model


def small_model(num_classes=6, **kwargs) -> ReIDNet:
    return ReIDNet(build_backbone("resnet10"), num_classes, **kwargs)


def test_train_and_eval_outputs():
    torch.manual_seed(0)
    model = small_model()
    x = torch.randn(4, 3, 64, 32)
    out = model(x)
    assert isinstance(out, ReIDOutput)
    assert out.logits.shape == (4, 6) and out.global_feat.shape == (4, 512) and out.bn_feat.shape == (4, 512)
    # Training-mode BatchNorm1d standardises each dimension over the batch.
    torch.testing.assert_close(out.bn_feat.mean(0), torch.zeros(512), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logits, out.bn_feat @ model.classifier.weight.t())
    model.eval()
    with torch.no_grad():
        features = model(x)
    assert features.shape == (4, 512) and model.feature_dim == 512


def pooled_feature(model: ReIDNet, x: torch.Tensor) -> torch.Tensor:
    """The training-mode pooled feature, computed with running statistics that it leaves untouched."""
    model.train()
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.eval()
    with torch.no_grad():
        return model(x).global_feat


@pytest.mark.parametrize("bnneck", [True, False])
def test_test_feature_is_the_pooled_feature_after_the_neck(bnneck):
    torch.manual_seed(0)
    model = small_model(bnneck=bnneck)
    x = torch.randn(2, 3, 64, 32)
    pooled = pooled_feature(model, x)
    with torch.no_grad():
        features = model.eval()(x)
    # A fresh BNNeck has running mean 0 and variance 1.
    expected = pooled / (1 + model.bottleneck.eps) ** 0.5 if bnneck else pooled
    torch.testing.assert_close(features, expected)


def test_baseline_without_bnneck_has_no_neck():
    torch.manual_seed(0)
    model = small_model(bnneck=False)
    out = model(torch.randn(4, 3, 64, 32))
    assert out.bn_feat is out.global_feat
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())


def test_resnet50_feature_dim():
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="resnet50", pretrained="none"), num_classes=3).eval()
    assert model.feature_dim == 2048
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 32)).shape == (2, 2048)


def test_bnneck_bias_is_frozen_at_zero():
    torch.manual_seed(0)
    model = small_model()
    assert not model.bottleneck.bias.requires_grad
    assert torch.equal(model.bottleneck.weight, torch.ones(512))
    assert model.classifier.bias is None
    assert 0.0005 < model.classifier.weight.std().item() < 0.002
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    out = model(torch.randn(4, 3, 64, 32))
    F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])).backward()
    optimizer.step()
    assert torch.equal(model.bottleneck.bias, torch.zeros(512))
    assert not torch.equal(model.bottleneck.weight, torch.ones(512))


def test_reset_classifier():
    torch.manual_seed(0)
    model = small_model()
    model.reset_classifier(9)
    assert model(torch.randn(4, 3, 64, 32)).logits.shape == (4, 9)
    templates = F.normalize(torch.randn(5, 512), dim=1) * 10
    model.reset_classifier(5, templates)
    assert torch.equal(model.classifier.weight, templates)
    assert model.classifier.weight.requires_grad
    with pytest.raises(ValueError, match=r"shape \(5, 256\), expected \(5, 512\)"):
        model.reset_classifier(5, torch.zeros(5, 256))


@pytest.mark.parametrize(
    "stages, channels",
    [
        ([], {}),
        (["conv3"], {"conv3": 128}),
        (["conv5", "conv3", "conv4"], {"conv3": 128, "conv4": 256, "conv5": 512}),
    ],
)
def test_attention_locations(stages, channels):
    model = small_model(attention=stages)
    assert {stage: module.channel.mlp[0].in_channels for stage, module in model.attention.items()} == channels
    assert list(model.attention) == sorted(channels)
    assert sum(isinstance(m, CBAM) for m in model.modules()) == len(channels)


def test_unknown_attention_stage():
    with pytest.raises(ValueError, match="unknown attention stage"):
        small_model(attention=["conv2"])


def test_fresh_attention_does_not_change_the_features():
    x = torch.randn(2, 3, 64, 32)
    features = []
    for stages in ([], ["conv3", "conv4", "conv5"]):
        torch.manual_seed(0)
        model = small_model(attention=stages).eval()
        with torch.no_grad():
            features.append(model(x))
    assert torch.equal(features[0], features[1])


def test_same_seed_same_outputs():
    x = torch.randn(3, 3, 64, 32)
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        outputs.append(build_model(preset("cpu").model, num_classes=4)(x))
    for a, b in zip(outputs[0], outputs[1], strict=True):
        assert torch.equal(a, b)


def test_channels_last_and_autocast():
    torch.manual_seed(0)
    model = small_model().eval()
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            features = model(x.to(memory_format=torch.channels_last))
    assert features.shape == (2, 512) and torch.isfinite(features).all()
    assert F.cosine_similarity(features.float(), reference).min() > 0.99
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 3, 64, 32).to(memory_format=torch.channels_last))
    out.logits.float().sum().backward()
    assert model.stem[0].weight.grad is not None


def test_build_model_follows_the_config():
    cfg = preset("cpu").model.model_copy(update={"attention": ["conv4"], "bnneck": False, "last_stride": 2})
    model = build_model(cfg, num_classes=3)
    assert list(model.attention) == ["conv4"]
    assert isinstance(model.bottleneck, torch.nn.Identity)
    assert model.stages["conv5"][0].conv1.stride == (2, 2)
