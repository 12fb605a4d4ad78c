"""Self-supervised pretraining: the losses on constructed examples, the views, exact resume, that labels never
reach the weights, the quality probe, and that backbone.pt fine-tunes in train.py."""
from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from src.core.config import config_from_dict
from src.core.errors import UserError
from src.core.rundir import load_checkpoint
from src.pretrain.config import PretrainConfig
from src.pretrain.probe import cross_validate, knn_predict, run_probe
from src.pretrain.ssl import SSLNet, TwoViews, crop_theta, nt_xent, simsiam_loss
from src.pretrain.trainer import (
    PretrainTrainer,
    backbone_state,
    build_backbone,
    list_pretrain_images,
    load_pretrain_images,
    run_pretraining,
)
from src.train.config import TrainConfig
from src.train.cv import load_split
from src.train.engine import Runtime
from src.train.models import build_model
from tests.conftest import make_competition, run_script

from helpers import REPO, kill_after_epoch

CPU = Runtime(torch.device("cpu"), None, False)


def nt_xent_by_hand(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """The SimCLR paper's definition written as loops: l(i, j) = -log exp(s_ij / t) / sum_{k != i} exp(s_ik / t)."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / t) / others)
    return total / (2 * n)


def test_nt_xent_on_orthogonal_pairs_has_the_closed_form():
    # Three pairs of identical unit vectors, each pair orthogonal to the others: every embedding sees its
    # partner at similarity 1 and four others at 0, so the loss is log(1 + 4 exp(-1/T)).
    z = torch.eye(3)
    for t in (0.1, 0.5, 1.0):
        assert nt_xent(z, z.clone(), t).item() == pytest.approx(math.log(1 + 4 * math.exp(-1 / t)), rel=1e-5, abs=1e-6)


def test_nt_xent_matches_the_papers_definition_and_ignores_scale():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    assert nt_xent(z1, z2, 0.3).item() == pytest.approx(nt_xent_by_hand(z1, z2, 0.3), rel=1e-5)
    assert nt_xent(3 * z1, 0.5 * z2, 0.3).item() == pytest.approx(nt_xent(z1, z2, 0.3).item(), rel=1e-5)
    # Partners that are nearly the same vector are easier to pick out than unrelated ones.
    assert nt_xent(z1, z1 + 0.01 * z2, 0.3) < nt_xent(z1, z2, 0.3)


def test_simsiam_loss_is_negative_cosine_with_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    z = torch.tensor([[3.0, 0.0], [0.0, 1.0]], requires_grad=True)
    assert simsiam_loss(p, p, z, z).item() == pytest.approx(-1.0)
    orthogonal = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert simsiam_loss(orthogonal, orthogonal, z, z).item() == pytest.approx(0.0, abs=1e-7)
    simsiam_loss(p, p, z, z).backward()
    assert z.grad is None and p.grad is not None  # the target side gets no gradient


def test_views_are_seeded_in_range_and_identity_without_augmentation():
    x = torch.rand(6, 1, 12, 12) * 255
    views = TwoViews((0.3, 1.0), 15, 0.3, 0.5, "h")
    a = views(x, torch.Generator().manual_seed(1))
    b = views(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 255
    assert not torch.equal(a, views(x, torch.Generator().manual_seed(2)))
    plain = TwoViews((1.0, 1.0), 0, 0.0, 0.0, "none")
    torch.testing.assert_close(plain(x, torch.Generator().manual_seed(3)), x, atol=1e-3, rtol=0)


def test_crop_is_a_rotated_rectangle_and_without_rotation_a_plain_crop():
    w, h = torch.tensor([0.5, 0.8]), torch.tensor([0.25, 0.6])
    angle, centre = torch.tensor([0.7, -0.3]), torch.tensor([[0.1, -0.2], [0.0, 0.3]])
    theta = crop_theta(w, h, angle, centre, 20, 20)
    columns = theta[:, :, :2]
    # Unit steps along the output axes map to perpendicular input steps of the crop's half-sizes.
    torch.testing.assert_close((columns[:, :, 0] * columns[:, :, 1]).sum(1), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(columns.norm(dim=1), torch.stack([w, h], dim=1))
    # No rotation, a crop of the left/top half at 2x: the output is that quarter, upsampled by 2.
    x = torch.arange(16.0).view(1, 1, 4, 4) * 10
    theta = crop_theta(torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([[-0.5, -0.5]]),
                       4, 4)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 4, 4], align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, mode="nearest", align_corners=False)
    assert torch.equal(out, x[:, :, :2, :2].repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_projector_matches_heads_that_widen_the_features():
    backbone = build_backbone("mobilenetv3_small_050", 1)  # its head widens 288 -> 1024 features
    net = SSLNet(backbone, "simclr", 8, 16)
    x = torch.randn(4, 1, 32, 32)
    assert torch.isfinite(net.loss(x, x, 0.2))


def test_cross_validation_of_the_probes_on_separable_and_random_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    fold_of = np.tile(np.arange(5), 6)
    separable = np.eye(3)[labels] + 0.05 * rng.normal(size=(30, 3))
    separable /= np.linalg.norm(separable, axis=1, keepdims=True)
    cfg = PretrainConfig(probe_k=3)
    rows = cross_validate(separable.astype(np.float32), labels, fold_of, 3, cfg)
    assert [r["knn_accuracy"] for r in rows] == [1.0] * 5 and [r["linear_accuracy"] for r in rows] == [1.0] * 5
    assert [r["n_val"] for r in rows] == [6] * 5
    noise = rng.normal(size=(30, 3)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    assert np.mean([r["knn_accuracy"] for r in cross_validate(noise, labels, fold_of, 3, cfg)]) < 0.7


def tiny_cfg(data_dir, out_dir, **changes) -> PretrainConfig:
    values = {"data_dir": str(data_dir), "out_dir": str(out_dir), "epochs": 2, "batch_size": 8,
              "lr_warmup_epochs": 0.5, "hidden_dim": 32, "proj_dim": 16, "probe_k": 3, **changes}
    return config_from_dict(values, cls=PretrainConfig).validate()


@pytest.fixture
def comp(tmp_path):
    root = make_competition(tmp_path / "comp", per_class=6)
    make_competition(tmp_path / "other", per_class=2, seed=5)
    (tmp_path / "other" / "train").rename(root / "test")  # 6 unlabelled test images
    return root


def test_images_come_from_train_unlabeled_and_test_folders_never_from_labels(comp):
    cfg = tiny_cfg(comp, "unused")
    manifest = list_pretrain_images(cfg)
    assert list(manifest.columns) == ["path", "split"]
    assert manifest.split.value_counts().to_dict() == {"train": 18, "test": 6}
    no_test = list_pretrain_images(tiny_cfg(comp, "unused", include_test=False))
    assert set(no_test.split) == {"train"}
    with pytest.raises(UserError, match="image folder not found"):
        list_pretrain_images(tiny_cfg(comp, "unused", image_dir="nope"))
    # A train folder that holds the test folder: every image once, and no test image without --include-test.
    whole = list_pretrain_images(tiny_cfg(comp, "unused", image_dir="."))
    assert len(whole) == 24 and whole.path.is_unique and (whole.split == "test").sum() == 6
    assert set(list_pretrain_images(tiny_cfg(comp, "unused", image_dir=".", include_test=False)).split) == {"train"}
    assert len(list_pretrain_images(tiny_cfg(comp, "unused", image_dir=".", include_test=False))) == 18


def test_pretraining_never_reads_labels(comp, tmp_path, monkeypatch):
    """Any CSV read during pretraining fails the run, and relabelling every image leaves the weights identical."""
    def no_csv(*args, **kwargs):
        raise AssertionError(f"pretraining read a CSV: {args[:1]}")

    with monkeypatch.context() as patch:
        patch.setattr(pd, "read_csv", no_csv)
        first = run_pretraining(tiny_cfg(comp, tmp_path / "a"), False, False, True, CPU)
    labels = pd.read_csv(comp / "train.csv")
    labels["label"] = np.roll(labels["label"].to_numpy(), 5)
    labels.to_csv(comp / "train.csv", index=False)
    second = run_pretraining(tiny_cfg(comp, tmp_path / "b"), False, False, True, CPU)
    a, b = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = pd.read_csv(first.parent / "manifest.csv")
    assert len(manifest) == 24 and "label" not in manifest.columns
    assert load_checkpoint(first)["config"]["include_test"] is True


def test_resume_continues_exactly(comp, tmp_path):
    cfg = tiny_cfg(comp, tmp_path, epochs=3)
    data = load_pretrain_images(cfg, quiet=True)
    straight = PretrainTrainer(cfg, tmp_path / "a", data, CPU)
    straight.fit(quiet=True)
    first = PretrainTrainer(cfg, tmp_path / "b", data, CPU)
    first.log.append(first.run_epoch(quiet=True))
    first.epoch += 1
    first.save_last()
    resumed = PretrainTrainer(cfg, tmp_path / "b", data, CPU)
    resumed.resume()
    resumed.fit(quiet=True)
    for p, q in zip(straight.net.state_dict().values(), resumed.net.state_dict().values()):
        assert torch.equal(p, q)
    assert [r["loss"] for r in straight.log] == [r["loss"] for r in resumed.log]
    with pytest.raises(UserError, match="temperature="):
        PretrainTrainer(tiny_cfg(comp, tmp_path, epochs=3, temperature=0.5), tmp_path / "b", data, CPU).resume()
    # The quality-check settings are not training settings.
    PretrainTrainer(tiny_cfg(comp, tmp_path, epochs=3, probe_k=5), tmp_path / "b", data, CPU).resume()


def test_interrupted_run_resumes_to_the_same_weights_and_a_refused_resume_changes_nothing(comp, tmp_path,
                                                                                          monkeypatch):
    straight = run_pretraining(tiny_cfg(comp, tmp_path / "a", epochs=3), False, False, True, CPU)
    real_epoch = PretrainTrainer.run_epoch

    def interrupted(self, quiet):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real_epoch(self, quiet)

    cfg = tiny_cfg(comp, tmp_path / "b", epochs=3)
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(PretrainTrainer, "run_epoch", interrupted)
        run_pretraining(cfg, False, False, True, CPU)
    out = tmp_path / "b" / "ssl"
    manifest = (out / "manifest.csv").read_text()
    (comp / "test" / "cat_0.png").unlink()  # the images change: the resume must refuse and touch nothing
    with pytest.raises(UserError, match="images changed"):
        run_pretraining(cfg, True, False, True, CPU)
    assert (out / "manifest.csv").read_text() == manifest and "resumed" not in (out / "config.json").read_text()
    make_competition(tmp_path / "again", per_class=2, seed=5)
    (tmp_path / "again" / "train" / "cat_0.png").rename(comp / "test" / "cat_0.png")
    resumed = run_pretraining(cfg, True, False, True, CPU)
    a, b = load_checkpoint(straight)["model"], load_checkpoint(resumed)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "resumed" in (out / "config.json").read_text()


def test_ssl_weights_must_match_the_model_and_a_size_change_is_reported(comp, tmp_path, capsys):
    from src.train.models import check_ssl_weights
    weights = run_pretraining(tiny_cfg(comp, tmp_path, epochs=1), False, False, True, CPU)
    capsys.readouterr()
    check_ssl_weights(weights, "smallcnn", 12, 12)
    assert capsys.readouterr().out == ""
    check_ssl_weights(weights, "smallcnn", 24, 24)
    assert "pretrained at 12x12 px, fine-tuning at 24x24" in capsys.readouterr().out
    with pytest.raises(UserError, match="use --model smallcnn"):
        check_ssl_weights(weights, "resnet10t", 12, 12)


def test_head_split_handles_timm_heads_given_as_a_tuple():
    from src.train.models import head_and_backbone

    class TwoHeads(torch.nn.Module):  # like timm's distilled models: get_classifier returns (head, head_dist)
        def __init__(self):
            super().__init__()
            self.body, self.head, self.head_dist = (torch.nn.Linear(4, 4), torch.nn.Linear(4, 2),
                                                    torch.nn.Linear(4, 2))

        def get_classifier(self):
            return self.head, self.head_dist

    net = TwoHeads()
    head, backbone = head_and_backbone(net)
    assert [id(p) for p in head] == [id(p) for p in [*net.head.parameters(), *net.head_dist.parameters()]]
    assert [id(p) for p in backbone] == [id(p) for p in net.body.parameters()]


@pytest.mark.parametrize("model", ["smallcnn", "resnet10t"])
def test_backbone_file_loads_into_train_py_model_with_a_fresh_head(comp, tmp_path, model):
    cfg = tiny_cfg(comp, tmp_path, model=model, epochs=1, image_size_px=32 if model == "resnet10t" else 0)
    weights = run_pretraining(cfg, False, False, True, CPU)
    saved = load_checkpoint(weights)["model"]
    train_cfg = TrainConfig(model=model, pretrained=str(weights))
    net = build_model(train_cfg, in_chans=1, num_classes=3)
    own = net.state_dict()
    head = {k for k in own if k.startswith(net.pretrained_cfg["classifier"] + ".")}
    assert head and not head & saved.keys()
    assert set(own) - head == set(saved)  # every backbone tensor comes from the file
    assert all(torch.equal(own[k], saved[k]) for k in saved)


def test_knn_vote_weights_by_similarity():
    train_x = np.array([[0.6, 0.8], [-0.6, 0.8], [0.0, 1.0]], dtype=np.float32)
    train_y = np.array([0, 0, 1])
    query = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    assert knn_predict(train_x, train_y, query, 2, k=1, temperature=0.1).tolist() == [1, 0]
    # k=3: two class-0 neighbours at similarity 0.8 outvote one class-1 neighbour at 1.0 unless T is small.
    assert knn_predict(train_x, train_y, query, 2, k=3, temperature=1.0).tolist() == [0, 0]
    assert knn_predict(train_x, train_y, query, 2, k=3, temperature=0.05).tolist() == [1, 0]


def test_probe_reports_initial_and_pretrained_weights_per_fold(comp, tmp_path):
    folds = tmp_path / "folds.csv"
    proc = run_script("make_folds.py", "--data-dir", str(comp), "--out", str(folds), "--n-folds", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    cfg = tiny_cfg(comp, tmp_path, folds_csv=str(folds), epochs=1)
    split = load_split(str(comp), "train.csv", "train", "image", "label", str(folds))
    frame = run_probe(cfg, split, run_pretraining(cfg, False, False, True, CPU), CPU, quiet=True)
    assert frame.weights.tolist() == ["initial weights"] * 3 + ["pretrained"] * 3
    assert frame.n_val.sum() == 2 * 18 and frame.knn_accuracy.between(0, 1).all()
    assert (tmp_path / "ssl" / "probe_comp.md").is_file() and (tmp_path / "ssl" / "probe_comp.csv").is_file()


def test_backbone_state_drops_the_classifier():
    net = build_backbone("smallcnn", 1)
    assert not [k for k in backbone_state(net) if k.startswith("fc.")]
    assert "features.0.0.weight" in backbone_state(net)


@pytest.mark.slow
def test_pretrain_script_then_fine_tune_with_frozen_start(comp, tmp_path):
    folds = tmp_path / "folds.csv"
    assert run_script("make_folds.py", "--data-dir", str(comp), "--out", str(folds), "--n-folds", "3",
                      "--quiet").returncode == 0
    common = ["--data-dir", str(comp), "--folds-csv", str(folds), "--quiet"]
    proc = run_script("pretrain.py", *common, "--out-dir", str(tmp_path / "pre"), "--epochs", "2",
                      "--batch-size", "8", "--lr-warmup-epochs", "0.5", "--probe-k", "3")
    assert proc.returncode == 0, proc.stderr
    assert "kNN accuracy" in proc.stdout and "pretrained" in proc.stdout
    for name in ("backbone.pt", "last.pt", "manifest.csv", "log.csv", "loss.png", "views.png", "probe_comp.md",
                 "config.json"):
        assert (tmp_path / "pre" / "ssl" / name).is_file(), name
    proc = run_script("pretrain.py", *common, "--out-dir", str(tmp_path / "pre"))
    assert proc.returncode == 2 and "--resume" in proc.stderr  # never mixes a new run into an old folder
    proc = run_script("train.py", *common, "--runs-dir", str(tmp_path / "runs"), "--exp", "ft", "--epochs", "3",
                      "--batch-size", "8", "--lr-warmup-epochs", "0.5", "--pretrained",
                      str(tmp_path / "pre" / "ssl" / "backbone.pt"), "--freeze-epochs", "1",
                      "--backbone-lr-mult", "0.1", "--fold", "0")
    assert proc.returncode == 0, proc.stderr
    assert "pretrained: loaded" in proc.stdout and "new classifier head" in proc.stdout
    log = pd.read_csv(tmp_path / "runs" / "ft" / "fold0" / "log.csv")
    assert len(log) == 3
    # Prediction reads only best.pt; a retrain from this experiment (pseudo-labelling) still knows the weights.
    from src.infer.predictor import Predictor
    weights = tmp_path / "pre" / "ssl" / "backbone.pt"
    weights.rename(tmp_path / "moved.pt")
    predictor = Predictor.load(tmp_path / "runs" / "ft", device="cpu", tta="none", folds=[0])
    assert predictor.cfg.pretrained == str(weights) and predictor.cfg.freeze_epochs == 1


def test_backbone_lr_mult_gives_the_backbone_its_own_peak_lr():
    from src.train.engine import build_optimizer
    net = build_backbone("smallcnn", 1)
    net.reset_classifier(3)
    cfg = TrainConfig(lr=1e-2, backbone_lr_mult=0.25)
    by_part = {}
    for group in build_optimizer(cfg, net).param_groups:
        by_part.setdefault(group["part"], set()).add(group["initial_lr"])
    assert by_part == {"backbone": {2.5e-3}, "head": {1e-2}}
    groups = build_optimizer(TrainConfig(lr=1e-2), net).param_groups
    assert len(groups) == 2 and {g["initial_lr"] for g in groups} == {1e-2}  # as before the option existed


def test_frozen_epoch_trains_only_the_head_and_keeps_batchnorm_statistics():
    from src.train.engine import InputNorm, build_optimizer, train_one_epoch
    torch.manual_seed(0)
    net = build_backbone("smallcnn", 1)
    net.reset_classifier(3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.randint(0, 255, (16, 12, 12, 1), dtype=torch.uint8)
    batches = [(images[:8], torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])), (images[8:], torch.tensor([2] * 8))]
    norm = InputNorm(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    optimizer = build_optimizer(TrainConfig(lr=1e-2, backbone_lr_mult=0.5), net)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train_one_epoch(net, batches, optimizer, torch.nn.CrossEntropyLoss(), lambda s: 1.0, 0, scaler, norm, CPU,
                    "t", True, freeze_backbone=True)
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}
    train_one_epoch(net, batches, optimizer, torch.nn.CrossEntropyLoss(), lambda s: 1.0, 2, scaler, norm, CPU,
                    "t", True)
    assert not torch.equal(net.state_dict()["features.0.0.weight"], before["features.0.0.weight"])
    assert not torch.equal(net.state_dict()["features.0.1.running_mean"], before["features.0.1.running_mean"])


def test_freeze_epochs_needs_pretrained_weights():
    with pytest.raises(UserError, match="freeze_epochs needs pretrained"):
        config_from_dict({"freeze_epochs": 2}, TrainConfig).validate()
    with pytest.raises(UserError, match="must be <"):
        config_from_dict({"freeze_epochs": 15, "epochs": 15, "pretrained": "x.pt"}, TrainConfig).validate()


@pytest.mark.slow
def test_bad_input_fails_in_one_line_before_anything_is_written(comp, tmp_path):
    out = tmp_path / "pre"
    cases = [(["--data-dir", str(tmp_path / "nope"), "train"], "data folder not found"),
             (["--data-dir", str(comp), "--folds-csv", str(tmp_path / "missing.csv")], "file not found"),
             (["--data-dir", str(comp), "--model", "resnet_nope", "train"], "not a timm model name"),
             (["--data-dir", str(comp), "--crop-scale-min", "0", "train"], "crop_scale_min must be in")]
    for args, message in cases:
        proc = run_script("pretrain.py", *args, "--out-dir", str(out), "--quiet")
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert not out.exists()


@pytest.mark.slow
def test_sigterm_ends_pretraining_like_ctrl_c_and_resume_finishes(comp, tmp_path):
    args = ["train", "--data-dir", str(comp), "--out-dir", str(tmp_path / "pre"), "--epochs", "40", "--batch-size",
            "8", "--lr-warmup-epochs", "0.5", "--quiet"]
    last = tmp_path / "pre" / "ssl" / "last.pt"
    code, err = kill_after_epoch([sys.executable, str(REPO / "pretrain.py"), *args], last, 1)
    assert code == 130 and "interrupted: finished pretraining epochs are saved in last.pt" in err, err
    assert 1 <= load_checkpoint(last)["epoch"] < 40 and not (last.parent / "backbone.pt").exists()
    proc = run_script("pretrain.py", *args, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert load_checkpoint(last)["epoch"] == 40 and (last.parent / "backbone.pt").is_file()
