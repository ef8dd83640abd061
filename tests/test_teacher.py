import pytest
import torch
from torch import nn

from reidmodel.teacher import EMATeacher, ramped_momentum


def two_parameter_model(weight: float, bias: float) -> nn.Linear:
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(weight)
        model.bias.fill_(bias)
    return model


def values(model: nn.Linear) -> tuple[float, float]:
    return model.weight.item(), model.bias.item()


def set_values(model: nn.Linear, weight: float, bias: float) -> None:
    with torch.no_grad():
        model.weight.fill_(weight)
        model.bias.fill_(bias)


def test_ema_update_by_hand_momentum_half_two_steps():
    teacher, student = two_parameter_model(1.0, 2.0), two_parameter_model(3.0, 4.0)
    # Past the ramp (step 5: min(1 - 1/6, 0.5) = 0.5), so each update is teacher := 0.5 teacher + 0.5 student.
    ema = EMATeacher(teacher, student, momentum=0.5, steps=5)
    ema.update()
    assert values(teacher) == pytest.approx((2.0, 3.0))  # 0.5 * (1, 2) + 0.5 * (3, 4)
    set_values(student, 5.0, 8.0)
    ema.update()
    assert values(teacher) == pytest.approx((3.5, 5.5))  # 0.5 * (2, 3) + 0.5 * (5, 8)
    assert ema.steps == 7 and values(student) == (5.0, 8.0)


def test_the_ramp_copies_the_student_first_then_averages_its_iterates():
    assert [ramped_momentum(0.999, step) for step in range(3)] == pytest.approx([0.0, 0.5, 2 / 3])
    assert ramped_momentum(0.9, 10_000) == 0.9
    teacher, student = two_parameter_model(1.0, 2.0), two_parameter_model(3.0, 4.0)
    ema = EMATeacher(teacher, student, momentum=0.999)
    ema.update()  # momentum 0: the teacher becomes the student
    assert values(teacher) == pytest.approx((3.0, 4.0))
    set_values(student, 5.0, 6.0)
    ema.update()  # momentum 1/2: the mean of the two iterates
    assert values(teacher) == pytest.approx((4.0, 5.0))


class TinyNet(nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.classifier = nn.Linear(4, num_classes, bias=False)

    def forward(self, x):
        return self.classifier(self.features(x))


def test_classifier_left_out_and_batchnorm_statistics_from_the_teachers_own_pass():
    torch.manual_seed(0)
    teacher, student = TinyNet(num_classes=2), TinyNet(num_classes=5)  # the student's classes change per cycle
    student(torch.randn(8, 3) * 3 + 2)  # the student's own running statistics, which must not be copied
    classifier = teacher.classifier.weight.clone()
    images = torch.randn(8, 3)
    expected_mean = 0.9 * teacher.features[1].running_mean + 0.1 * teacher.features[0](images).mean(0)
    teacher.eval()
    ema = EMATeacher(teacher, student, momentum=0.5, steps=5)
    ema.after_step(images)
    torch.testing.assert_close(teacher.features[1].running_mean, expected_mean.detach())
    assert not torch.equal(teacher.features[1].running_mean, student.features[1].running_mean)
    assert torch.equal(teacher.classifier.weight, classifier) and not teacher.training
    assert ema.steps == 6


def test_architectures_must_match():
    with pytest.raises(ValueError, match="one architecture"):
        EMATeacher(TinyNet(2), nn.Linear(3, 4), momentum=0.5)
    with pytest.raises(ValueError, match="kd.ema_momentum"):
        EMATeacher(TinyNet(2), TinyNet(2), momentum=1.0)
