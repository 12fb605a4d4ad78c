"""The CPU precision / memory-format probe: candidates, the margin rule, its cache, and train.py's record of it."""
import json

import pytest
import torch

from src.core.config import config_differences, config_from_dict, load_config_file
from src.pretrain.config import PretrainConfig
from src.train import cpu_speed
from src.train.config import TrainConfig
from src.train.cpu_speed import Candidate, candidates, choose, probe, resolve_cpu_speed
from src.train.engine import Runtime, setup_runtime

from helpers import train


def test_bf16_is_offered_only_where_the_cpu_has_it_and_settings_pin_their_axis():
    assert candidates("auto", "auto", False) == [Candidate(False, False), Candidate(False, True)]
    assert len(candidates("auto", "auto", True)) == 4 and candidates("auto", "auto", True)[0] == cpu_speed.BASELINE
    assert candidates("on", "off", False) == [Candidate(True, False)]  # asked for: honoured, even if emulated
    assert candidates("off", "auto", True) == [Candidate(False, False), Candidate(False, True)]


def test_a_candidate_must_beat_the_baseline_by_the_margin():
    base, nhwc, bf16 = Candidate(False, False), Candidate(False, True), Candidate(True, True)
    assert choose({base: 100.0, nhwc: 109.0}) == base  # within noise: keep fp32 NCHW
    assert choose({base: 100.0, nhwc: 111.0, bf16: 250.0}) == bf16
    assert choose({base: 100.0, nhwc: 90.0}) == base


def test_probe_measures_once_then_reads_its_cache_and_survives_a_damaged_file(tmp_path, monkeypatch):
    cfg = TrainConfig(batch_size=4)
    calls = []
    real = cpu_speed.measure
    monkeypatch.setattr(cpu_speed, "measure", lambda *a: calls.append(1) or real(*a))
    first = probe(cfg, 1, 3, (12, 12), tmp_path)
    assert calls == [1] and not first["cached"] and set(first["images_per_s"]) >= {"fp32 NCHW", "fp32 NHWC"}
    second = probe(cfg, 1, 3, (12, 12), tmp_path)
    assert calls == [1] and second["cached"] and second["amp"] == first["amp"]
    assert second["channels_last"] == first["channels_last"]
    probe(cfg, 1, 3, (16, 16), tmp_path)  # another input size is another entry
    assert calls == [1, 1] and len(json.loads((tmp_path / cpu_speed.PROBE_FILE).read_text())) == 2
    monkeypatch.setattr(cpu_speed, "native_bf16", lambda: True)  # more candidates: all measured in one sitting
    monkeypatch.setattr(cpu_speed, "measure", lambda cfg, c, n, hw, cands: calls.append(1) or {
        cand: 100.0 + 50 * i for i, cand in enumerate(cands)})
    wider = probe(cfg, 1, 3, (12, 12), tmp_path)
    assert calls == [1, 1, 1] and not wider["cached"] and (wider["amp"], wider["channels_last"]) == ("on", "on")
    again = probe(cfg, 1, 3, (12, 12), tmp_path)  # the cache now holds what that choice was made from
    assert calls == [1, 1, 1] and again["cached"] and again["images_per_s"] == wider["images_per_s"]
    (tmp_path / cpu_speed.PROBE_FILE).write_text("{not json")
    assert not probe(cfg, 1, 3, (12, 12), tmp_path)["cached"] and calls == [1, 1, 1, 1]


def test_probe_leaves_the_random_streams_where_they_were(tmp_path):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    probe(TrainConfig(batch_size=4), 1, 3, (12, 12), tmp_path)
    assert torch.equal(torch.rand(3), expected)


