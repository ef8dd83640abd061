"""The shared training step and epoch loop: the centres' gradient rescale, the warm-up schedule, per-epoch seeds."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reidmodel.config import ConfigError, LossConfig
from reidmodel.engine import (
    DivergenceError,
    TrainStep,
    build_optimizers,
    epoch_seed,
    resolve_device,
    step_schedule,
    train_epochs,
    train_one_epoch,
)
from reidmodel.losses import ReIDLoss
from reidmodel.model.reid_net import ReIDOutput

CPU = torch.device("cpu")


class TinyNet(nn.Module):
    """Just enough of a re-ID network for the loss: one feature, a bias-free classifier."""

    def __init__(self, num_classes: int = 3, dim: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(6, dim)
        self.classifier = nn.Linear(dim, num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> ReIDOutput:
        feature = self.embed(x)
        return ReIDOutput(self.classifier(feature), feature, feature)


def one_batch() -> list[tuple[torch.Tensor, ...]]:
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return [(torch.randn(6, 6), labels, torch.zeros(6, dtype=torch.long), torch.arange(6))]


@pytest.mark.parametrize("beta", [0.5, 0.005])
def test_centres_step_as_if_beta_were_one(beta):
    """The centres move by center_lr x the gradient of the unweighted centre loss, whatever beta is."""
    torch.manual_seed(0)
    model, loader = TinyNet(), one_batch()
    criterion = ReIDLoss(LossConfig(center_weight=beta), num_classes=3, feat_dim=4)
    optimizer, center_optimizer = build_optimizers(model, criterion, lr=1e-3, weight_decay=0.0, center_lr=0.5)
    images, labels, _, _ = loader[0]
    before = criterion.center.centers.detach().clone()
    unweighted = criterion.center(F.normalize(model(images).bn_feat, dim=1), labels)
    (gradient,) = torch.autograd.grad(unweighted, criterion.center.centers)

    train_one_epoch(model, loader, TrainStep(criterion, optimizer, center_optimizer, center_weight=beta, device=CPU))
    moved = criterion.center.centers.detach() - before
    assert moved.abs().max() > 0
    torch.testing.assert_close(moved, -0.5 * gradient)


def test_warmup_then_step_decay():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = step_schedule(optimizer, step_size=3, gamma=0.1, warmup_epochs=2)
    rates = []
    for _ in range(7):
        rates.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert rates == pytest.approx([0.5, 1.0, 1.0, 0.1, 0.1, 0.1, 0.01])

    no_warmup = step_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=2.0), 3, 0.1, warmup_epochs=0)
    assert no_warmup.get_last_lr() == pytest.approx([2.0])


def test_epoch_seeds_are_distinct_stable_and_in_range():
    keys = [("source", 0, e) for e in range(200)] + [
        ("adapt", c, e) for c, e in itertools.product(range(1, 33), range(20))
    ]
    seeds = [epoch_seed(7, *key) for key in keys]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds)
    # A pure function of its arguments: a resumed run draws the same batches as an unbroken one.
    assert seeds == [epoch_seed(7, *key) for key in keys]
    assert epoch_seed(8, "adapt", 1, 0) != epoch_seed(7, "adapt", 1, 0)
    assert epoch_seed(2**40, "source", 0, 0) < 2**31
    with pytest.raises(KeyError):
        epoch_seed(0, "finetune", 0, 0)


def test_empty_loader_and_missing_gpu_fail_with_one_line():
    model = TinyNet()
    criterion = ReIDLoss(LossConfig(), num_classes=3, feat_dim=4)
    optimizer, center_optimizer = build_optimizers(model, criterion, 1e-3, 0.0, 0.5)
    with pytest.raises(RuntimeError, match="data.batch_size") as info:
        train_one_epoch(model, [], TrainStep(criterion, optimizer, center_optimizer, center_weight=0.1, device=CPU))
    assert "\n" not in str(info.value)
    assert resolve_device("cpu") == CPU
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="runtime.device=cpu or auto"):  # a config error: not retried
            resolve_device("cuda")


def tiny_step(model: nn.Module, lr_key: str = "the learning rate") -> TrainStep:
    criterion = ReIDLoss(LossConfig(), num_classes=3, feat_dim=4)
    optimizer, center_optimizer = build_optimizers(model, criterion, 1e-3, 0.0, 0.5)
    return TrainStep(criterion, optimizer, center_optimizer, 0.0005, CPU, lr_key=lr_key)


class SeedRecorder:
    """A loader factory that records each epoch's loader seed and the torch seed its batches are drawn under."""

    def __init__(self) -> None:
        self.seeds: list[tuple[int, int]] = []

    def __call__(self, *, seed: int) -> list:
        self.seeds.append((seed, -1))
        return self

    def __iter__(self):
        self.seeds[-1] = (self.seeds[-1][0], torch.initial_seed())
        return iter(one_batch())


def test_epoch_loop_seeds_each_epoch_and_steps_the_schedule():
    torch.manual_seed(0)
    model = TinyNet()
    step = tiny_step(model)
    schedule = step_schedule(step.optimizer, step_size=1, gamma=0.5, warmup_epochs=0)
    loaders = SeedRecorder()
    rows = train_epochs(model, step, loaders, epochs=3, seed=7, stage="adapt", cycle=2, schedule=schedule)
    expected = [epoch_seed(7, "adapt", 2, epoch) for epoch in range(3)]
    assert loaders.seeds == [(seed, seed) for seed in expected]  # the loader and torch share the epoch's seed
    assert [(row["stage"], row["cycle"], row["epoch"]) for row in rows] == [("adapt", 2, e) for e in (1, 2, 3)]
    assert set(rows[0]) >= {"loss_total", "loss_id", "loss_triplet", "loss_center"}
    assert schedule.get_last_lr() == pytest.approx([1e-3 * 0.5**3])


def test_epoch_loop_is_reproducible_from_the_seed_alone():
    def train(earlier_draws: int) -> dict:
        torch.manual_seed(0)
        model = TinyNet()
        step = tiny_step(model)
        torch.manual_seed(earlier_draws)  # whatever was drawn before, each epoch reseeds (the batches use torch)
        train_epochs(model, step, SeedRecorder(), epochs=2, seed=3, stage="source")
        return model.state_dict()

    torch.testing.assert_close(train(1), train(2), rtol=0, atol=0)


def test_nan_loss_names_the_stage_learning_rate():
    model = TinyNet()
    images, labels, camids, index = one_batch()[0]
    batch = [(torch.full_like(images, math.nan), labels, camids, index)]
    with pytest.raises(DivergenceError, match="lower adapt.lr"):
        train_one_epoch(model, batch, tiny_step(model, lr_key="adapt.lr"))


def test_machine_description_names_kernels_threads_and_torch():
    from reidmodel.engine import cpu_model, machine_description

    described = machine_description(torch.device("cpu"))
    assert described == (f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()} kernels), "
                         f"{torch.get_num_threads()} thread(s), torch {torch.__version__}")
    assert cpu_model() and "\n" not in cpu_model()
