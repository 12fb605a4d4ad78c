"""The speed bench keeps running: its quick mode, end to end (numbers are not checked; machines are noisy)."""
import pytest

from helpers import run_script

pytestmark = pytest.mark.slow


def test_train_speed_bench_quick_mode_writes_its_table(tmp_path):
    out = tmp_path / "speed.md"
    proc = run_script("bench/train_speed.py", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    for arm in ("bare loop", "engine, augment light (default)", "engine, augment heavy", "engine inference"):
        assert arm in table, arm
    assert "ratio to bare" in table and "Machine:" in table and "not a measurement" in table
    for cell in ("fp32 NCHW", "fp32 NHWC", "bf16 NCHW", "bf16 NHWC", "auto picks", "smallresnet", "resnet18"):
        assert cell in table, cell
