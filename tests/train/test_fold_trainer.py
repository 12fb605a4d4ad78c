"""In-process tests of the fold trainer on tiny arrays (fast; no subprocess)."""
import numpy as np
import pytest
import torch

from src.core.errors import UserError
from src.core.rundir import load_checkpoint, save_checkpoint, write_oof
from src.train.fold_trainer import NonFiniteLoss

from helpers import make_trainer


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
    assert [row["loss"] for row in trainer.log] == ["ce", "ce", "focal"]


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


def test_resume_refuses_a_checkpoint_made_on_other_data(tmp_path):
    first = make_trainer(tmp_path, epochs=2)
    first.run_epoch(quiet=True)
    first.epoch = 1
    first.save_last()
    again = make_trainer(tmp_path, epochs=2)
    again.info.fingerprint = {"data": "changed"}
    with pytest.raises(UserError, match="the data changed since this run started"):
        again.resume()


def test_resume_refuses_a_checkpoint_made_on_another_kind_of_device(tmp_path):
    first = make_trainer(tmp_path, epochs=2)
    first.run_epoch(quiet=True)
    first.epoch = 1
    first.save_last()
    state = load_checkpoint(tmp_path / "last.pt")
    save_checkpoint(tmp_path / "last.pt", {**state, "runtime": {"device": "cuda", "amp_dtype": "torch.bfloat16"}})
    with pytest.raises(UserError, match="resume on the same kind of device"):
        make_trainer(tmp_path, epochs=2).resume()
    # A finished run has nothing left to train: continuing it elsewhere (e.g. make demo's --resume) is fine.
    save_checkpoint(tmp_path / "last.pt", {**load_checkpoint(tmp_path / "last.pt"), "finished": True})
    make_trainer(tmp_path, epochs=2).resume()


def test_a_model_that_cannot_take_the_input_size_fails_before_training(tmp_path):
    with pytest.raises(UserError, match="cannot take 24x24x1 input"):
        make_trainer(tmp_path, model="vit_tiny_patch16_224")
    assert not list(tmp_path.iterdir())


def test_oof_summary_skips_folds_from_another_config(tmp_path):
    from src.core.rundir import write_json
    from src.train.oof_summary import counted_folds, summarize_oof
    classes = ["neg", "pos"]
    for k, lr in ((0, 0.1), (1, 0.1), (2, 0.5)):
        run = tmp_path / f"fold{k}"
        run.mkdir()
        write_json(run / "config.json", {"config": {"lr": lr}, "fingerprint": {"d": 1}})
        probs = np.array([[0.9, 0.1], [0.2, 0.8]])
        write_oof(run, [f"a{k}", f"b{k}"], np.array([0, 1]), probs, classes, k)
    folds = counted_folds(tmp_path, {"lr": 0.1}, {"d": 1})
    table, cv = summarize_oof(tmp_path, classes, folds, "accuracy", "max")
    assert folds == [0, 1] and list(table["fold"][:2]) == ["0", "1"] and table["n"].iloc[-1] == 4
    # No oof_final.csv (a run from before it existed): only the selected block, and the summary says why.
    assert set(table["weights"]) == {"best"} and cv is None
    assert "have no oof_final.csv" in (tmp_path / "oof_summary.md").read_text()


def test_the_final_weights_score_names_what_else_read_the_validation_rows():
    import pandas as pd

    from src.train.oof_summary import headline, validation_readers
    table = pd.DataFrame([{"weights": "final", "fold": "all (pooled OOF)", "accuracy": 0.9}])
    assert headline(table, None, "accuracy")[0].endswith("nothing was chosen on these rows")
    readers = validation_readers({"patience_epochs": 3, "scheduler": "plateau"})
    assert readers == ["early stopping", "the plateau scheduler"]
    assert "but early stopping and the plateau scheduler read them" in headline(table, None, "accuracy", readers)[0]


def test_the_final_weights_oof_is_the_last_epoch_and_the_selected_one_the_best_epoch(tmp_path):
    import pandas as pd

    from src.core.rundir import read_oof
    trainer = make_trainer(tmp_path, epochs=4, ema_decay=0)
    trainer.data.val_labels = 1 - trainer.data.val_labels  # the better it learns, the worse it validates
    trainer.fit(quiet=True)
    result = trainer.write_oof()
    log = pd.read_csv(tmp_path / "log.csv")
    y, final, _ = read_oof(tmp_path / "oof_final.csv", ["neg", "pos"])
    _, best, _ = read_oof(tmp_path / "oof.csv", ["neg", "pos"])
    assert result["final_epoch"] == 3 and result["final_log_loss"] == pytest.approx(log["val_log_loss"].iloc[-1])
    assert result["log_loss"] == pytest.approx(log["val_log_loss"].iloc[result["best_epoch"]])
    assert result["accuracy"] == log["val_accuracy"].max() >= result["final_accuracy"]
    assert (final.argmax(1) == y).mean() == result["final_accuracy"]
    assert result["best_epoch"] < 3 and result["final_log_loss"] != result["log_loss"] and not np.allclose(final, best)


