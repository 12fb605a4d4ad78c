import numpy as np
import pytest
import torch
import torch.nn.functional as F

from src.core.errors import UserError
from src.train.config import TrainConfig
from src.train.engine import build_optimizer
from src.train.losses import FocalLoss, balanced_class_weights, build_loss
from src.train.models import build_model


def test_smallcnn_is_a_timm_model_for_any_channels_and_classes():
    model = build_model(TrainConfig(model="smallcnn"), in_chans=3, num_classes=7)
    assert model(torch.zeros(2, 3, 24, 24)).shape == (2, 7)
    assert model.forward_head(model.forward_features(torch.zeros(1, 3, 24, 24)), pre_logits=True).shape == (1, 128)


def test_timm_models_are_built_by_name_with_data_channels():
    model = build_model(TrainConfig(model="resnet18"), in_chans=1, num_classes=2)
    assert model.eval()(torch.zeros(1, 1, 32, 32)).shape == (1, 2)


def test_pretrained_weights_load_locally_and_a_mismatched_head_is_reinitialised(tmp_path):
    source = build_model(TrainConfig(), in_chans=3, num_classes=5)
    torch.save({"model": source.state_dict()}, tmp_path / "w.pt")
    model = build_model(TrainConfig(pretrained=str(tmp_path / "w.pt")), in_chans=1, num_classes=10)
    conv = "features.0.0.weight"
    assert torch.allclose(model.state_dict()[conv], source.state_dict()[conv].sum(1, keepdim=True))
    assert torch.equal(model.state_dict()["features.2.0.weight"], source.state_dict()["features.2.0.weight"])
    assert model.fc.out_features == 10


def test_pretrained_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(build_model(TrainConfig(model="resnet18"), 1, 2).state_dict(), tmp_path / "r.pt")
    with pytest.raises(UserError, match=r"only 0 of \d+ backbone tensor names match"):
        build_model(TrainConfig(pretrained=str(tmp_path / "r.pt")), 1, 2)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read weights"):
        build_model(TrainConfig(pretrained=str(tmp_path / "junk.pt")), 1, 2)


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    logits, target = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 4
    assert FocalLoss(0.0)(logits, target) == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)
    assert FocalLoss(2.0)(logits, target) < F.cross_entropy(logits, target)


def test_balanced_weights_upweight_rare_classes():
    weights = balanced_class_weights(np.array([0, 0, 0, 1]), 2)
    assert weights.tolist() == pytest.approx([4 / 6, 2.0])
    loss = build_loss("label_smoothing", TrainConfig(label_smoothing=0.2), weights)
    assert loss.label_smoothing == 0.2 and torch.equal(loss.weight, weights)


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_optimizer_skips_weight_decay_on_biases_and_norms(name):
    model = build_model(TrainConfig(), 1, 3)
    opt = build_optimizer(TrainConfig(optimizer=name, weight_decay=0.1), model)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
