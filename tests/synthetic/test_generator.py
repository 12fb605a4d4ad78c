"""The diffusion generator and the synthetic-row plumbing: shapes, determinism, resume, filter, leak guard."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from src.core.config import config_from_dict
from src.core.errors import UserError
from src.data.extra_rows import load_synthetic_rows, read_sample_dir, select_rows
from src.data.images import ImageSpec
from src.synthetic.config import GenConfig
from src.synthetic.diffusion import build_noise_scheduler, diffusion_target, sample_images, sample_seeds
from src.synthetic.generator import GeneratorTrainer, load_generator
from src.synthetic.samples import apply_filter, kept_table, new_manifest, write_samples
from src.train.engine import Runtime

CPU = Runtime(torch.device("cpu"), None, False)
CLASSES = ["a", "b", "c"]
SPLIT = {"train_csv_sha256": "t1", "folds_csv_sha256": "f1"}


def tiny_cfg(**changes) -> GenConfig:
    values = {"resolution_px": 8, "epochs": 2, "batch_size": 8, "lr_warmup_epochs": 0.5, "sample_steps": 3,
              "sample_batch_size": 4, "preview_every_epochs": 0, **changes}
    return config_from_dict(values, cls=GenConfig).validate()


def tiny_data(n=24, size=12, chans=1, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, size, size, chans), dtype=np.uint8)
    return images, np.arange(n) % len(CLASSES)


def trainer(tmp_path, cfg=None, chans=1):
    images, labels = tiny_data(chans=chans)
    return GeneratorTrainer(cfg or tiny_cfg(), 0, tmp_path, images, labels, CLASSES, ImageSpec(12, 12, chans),
                            {"x": "y"}, CPU)


@pytest.mark.parametrize("guidance", [0.0, 2.0])
@pytest.mark.parametrize("chans", [1, 3])
def test_trained_generator_samples_images_of_the_data_shape_and_range(tmp_path, guidance, chans):
    t = trainer(tmp_path, tiny_cfg(guidance_scale=guidance), chans)
    t.fit(quiet=True)
    assert (tmp_path / "generator.pt").is_file() and (tmp_path / "grid.png").is_file()
    assert (tmp_path / "loss.png").is_file() and len(pd.read_csv(tmp_path / "log.csv")) == 2
    labels = np.array([0, 1, 2, 2, 1])
    images = sample_images(t.ema.module, t.noise_scheduler, t.cfg, labels, sample_seeds(1, 0, 5), t.spec, CPU)
    assert images.shape == (5, 12, 12, chans) and images.dtype == np.uint8
    assert images.std() > 0  # not a constant image


def test_a_sample_depends_only_on_its_seed_and_label(tmp_path):
    t = trainer(tmp_path)
    seeds = sample_seeds(3, 0, 4)
    a = sample_images(t.unet, t.noise_scheduler, t.cfg, np.array([0, 1, 2, 0]), seeds, t.spec, CPU)
    # Another batch size, another position in the batch: the same image for the same (seed, label).
    cfg = tiny_cfg(sample_batch_size=1)
    b = sample_images(t.unet, t.noise_scheduler, cfg, np.array([2, 0]), [seeds[2], seeds[3]], t.spec, CPU)
    np.testing.assert_allclose(a[2:].astype(int), b.astype(int), atol=1)
    assert not np.array_equal(a[0], a[3])  # same label, different seed


def test_resume_continues_exactly(tmp_path):
    straight = trainer(tmp_path / "a")
    straight.fit(quiet=True)
    first = trainer(tmp_path / "b", tiny_cfg(epochs=2))
    first.finished = False
    first.log.append(first.run_epoch(quiet=True))
    first.epoch += 1
    first.save_last()
    resumed = trainer(tmp_path / "b")
    resumed.resume()
    resumed.fit(quiet=True)
    for p, q in zip(straight.unet.state_dict().values(), resumed.unet.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert [r["loss"] for r in straight.log] == [r["loss"] for r in resumed.log]


def test_resume_refuses_other_training_settings(tmp_path):
    first = trainer(tmp_path)
    first.fit(quiet=True)
    with pytest.raises(UserError, match="lr="):
        trainer(tmp_path, tiny_cfg(lr=1e-3)).resume()
    trainer(tmp_path, tiny_cfg(guidance_scale=3.0)).resume()  # sampling settings may change


def test_sampling_uses_the_trained_network_settings_and_checks_the_fold(tmp_path):
    first = trainer(tmp_path)
    first.fit(quiet=True)
    later = tiny_cfg(resolution_px=16, lr=0.1, epochs=5, guidance_scale=1.5)  # as a later command line might say
    unet, cfg, state = load_generator(tmp_path / "generator.pt", later, 0, CLASSES, {"x": "y"}, CPU)
    assert (cfg.resolution_px, cfg.guidance_scale, unet.config.sample_size) == (8, 1.5, 8)
    with pytest.raises(UserError, match="another fold"):
        load_generator(tmp_path / "generator.pt", later, 1, CLASSES, {"x": "y"}, CPU)
    with pytest.raises(UserError, match="data changed"):
        load_generator(tmp_path / "generator.pt", later, 0, CLASSES, {"x": "z"}, CPU)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_diffusion_target_matches_the_prediction_type(kind):
    sched = build_noise_scheduler(tiny_cfg(prediction=kind))
    x0, noise, t = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8), torch.tensor([0, 10, 500, 999])
    target = diffusion_target(sched, x0, noise, t)
    expected = {"epsilon": noise, "sample": x0}.get(kind)
    if kind == "v_prediction":  # v = sqrt(abar) * noise - sqrt(1 - abar) * x0
        abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
        expected = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    torch.testing.assert_close(target, expected)


def test_config_rejects_a_resolution_the_network_cannot_halve():
    with pytest.raises(UserError, match="divisible by 4"):
        tiny_cfg(resolution_px=10)


# --- sample folders ------------------------------------------------------------------------------------------
def sample_folder(tmp_path, fold=0, n_per_class=4):
    labels = np.repeat(np.arange(3), n_per_class)
    images = np.random.default_rng(0).integers(0, 255, (len(labels), 12, 12, 1), dtype=np.uint8)
    meta = {"fold": fold, "classes": CLASSES, "split": SPLIT, "generator_sha256": "g"}
    folder = tmp_path / "syn" / f"fold{fold}"
    folder.mkdir(parents=True)
    manifest = new_manifest(fold, labels, list(range(len(labels))), CLASSES, 1.0)
    write_samples(folder, images, manifest, meta)
    return folder, manifest


def test_filter_keeps_confident_agreeing_samples_and_reports_per_class():
    manifest = pd.DataFrame({"file": ["x", "y", "z", "w"], "label": ["a", "a", "b", "c"], "kept": True})
    probs = np.array([[0.95, 0.05, 0], [0.6, 0.4, 0], [0.9, 0.1, 0], [0, 0, 1.0]])
    out = apply_filter(manifest, probs, CLASSES, 0.9)
    assert out["kept"].tolist() == [True, False, False, True]
    assert out["predicted"].tolist() == ["a", "a", "a", "c"] and out["confidence"].tolist() == [0.95, 0.6, 0.1, 1.0]
    table = kept_table(out, CLASSES).set_index("class")
    assert table.loc["a", "kept_fraction"] == 0.5 and table.loc["b", "kept"] == 0 and table.loc["all", "kept"] == 2


def test_select_rows_by_ratio_fixed_count_or_all():
    manifest = pd.DataFrame({"label": list("aaaabbbbcccc"), "kept": [True, True, False, True] * 3})
    real = np.array([0, 0, 1, 1, 1, 2])
    by_ratio = select_rows(manifest, CLASSES, real, 1.0, 0, False, "m")
    assert by_ratio["label"].value_counts().to_dict() == {"a": 2, "b": 3, "c": 1} and by_ratio["kept"].all()
    assert len(select_rows(manifest, CLASSES, real, 0, 2, False, "m")) == 6
    assert len(select_rows(manifest, CLASSES, real, 0, -1, False, "m")) == 9
    assert len(select_rows(manifest, CLASSES, real, 0, -1, True, "m")) == 12
    with pytest.raises(UserError, match="class 'a' needs 4 synthetic rows but has 3 kept"):
        select_rows(manifest, CLASSES, real, 2.0, 0, False, "m")


def test_sample_folder_round_trip_and_leak_guard(tmp_path):
    folder, _ = sample_folder(tmp_path)
    images, labels, ids, record = load_synthetic_rows(folder.parent, 0, CLASSES, SPLIT, ImageSpec(16, 16, 3),
                                                      "cubic", np.array([0, 1, 2]), 1.0, 0, False)
    assert images.shape == (3, 16, 16, 3) and labels.tolist() == [0, 1, 2] and len(set(ids)) == 3
    assert record["rows"] == 3 and len(record["manifest_sha256"]) == 64
    with pytest.raises(UserError, match="made for fold 0, not fold 1"):
        read_sample_dir(folder, 1, CLASSES, SPLIT)
    with pytest.raises(UserError, match="folds_csv_sha256"):
        read_sample_dir(folder, 0, CLASSES, {**SPLIT, "folds_csv_sha256": "other"})
    with pytest.raises(UserError, match="class list"):
        read_sample_dir(folder, 0, ["a", "b"], SPLIT)


def test_sample_folder_with_missing_pieces_is_refused(tmp_path):
    folder, manifest = sample_folder(tmp_path)
    (folder / manifest["file"].iloc[5]).unlink()
    with pytest.raises(UserError, match="line 7: image 'images/syn_f0_000005.png' not found"):
        read_sample_dir(folder, 0, CLASSES, SPLIT)
    manifest.loc[5, "label"] = "zebra"
    manifest.to_csv(folder / "manifest.csv", index=False)
    with pytest.raises(UserError, match="line 7: label 'zebra'"):
        read_sample_dir(folder, 0, CLASSES, SPLIT)
    (folder / "manifest.csv").unlink()
    with pytest.raises(UserError, match="manifest.csv: missing"):
        read_sample_dir(folder, 0, CLASSES, SPLIT)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["fold"] == 0
