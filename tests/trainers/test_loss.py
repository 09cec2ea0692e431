"""Hard distillation (DeiT) from a timm teacher, and where the teacher's weights may come from."""

import pytest
import timm
import torch
import torch.nn.functional as F

from slimnas.errors import InputError
from slimnas.testing import tiny_train_config
from slimnas.trainers import DistillConfig, train_supernet
from slimnas.trainers._loss import DistillationLoss, load_teacher


class _Fixed(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits


def test_hard_distillation_loss_is_the_deit_formula():
    torch.manual_seed(0)
    logits, logits_dist, teacher_logits = torch.randn(3, 6, 5).unbind(0)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    loss = DistillationLoss(torch.nn.CrossEntropyLoss(), _Fixed(teacher_logits), alpha=0.5)
    expected = 0.5 * F.cross_entropy(logits, y) + 0.5 * F.cross_entropy(logits_dist, teacher_logits.argmax(1))
    assert torch.allclose(loss(torch.zeros(6, 3, 8, 8), (logits, logits_dist), y), expected)
    plain = DistillationLoss(torch.nn.CrossEntropyLoss())
    assert torch.allclose(plain(None, (logits, logits_dist), y), F.cross_entropy((logits + logits_dist) / 2, y))
    assert "teacher" not in dict(loss.named_modules())  # never saved with the student, never trained


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "test_resnet.pth"
    torch.manual_seed(0)
    torch.save({"state_dict": timm.create_model("test_resnet", num_classes=10).state_dict()}, path)
    return path


def test_load_teacher_from_a_state_dict(teacher_file):
    teacher = load_teacher(DistillConfig(enabled=True, teacher_model="test_resnet",
                                         teacher_weights=str(teacher_file)), 10, torch.device("cpu"))
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert teacher(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs, classes, message",
    [
        ({"teacher_model": "not_a_model"}, 10, "distill.teacher_model: unknown timm model 'not_a_model'"),
        ({"teacher_model": "test_resnet", "teacher_weights": "/no/file.pth"}, 10,
         "distill.teacher_weights: no such file /no/file.pth"),
        ({"teacher_model": "test_resnet"}, 10, "distill.teacher_model: no local pretrained weights"),
        ({"teacher_model": "test_resnet", "teacher_weights": "TEACHER"}, 7, "does not fit test_resnet with 7 classes"),
    ],
)
def test_bad_teachers(kwargs, classes, message, teacher_file):
    if kwargs.get("teacher_weights") == "TEACHER":
        kwargs = {**kwargs, "teacher_weights": str(teacher_file)}
    with pytest.raises(InputError, match=message):
        load_teacher(DistillConfig(enabled=True, **kwargs), classes, torch.device("cpu"))


def test_supernet_trains_with_a_teacher(tmp_path, teacher_file):
    distill = {"enabled": True, "teacher_model": "test_resnet", "teacher_weights": str(teacher_file)}
    result = train_supernet(tiny_train_config(tmp_path, "kd", distill=distill, augment={"mixup": 0.4},
                                              run={"max_steps_per_epoch": 2}))
    assert result.model.distilled_training and result.history[0]["val_top1"] > 0
    ckpt = torch.load(result.checkpoint, weights_only=True)
    assert not any(k.startswith("teacher") for k in ckpt["model"])
