"""CPU precision and memory format: bf16 autocast and channels_last only where a short measured probe says they
are faster on this host, for this model and input size.

Which is fastest depends on the CPU (bf16 needs AMX or AVX-512 BF16 to be more than emulated), the model and the
input size, so `amp: auto` / `channels_last: auto` are settled by timing a few training steps of every candidate
on random data. The rule:
- bf16 is a candidate only on a CPU with native bf16 (AMX or AVX-512 BF16); elsewhere it is emulated and slow;
- a candidate replaces fp32 NCHW only when it is at least MARGIN faster, so timing noise cannot flip a run;
- the result is kept per host, torch version, threads, model, input and batch in `speed_probe.json` in the image
  cache folder, so every later run on this data and host makes the same choice without probing again.
The config keeps `auto` (it travels to other hosts, which decide for themselves); the choice and its timings go to
config.json's `cpu_speed`, the precision and memory format to its `runtime` (checked on resume), and a resumed fold
reuses its recorded choice instead of probing again. On CUDA nothing is probed: auto means on.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from src.core.atomic import write_text
from src.core.repro import cpu_name
from src.train.config import TrainConfig
from src.train.distributed import broadcast_object
from src.train.engine import Runtime
from src.train.models import build_model

PROBE_FILE = "speed_probe.json"
MARGIN = 1.10  # a candidate must train >= 10 % faster than fp32 NCHW to be chosen
WARMUP_STEPS, TIMED_STEPS, ROUNDS = 1, 3, 2


@dataclasses.dataclass(frozen=True)
class Candidate:
    bf16: bool
    channels_last: bool

    @property
    def name(self) -> str:
        return f"{'bf16' if self.bf16 else 'fp32'} {'NHWC' if self.channels_last else 'NCHW'}"


BASELINE = Candidate(False, False)


def native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX tiles or AVX-512 BF16)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check() for check in checks if check is not None)


def candidates(amp: str, channels_last: str, bf16_native: bool) -> list[Candidate]:
    """The combinations the settings allow; `auto` on amp offers bf16 only with native bf16. Baseline first."""
    precisions = {"off": [False], "on": [True], "auto": [False, True] if bf16_native else [False]}[amp]
    formats = {"off": [False], "on": [True], "auto": [False, True]}[channels_last]
    return [Candidate(p, f) for p in precisions for f in formats]


def choose(speeds: dict[Candidate, float], margin: float = MARGIN) -> Candidate:
    """The fastest candidate, unless it beats the first (the baseline) by less than `margin`."""
    base = next(iter(speeds))
    best = max(speeds, key=speeds.get)
    return best if speeds[best] >= margin * speeds[base] else base


def time_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cand: Candidate, steps: int) -> float:
    """Images per second over `steps` training steps (forward, loss, backward, AdamW) of one candidate."""
    fmt = torch.channels_last if cand.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    x = x.contiguous(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cand.bf16):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * len(x) / (time.perf_counter() - start)


def measure(cfg: TrainConfig, in_chans: int, num_classes: int, size_hw: tuple[int, int],
            cands: list[Candidate]) -> dict[Candidate, float]:
    """Median training images/s of each candidate on random data, interleaved over rounds (hosts are noisy)."""
    with torch.random.fork_rng(devices=[]):  # the probe must not move the run's random streams (CPU only)
        torch.manual_seed(0)
        return _measure(cfg, in_chans, num_classes, size_hw, cands)


def _measure(cfg: TrainConfig, in_chans: int, num_classes: int, size_hw: tuple[int, int],
             cands: list[Candidate]) -> dict[Candidate, float]:
    model = build_model(dataclasses.replace(cfg, pretrained=""), in_chans, num_classes)
    x = torch.randn(cfg.batch_size, in_chans, *size_hw)
    y = torch.randint(0, num_classes, (cfg.batch_size,))
    results: dict[Candidate, list[float]] = {c: [] for c in cands}
    for _ in range(ROUNDS):
        for cand in [c for c in cands if c in results]:
            try:
                time_steps(model, x, y, cand, WARMUP_STEPS)
                results[cand].append(time_steps(model, x, y, cand, TIMED_STEPS))
            except RuntimeError:  # an op this candidate cannot run (e.g. under bf16 autocast): not a candidate
                if cand == cands[0]:
                    raise
                del results[cand]
    return {c: statistics.median(v) for c, v in results.items()}


def probe_key(cfg: TrainConfig, in_chans: int, size_hw: tuple[int, int]) -> str:
    return json.dumps({"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "model": cfg.model, "drop_path_rate": cfg.drop_path_rate, "in_chans": in_chans,
                       "size_hw": list(size_hw), "batch_size": cfg.batch_size}, sort_keys=True)


def read_probes(path: Path) -> dict:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent or damaged: probe again (the file is a cache, never an input)
    return values if isinstance(values, dict) else {}


def probe(cfg: TrainConfig, in_chans: int, num_classes: int, size_hw: tuple[int, int], cache_dir: Path) -> dict:
    """The decision for this host and run shape: from the cache file, else measured and stored there.
    {"amp": on|off, "channels_last": on|off, "images_per_s": {candidate: speed}, "cached": bool}."""
    cands = candidates(cfg.amp, cfg.channels_last, native_bf16())
    if len(cands) == 1:
        return {**as_settings(cands[0]), "images_per_s": {}, "cached": False}
    path = cache_dir / PROBE_FILE
    key = probe_key(cfg, in_chans, size_hw)
    probes = read_probes(path)
    entry = probes.get(key, {})
    speeds = {c: entry["images_per_s"][c.name] for c in cands if c.name in entry.get("images_per_s", {})}
    cached = len(speeds) == len(cands)
    if not cached:
        try:
            speeds = measure(cfg, in_chans, num_classes, size_hw, cands)
        except (RuntimeError, AssertionError, ValueError, TypeError):
            # The model cannot train on this input at all: nothing to choose; the fold trainer's own check says why.
            return {**as_settings(cands[0]), "images_per_s": {}, "cached": False}
        # The entry becomes this sitting's timings alone: timings from different sittings are not compared, so
        # a later run reading the cache chooses from the numbers this run chose from.
        probes[key] = {"images_per_s": {c.name: round(s, 1) for c, s in speeds.items()}}
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            write_text(path, json.dumps(probes, indent=1) + "\n")
        except OSError:
            pass  # a read-only cache folder: the decision still holds for this run, and is in its config.json
    return {**as_settings(choose(speeds)), "images_per_s": {c.name: round(s, 1) for c, s in speeds.items()},
            "cached": cached}


def as_settings(cand: Candidate) -> dict:
    return {"amp": "on" if cand.bf16 else "off", "channels_last": "on" if cand.channels_last else "off"}


def resolve_cpu_speed(cfg: TrainConfig, rt: Runtime, in_chans: int, num_classes: int, size_hw: tuple[int, int],
                      cache_dir: Path, recorded: dict | None = None) -> dict | None:
    """Settle amp/channels_last `auto` on a CPU and switch the runtime to match; rank 0 decides for every process.
    `recorded` (a resumed fold's config.json `cpu_speed`) is reused as it is, so a resumed run trains as before.
    Returns the record for config.json (None where nothing was auto, or on CUDA)."""
    if rt.device.type != "cpu" or "auto" not in (cfg.amp, cfg.channels_last):
        return None
    if rt.dist.is_main:
        record = {**recorded, "cached": True, "reused": True} if recorded else \
            probe(cfg, in_chans, num_classes, size_hw, cache_dir)
    else:
        record = None
    record = broadcast_object(record, rt.dist)
    rt.amp_dtype = torch.bfloat16 if record["amp"] == "on" else None
    rt.channels_last = record["channels_last"] == "on"
    return record


def describe(record: dict) -> str:
    """One line for the run's printout."""
    chosen = f"{'bf16 autocast' if record['amp'] == 'on' else 'fp32'}, " \
             f"{'channels_last' if record['channels_last'] == 'on' else 'NCHW'}"
    speeds = ", ".join(f"{name} {speed:.0f}" for name, speed in record["images_per_s"].items())
    source = "as recorded by the resumed run" if record.get("reused") else \
        "cached probe" if record["cached"] else "probe"
    return f"cpu speed: {chosen}" + (f" ({source}, training img/s: {speeds})" if speeds else "")
