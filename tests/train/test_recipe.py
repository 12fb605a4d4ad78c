"""The training-recipe options: mixup/cutmix, the photo augmentation preset, drop path and smallresnet."""
import numpy as np
import pandas as pd
import pytest
import torch
from timm.data import Mixup

from src.core.errors import UserError
from src.data.augment import build_transforms
from src.train.config import TrainConfig
from src.train.engine import mix_batch
from src.train.models import build_model

from helpers import make_trainer


@pytest.mark.parametrize("batch", [8, 7, 1])
@pytest.mark.parametrize("alphas", [(0.4, 0.0), (0.0, 1.0), (0.4, 1.0)])
def test_mixed_targets_are_distributions_that_mix_two_classes(batch, alphas):
    np.random.seed(0)
    mixup = Mixup(mixup_alpha=alphas[0], cutmix_alpha=alphas[1], label_smoothing=0.0, num_classes=5)
    x, y = torch.randn(batch, 3, 16, 16), torch.arange(batch) % 5
    mixed, targets = mix_batch(mixup, 5, x.clone(), y)
    assert mixed.shape == x.shape and targets.shape == (batch, 5)
    assert torch.allclose(targets.sum(1), torch.ones(batch))
    assert ((targets > 0).sum(1) <= 2).all()  # each image mixes with one partner at most
    if batch > 1:
        assert not torch.equal(mixed[: batch - batch % 2], x[: batch - batch % 2])
    if batch % 2:  # timm mixes even batches: the odd last image stays as it was, with a one-hot target
        assert torch.equal(mixed[-1], x[-1]) and targets[-1, y[-1]] == 1


def test_mixup_trains_on_soft_targets_but_validates_and_writes_oof_on_hard_labels(tmp_path):
    trainer = make_trainer(tmp_path, mixup_alpha=0.4, cutmix_alpha=1.0, mixup_off_epoch=2, epochs=3)
    seen = []
    original = trainer.losses["label_smoothing"].forward
    trainer.losses["label_smoothing"].forward = lambda logits, target: seen.append(target) or original(logits, target)
    trainer.fit(quiet=True)
    soft = [t.is_floating_point() for t in seen]
    steps = len(seen) // 3  # three epochs of equal length
    assert all(soft[: 2 * steps]) and not any(soft[2 * steps:])  # mixed until mixup_off_epoch, then hard labels
    result = trainer.write_oof()
    oof = pd.read_csv(tmp_path / "oof.csv")
    assert set(oof["label"]) <= {"neg", "pos"} and len(oof) == 16 and 0 <= result["accuracy"] <= 1


def test_mixup_and_photo_augment_resume_exactly(tmp_path):
    options = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "augment": "photo", "epochs": 3}
    full = make_trainer(tmp_path / "full", **options)
    full.fit(quiet=True)
    part = make_trainer(tmp_path / "part", **options)

    def interrupt(fold, row):  # stop after the second epoch, as a killed run would (last.pt is written first)
        if row["epoch"] == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        part.fit(quiet=True, on_epoch=interrupt)
    resumed = make_trainer(tmp_path / "part", **options)
    resumed.resume()
    resumed.fit(quiet=True)
    keys = ["train_loss", "val_accuracy", "val_log_loss"]
    assert [[row[k] for k in keys] for row in resumed.log] == [[row[k] for k in keys] for row in full.log]


@pytest.mark.parametrize("channels", [1, 3])
def test_photo_preset_keeps_size_and_dtype_and_is_seeded(channels):
    image = np.random.default_rng(0).integers(0, 255, (40, 30, channels), dtype=np.uint8)
    transform = build_transforms("photo", "none", (40, 30))
    outputs = []
    for _ in range(2):
        transform.set_random_seed(3)
        outputs.append(np.stack([transform(image=image)["image"] for _ in range(6)]))
    assert outputs[0].shape == (6, 40, 30, channels) and outputs[0].dtype == np.uint8
    assert np.array_equal(outputs[0], outputs[1]) and not np.array_equal(outputs[0][0], image)


def test_smallresnet_sizes_drop_path_and_timm_arguments():
    model = build_model(TrainConfig(model="smallresnet_m", drop_path_rate=0.2), in_chans=1, num_classes=4)
    assert model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 4)
    rates = [m.drop_prob for m in model.modules() if type(m).__name__ == "DropPath"]
    assert rates and max(rates) == pytest.approx(0.2)  # grows linearly to the deepest block
    import timm
    custom = timm.create_model("smallresnet", widths=(8, 16), depths=(1, 1), num_classes=3, in_chans=3)
    assert custom(torch.zeros(1, 3, 20, 20)).shape == (1, 3) and custom.num_features == 16
    with pytest.raises(UserError, match="does not support drop_path_rate"):
        build_model(TrainConfig(model="smallcnn", drop_path_rate=0.1), in_chans=1, num_classes=2)


@pytest.mark.parametrize("values, message", [
    ({"mixup_alpha": 0.2, "loss": "focal"}, "focal loss takes class indices"),
    ({"mixup_off_epoch": 3}, "mixup_alpha and cutmix_alpha are 0"),
    ({"cutmix_alpha": 1.0, "pseudo": "p", "pseudo_soft": True}, "use one or the other"),
    ({"augment": "sparkly"}, "augment='sparkly' is not one of"),
])
def test_recipe_combinations_that_cannot_work_are_refused(values, message):
    with pytest.raises(UserError, match=message):
        TrainConfig(**values).validate()


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_b0", "convnext_atto"])
def test_timm_small_nets_train_a_step_on_28px_digits_fed_upscaled(name):
    """A 28 px cache fed at 64 px (--input-size-px) through the engine's resize: timm's nets take it, with drop
    path where they support it."""
    from src.train.engine import InputNorm, Runtime, to_input
    cfg = TrainConfig(model=name, drop_path_rate=0.1, input_size_px=64)
    model = build_model(cfg, in_chans=1, num_classes=10)
    rt = Runtime(torch.device("cpu"), None, True)
    norm = InputNorm(torch.tensor([0.1]).view(1, 1, 1, 1), torch.tensor([0.3]).view(1, 1, 1, 1), 64)
    x = to_input(torch.randint(0, 255, (4, 28, 28, 1), dtype=torch.uint8), norm, rt)
    assert x.shape == (4, 1, 64, 64)
    loss = torch.nn.functional.cross_entropy(model.train()(x), torch.arange(4))
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters() if p.requires_grad)
