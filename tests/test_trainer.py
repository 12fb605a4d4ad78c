"""In-process tests of the fold trainer on tiny arrays (fast; no subprocess)."""
import numpy as np
import pytest
import torch

from src.config import TrainConfig
from src.data import ImageSpec
from src.engine import setup_runtime
from src.runs import load_checkpoint
from src.trainer import DataInfo, FoldData, FoldTrainer, NonFiniteLoss


def binary_task(n=64, size_px=24, seed=0):
    """A 24x24 binary task: class 1 images have a bright blob in the centre."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (n, size_px, size_px, 1), dtype=np.uint8)
    labels = np.arange(n) % 2
    images[labels == 1, 8:16, 8:16] = 230
    return images, labels


def make_trainer(tmp_path, **overrides):
    images, labels = binary_task()
    cfg = TrainConfig(**{"epochs": 3, "batch_size": 16, "lr_warmup_epochs": 0.5, **overrides})
    data = FoldData(images[:48], labels[:48], images[48:], labels[48:], [f"v{i}" for i in range(16)])
    info = DataInfo(["neg", "pos"], ImageSpec(24, 24, 1), [0.2], [0.3])
    return FoldTrainer(cfg, 0, tmp_path, data, info, setup_runtime(cfg))


def test_binary_gray_task_learns_and_reports_eer(tmp_path):
    trainer = make_trainer(tmp_path, monitor="eer", epochs=4)
    trainer.fit(quiet=True)
    result = trainer.write_oof()
    assert trainer.mode == "min"
    assert result["eer"] == 0.0 and result["roc_auc"] == 1.0 and result["accuracy"] >= 0.9


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path)
    good = trainer.losses["label_smoothing"]

    def nan_from_epoch_1(logits, target):
        loss = good(logits, target)
        return loss * float("nan") if trainer.epoch >= 1 else loss

    trainer.losses["label_smoothing"] = nan_from_epoch_1
    with pytest.raises(NonFiniteLoss, match="epoch 1: training loss is nan.*last good checkpoint: epoch 0"):
        trainer.fit(quiet=True)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1 and len(state["log"]) == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_loss_switch_epoch_changes_the_loss(tmp_path):
    trainer = make_trainer(tmp_path, loss="ce", loss2="focal", loss_switch_epoch=2)
    trainer.fit(quiet=True)
    assert [row["loss"] for row in trainer.log] == ["CrossEntropyLoss", "CrossEntropyLoss", "FocalLoss"]


def test_early_stopping_ends_the_run_before_the_last_epoch(tmp_path):
    trainer = make_trainer(tmp_path, epochs=10, patience_epochs=1, min_delta=0.5)
    trainer.fit(quiet=True)
    assert len(trainer.log) == 2 and trainer.finished


@pytest.mark.parametrize("scheduler", ["plateau", "step", "cosine"])
def test_every_scheduler_trains_and_plots_its_curve(tmp_path, scheduler):
    trainer = make_trainer(tmp_path, scheduler=scheduler, plateau_patience_epochs=0, lr_step_epochs=1)
    trainer.fit(quiet=True)
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert len(trainer.log) == 3 and all(np.isfinite(row["train_loss"]) for row in trainer.log)
    if scheduler == "step":
        assert [round(r["lr"] / trainer.cfg.lr, 6) for r in trainer.log] == [1.0, 0.1, 0.01]