def test_resolution_switches_the_runtime_and_leaves_the_config_at_auto(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu_speed, "native_bf16", lambda: True)
    monkeypatch.setattr(cpu_speed, "measure", lambda cfg, c, n, hw, cands: {c: 100.0 + 50 * c.bf16 for c in cands})
    cfg = TrainConfig(device="cpu")
    rt = setup_runtime(cfg)
    assert (rt.amp_dtype, rt.channels_last) == (None, False)  # auto is off until the probe says otherwise
    record = resolve_cpu_speed(cfg, rt, 1, 3, (12, 12), tmp_path)
    assert (record["amp"], record["channels_last"], rt.amp_dtype, rt.channels_last) == ("on", "off", torch.bfloat16,
                                                                                         False)
    assert record["images_per_s"]["bf16 NCHW"] == 150.0 and cfg.amp == "auto"
    # A resumed fold's recorded choice is kept, whatever a probe would say now.
    rt = setup_runtime(cfg)
    kept = resolve_cpu_speed(cfg, rt, 1, 3, (12, 12), tmp_path, recorded={**record, "channels_last": "on"})
    assert kept["reused"] and (rt.amp_dtype, rt.channels_last) == (torch.bfloat16, True)
    pinned = TrainConfig(device="cpu", amp="off", channels_last="on")
    assert resolve_cpu_speed(pinned, setup_runtime(pinned), 1, 3, (12, 12), tmp_path) is None
    cuda = Runtime(torch.device("cuda"), torch.bfloat16, True)  # nothing is probed on a GPU: auto means on
    assert resolve_cpu_speed(TrainConfig(), cuda, 1, 3, (12, 12), tmp_path) is None


def test_amp_on_trains_bf16_on_a_cpu_and_old_boolean_configs_still_load(tmp_path):
    assert setup_runtime(TrainConfig(device="cpu", amp="on")).amp_dtype == torch.bfloat16
    old = config_from_dict({"amp": True, "channels_last": False}, TrainConfig)
    assert (old.amp, old.channels_last) == ("auto", "off")
    assert config_differences({"amp": True, "channels_last": True}, {"amp": "auto", "channels_last": "auto"},
                              TrainConfig) == []  # an old run and a new one of the same defaults
    path = tmp_path / "exp.yaml"
    path.write_text("amp: on\nchannels_last: off\ndeterministic: true\n")  # YAML 1.1 would read on/off as booleans
    cfg = config_from_dict(load_config_file(path), TrainConfig)
    assert (cfg.amp, cfg.channels_last, cfg.deterministic) == ("on", "off", True)


@pytest.mark.slow
def test_train_records_the_probe_and_a_bf16_run_refuses_to_resume_as_fp32(demo):
    runs = demo["root"] / "cpu_speed"
    assert train(demo, "auto", "--fold", "0", "--amp", "auto", "--channels-last", "auto", runs=runs).returncode == 0
    saved = json.loads((runs / "auto" / "fold0" / "config.json").read_text())
    assert saved["config"]["amp"] == "auto" and saved["cpu_speed"]["amp"] in ("on", "off")
    assert cpu_speed.native_bf16() or saved["cpu_speed"]["amp"] == "off"  # emulated bf16 is never picked
    assert saved["runtime"]["channels_last"] == (saved["cpu_speed"]["channels_last"] == "on")
    proc = train(demo, "bf16", "--fold", "0", "--amp", "on", "--channels-last", "off", "--epochs", "3", runs=runs)
    assert proc.returncode == 0 and "cpu speed" not in proc.stdout  # pinned: nothing to probe
    saved = json.loads((runs / "bf16" / "fold0" / "config.json").read_text())
    assert "cpu_speed" not in saved and saved["runtime"]["amp_dtype"] == "torch.bfloat16"
    proc = train(demo, "bf16", "--fold", "0", "--amp", "off", "--channels-last", "off", "--epochs", "3", "--resume",
                 runs=runs)
    assert proc.returncode == 2 and "amp" in proc.stderr


def test_pretrain_and_generator_booleans_keep_their_meaning_on_a_cpu():
    # Their configs have no probe: channels_last True is NHWC on every device, amp True is AMP on CUDA only.
    pretrain = PretrainConfig(device="cpu", channels_last=True, amp=True)
    rt = setup_runtime(pretrain)
    assert rt.channels_last and rt.amp_dtype is None
    assert not setup_runtime(PretrainConfig(device="cpu", channels_last=False)).channels_last
