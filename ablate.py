"""Compare arms that differ in one thing on the same folds and seeds: python ablate.py configs/ablations/X.yaml.

Trains every unfinished fold of every arm (finished folds are skipped, interrupted ones resumed), scores
each fold model, and writes reports/<name>.md/.csv/.png with each arm's paired difference to the
baseline, its 95 % interval and a verdict. --print-jobs lists the training jobs as plain commands for a
cluster scheduler; --collect only writes the report from what has finished.
"""
import dataclasses
import sys

from src.core.cli import build_parser, quiet_default, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("spec", help="ablation file (YAML/JSON): arms, seeds, folds, regimes; see configs/ablations/")
    parser.add_argument("--name", default="", help="report and experiment name (default: the spec's)")
    parser.add_argument("--seeds", default="", help="override the spec's seeds (every regime), e.g. 42,43")
    parser.add_argument("--folds", default="", help="override the spec's folds (every regime): all or 0,1,2")
    parser.add_argument("--labels-per-class", default="", help="override the demo regimes, e.g. 10,50,all")
    parser.add_argument("--ci", default="", choices=["", "t", "bootstrap"], help="override the interval method")
    parser.add_argument("--print-jobs", action="store_true", help="print the remaining jobs, one command per line")
    parser.add_argument("--collect", action="store_true", help="train nothing; report what has finished")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device for scoring")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    args = parser.parse_args()
    from src.compare.plan import job_lines, run_all
    from src.compare.spec import load_spec, parse_seeds

    spec = load_spec(args.spec)
    overrides = {k: v for k, v in {"name": args.name, "folds": args.folds, "ci": args.ci}.items() if v}
    if args.seeds:
        overrides.update(seeds=parse_seeds(args.seeds, "--seeds"), regime_seeds={})
    if args.folds:
        overrides["regime_folds"] = {}
    if args.labels_per_class:
        overrides["labels_per_class"] = args.labels_per_class.split(",")
    spec = dataclasses.replace(spec, **overrides).validate()
    if args.print_jobs:
        print("\n".join(job_lines(spec)))
        return
    failed = [] if args.collect else run_all(spec, args.quiet)
    from src.compare.report import collect, write_report
    summary, path = write_report(spec, collect(spec, args.device, args.quiet))
    print(path.read_text())
    if failed:
        sys.exit(f"error: {len(failed)} training job(s) failed, the report is partial:\n" + "\n".join(failed))


if __name__ == "__main__":
    run_main(main, interrupt_hint=": finished folds are kept; run the same command again to continue")
