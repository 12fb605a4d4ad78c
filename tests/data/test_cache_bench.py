"""The image-cache bench keeps running: its quick mode end to end (numbers are not checked)."""
import pytest

from helpers import run_script

pytestmark = pytest.mark.slow


def test_cache_memory_bench_quick_mode_builds_then_reuses(tmp_path):
    out = tmp_path / "cache.md"
    proc = run_script("bench/cache_memory.py", "--quick", "--work-dir", str(tmp_path / "work"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    table = out.read_text()
    assert "| built |" in table and "| reused |" in table and "peak RSS" in table and "not a measurement" in table