def test_the_cv_epoch_is_the_best_epoch_of_the_mean_curve_over_the_epochs_every_fold_reached():
    import pandas as pd

    from src.train.oof_summary import cv_epoch
    logs = [pd.DataFrame({"val_accuracy": [0.5, 0.9, 0.7, 0.99]}),  # fold 0 alone reaches epoch 3
            pd.DataFrame({"val_accuracy": [0.6, 0.7, 0.9]}),
            pd.DataFrame({"val_accuracy": [0.7, 0.8, 0.8]})]
    cv = cv_epoch(logs, "accuracy", "max")
    assert (cv.epochs, cv.folds, cv.cut, cv.last) == (2, 3, True, False) and cv.value == pytest.approx(0.8)
    assert cv.final_value == pytest.approx(0.8)
    tie = cv_epoch([pd.DataFrame({"val_log_loss": [0.5, 0.3, 0.3, 0.4]})], "log_loss", "min")
    assert tie.epochs == 2  # the earlier of two equal epochs: as good, and cheaper
    assert cv_epoch([pd.DataFrame({"val_roc_auc": [float("nan")] * 2})], "roc_auc", "max") is None


def test_a_corrupted_checkpoint_fails_its_checksum(tmp_path):
    trainer = make_trainer(tmp_path, epochs=1)
    trainer.fit(quiet=True)
    data = bytearray((tmp_path / "best.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "best.pt").write_bytes(bytes(data))
    with pytest.raises(UserError, match="checksum does not match checksums.json"):
        load_checkpoint(tmp_path / "best.pt")


def test_disk_full_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, epochs=3)
    trainer.run_epoch(quiet=True)
    trainer.epoch = 1
    trainer.save_last()
    good = (tmp_path / "last.pt").read_bytes()

    def full_disk(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(tmp_path), "write_bytes", full_disk)
    trainer.epoch = 2
    with pytest.raises(UserError, match="could not write the checkpoint .No space left on device.; the previous"):
        trainer.save_last()
    monkeypatch.undo()
    assert (tmp_path / "last.pt").read_bytes() == good
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1  # still verifies against the manifest
    assert not list(tmp_path.glob(".*tmp*"))


def test_a_monitor_that_is_nan_every_epoch_still_leaves_best_pt_and_oof(tmp_path, capsys):
    trainer = make_trainer(tmp_path, monitor="roc_auc", epochs=2, patience_epochs=1)  # early stopping on too
    trainer.data.val_labels = np.zeros_like(trainer.data.val_labels)  # one class: ROC-AUC undefined
    trainer.fit(quiet=True)
    result = trainer.write_oof()
    assert result["best_epoch"] == 1 and (tmp_path / "oof.csv").is_file()
    assert "roc_auc was NaN in every epoch" in capsys.readouterr().out


def test_validating_the_last_epoch_alone_trains_the_same_weights_and_scores_them_once(tmp_path, monkeypatch):
    every = make_trainer(tmp_path / "every", epochs=3)
    every.fit(quiet=True)
    last = make_trainer(tmp_path / "last", epochs=3)
    last.validate_last_only = True
    passes = []
    predict = last.predict_val
    monkeypatch.setattr(last, "predict_val", lambda: passes.append(last.epoch) or predict())
    last.fit(quiet=True)
    assert passes == [2]  # the last epoch only
    assert all(np.isnan(row["val_accuracy"]) for row in last.log[:2])
    assert last.log[2]["val_accuracy"] == every.log[2]["val_accuracy"]
    result = last.write_oof()  # one pass (after epoch 2): best.pt is the last epoch, its OOF reuses the final one
    assert passes == [2, 3] and result["best_epoch"] == 2 and result["accuracy"] == result["final_accuracy"]
    final = {k: v for k, v in every.write_oof().items() if k.startswith("final_")}
    assert final == {k: v for k, v in result.items() if k.startswith("final_")}


def test_early_stopping_or_the_plateau_scheduler_keep_every_epochs_score(tmp_path):
    for name, extra in (("a", {}), ("b", {"patience_epochs": 2}), ("c", {"scheduler": "plateau"})):
        trainer = make_trainer(tmp_path / name, **extra)
        trainer.validate_last_only = True
        assert [trainer.validates(e) for e in range(3)] == ([False, False, True] if not extra else [True] * 3)
