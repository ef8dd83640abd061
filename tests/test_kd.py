import pytest
import torch
from torch import nn

from reidmodel.kd import merge_weights
from reidmodel.model import ReIDNet, build_backbone


class TinyNet(nn.Module):
    def __init__(self, hidden: int = 4, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(3, hidden), nn.BatchNorm1d(hidden))
        self.classifier = nn.Linear(hidden, num_classes, bias=False)

    def forward(self, x):
        return self.classifier(self.features(x))


def tiny_pair(target_batches: int = 1, intermediate_batches: int = 3, **intermediate_kwargs):
    torch.manual_seed(0)
    target, intermediate = TinyNet(), TinyNet(**intermediate_kwargs)
    for model, batches in ((target, target_batches), (intermediate, intermediate_batches)):
        for _ in range(batches):  # distinct BatchNorm running statistics and counters
            model(torch.randn(8, 3) * batches + batches)
    with torch.no_grad():
        for parameter in intermediate.parameters():
            parameter.add_(torch.randn_like(parameter))
    return target, intermediate


def snapshot(model):
    return {key: value.clone() for key, value in model.state_dict().items()}


def test_merge_arithmetic_including_running_stats():
    target, intermediate = tiny_pair()
    before_target, before_intermediate = snapshot(target), snapshot(intermediate)
    merged = merge_weights(target, intermediate, mu=0.3)
    after = target.state_dict()
    assert merged == [key for key in before_target if not key.startswith("classifier.")]
    assert "features.1.running_mean" in merged and "features.1.running_var" in merged
    for key in merged:
        if key.endswith("num_batches_tracked"):
            assert after[key].item() == 3
        else:
            torch.testing.assert_close(after[key], 0.7 * before_target[key] + 0.3 * before_intermediate[key])
            assert not torch.equal(after[key], before_target[key])
    assert torch.equal(after["classifier.weight"], before_target["classifier.weight"])
    for key, value in intermediate.state_dict().items():
        assert torch.equal(value, before_intermediate[key])
    assert all(p.requires_grad and p.is_leaf and p.grad_fn is None for p in target.parameters())


def test_mu_edges_are_exact():
    target, intermediate = tiny_pair()
    before = snapshot(target)
    merge_weights(target, intermediate, mu=0.0)
    for key, value in target.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, before[key])
    merge_weights(target, intermediate, mu=1.0)
    for key, value in target.state_dict().items():
        reference = before if key.startswith("classifier.") else intermediate.state_dict()
        assert torch.equal(value, reference[key])


def test_exclusion_prefixes():
    target, intermediate = tiny_pair()
    before = snapshot(target)
    merged = merge_weights(target, intermediate, mu=0.5, exclude=("features.1.",))
    assert merged == ["features.0.weight", "features.0.bias", "classifier.weight"]
    assert torch.equal(target.state_dict()["features.1.running_mean"], before["features.1.running_mean"])


@pytest.mark.parametrize("mu", [-0.1, 1.5])
def test_mu_out_of_range(mu):
    target, intermediate = tiny_pair()
    with pytest.raises(ValueError, match="kd.mu"):
        merge_weights(target, intermediate, mu=mu)


def test_mismatches_name_the_key():
    target, intermediate = tiny_pair(hidden=5)
    with pytest.raises(
        ValueError, match="'features.0.weight' has shape \\(4, 3\\) in the target model and \\(5, 3\\)"
    ):
        merge_weights(target, intermediate, mu=0.5)
    target, intermediate = tiny_pair()
    intermediate.extra = nn.Linear(1, 1)
    with pytest.raises(ValueError, match="'extra.weight' is in the intermediate model only"):
        merge_weights(target, intermediate, mu=0.5)
    with pytest.raises(ValueError, match="'extra.weight' is in the target model only"):
        merge_weights(intermediate, target, mu=0.5)


def test_classifiers_of_different_sizes_are_left_alone():
    target, intermediate = tiny_pair(num_classes=7)
    merge_weights(target, intermediate, mu=0.5)
    assert target.classifier.weight.shape == (2, 4)


def test_merge_reid_nets_with_different_label_sets():
    torch.manual_seed(0)
    target = ReIDNet(build_backbone("resnet10"), num_classes=4)
    intermediate = ReIDNet(build_backbone("resnet10"), num_classes=9)
    expected = (
        0.5 * target.attention["conv5"].channel.mlp[0].weight
        + 0.5 * intermediate.attention["conv5"].channel.mlp[0].weight
    )
    merged = merge_weights(target, intermediate, mu=0.5)
    assert "bottleneck.running_var" in merged and not any(key.startswith("classifier.") for key in merged)
    torch.testing.assert_close(target.attention["conv5"].channel.mlp[0].weight, expected.detach())
