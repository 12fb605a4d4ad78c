"""tune.py's flow: the base config and space, the study, its trials within the budget, and the reports, which are
written however the study ends (Ctrl-C and SIGTERM included)."""
from __future__ import annotations

import signal
from pathlib import Path

from src.core.errors import UserError
from src.core.interrupts import raise_interrupt
from src.tune import study as tuning
from src.tune.report import best_trial, write_reports
from src.tune.space import FIELD_TYPES, base_config, check_space, load_space
from src.tune.trials import run_trials, train_holdout

HELD_OUT_ATTR = "held_out_result"  # the best trial's --holdout-folds score, kept with the study for later reports


def run_study(args, start: float) -> None:
    """Everything after argument parsing; `start` is when the budget began (time.monotonic())."""
    signal.signal(signal.SIGTERM, raise_interrupt)  # a scheduler's kill ends like Ctrl-C: the reports are written
    deadline = start + tuning.parse_budget(args.budget) if args.budget else None
    full_space = load_space(args.space)
    base, space = base_config(args.config, full_space, vars(args))
    check_space(space, base)  # every searched value is checked before any trial runs
    folds, holdout, val_rows = tuning.check_folds(base, args.folds, args.holdout_folds)
    name = tuning.check_name(args.name or f"{Path(base.data_dir).name}-{Path(args.space).stem}")
    tune_dir = Path(base.runs_dir) / "tune" / name
    storage = args.storage or tuning.default_storage(tune_dir)
    # Unset: a resumed or reported study keeps the schedule it was made with; a new one halves.
    fidelity = args.fidelity or tuning.stored_schedule(storage, name) or "halving"
    job = tuning.TuneJob(name, base, space, folds, tune_dir, args.quiet, deadline, val_rows,
                         halving=fidelity == "halving")
    if job.halving and args.pruner not in ("auto", "none"):
        raise UserError(f"--pruner {args.pruner}: --fidelity halving already stops weak configs early; use it with "
                        f"--fidelity full")
    pruner = "none" if job.halving else "median" if args.pruner == "auto" else args.pruner
    study = tuning.open_study(job, storage, args.resume or args.report, pruner, must_exist=args.report)
    flags = sorted(f"{k}={v}" for k, v in vars(args).items() if k in FIELD_TYPES and k != "data_dir")  # given ones
    print(f"study {name} ({storage}): searching {', '.join(space.params)}; set by flags: {', '.join(flags) or '-'}"
          f"; tuning on fold(s) {args.folds}, so the best value is optimistic; trial logs: "
          f"{job.trials_dir}/trial<n>/train.log", flush=True)
    held = None
    try:
        if not args.report:
            run_trials(study, job, args.trials, len(holdout))
            best = best_trial(study)
            if holdout and best:
                held = (holdout, train_holdout(best, job, holdout))
                study.set_user_attr(HELD_OUT_ATTR, {"trial": best.number, "folds": holdout, "value": held[1]})
    finally:  # however the study ends: what it found so far, in files
        best = best_trial(study)
        saved = study.user_attrs.get(HELD_OUT_ATTR)
        if held is None and best and saved and saved["trial"] == best.number:  # --report, a joined process
            held = (saved["folds"], saved["value"])
        tuned_path = Path(args.tuned_dir) / f"{name}.yaml"
        lines = write_reports(study, job.tune_dir, storage, folds, base.monitor, tuned_path, held)
        print("\n".join(lines) + f"\nreport: {job.tune_dir / 'summary.md'}")
    if best is None:
        limit = "so far (--report)" if args.report else f"within --budget {args.budget}" if args.budget else \
            f"within --trials {args.trials}"
        raise UserError(f"no trial completed {limit} (see {job.tune_dir / 'trials.md'}); raise --budget or "
                        f"lower epochs (--epochs, or the space's epochs range)")
