"""Self-supervised pretraining on a competition's own images: python pretrain.py [all | train | probe].

train: SimCLR (or SimSiam) on every image in train/, unlabeled/ and test/ (labels are never read) ->
<out_dir>/<exp>/backbone.pt, which train.py --pretrained loads. probe: kNN and linear-probe accuracy of the
frozen features on the labelled rows, cross-validated over the fold file. all: both (the default).
"""
from pathlib import Path

from src.core.cli import build_parser, quiet_default, run_main
from src.core.config import add_config_flags, config_from_args
from src.pretrain.config import PretrainConfig, pretrain_dir


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("command", nargs="?", default="all", choices=["all", "train", "probe"], help="what to run")
    parser.add_argument("--weights", default=None, help="probe: backbone file (default <out_dir>/<exp>/backbone.pt)")
    parser.add_argument("--resume", action="store_true", help="continue pretraining from its last.pt, exactly")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing pretraining folder")
    parser.add_argument("--quiet", action="store_true", default=quiet_default(), help="no progress bars")
    add_config_flags(parser, PretrainConfig)
    args = parser.parse_args()
    cfg = config_from_args(args, PretrainConfig)
    from src.core.tables import markdown_table
    from src.pretrain.probe import probe_path, probe_summary, run_probe
    from src.pretrain.trainer import run_pretraining
    from src.train.cv import load_split  # heavy imports (torch, timm) only once the arguments are known to be valid
    from src.train.engine import setup_runtime

    if args.command in ("all", "probe"):  # a bad label file or fold file fails now, not after pretraining
        split = load_split(cfg.data_dir, cfg.train_csv, cfg.image_dir, cfg.id_col, cfg.label_col, cfg.folds_csv)
    rt = setup_runtime(cfg)
    weights = Path(args.weights) if args.weights else pretrain_dir(cfg) / "backbone.pt"
    if args.command in ("all", "train"):
        weights = run_pretraining(cfg, args.resume, args.overwrite, args.quiet, rt)
        print(f"wrote {weights} (train.py --pretrained {weights})")
    if args.command in ("all", "probe"):
        frame = run_probe(cfg, split, weights, rt, args.quiet)
        print(markdown_table(probe_summary(frame)))
        print(f"wrote {probe_path(weights, cfg.data_dir)}")


if __name__ == "__main__":
    run_main(main, interrupt_hint=": finished pretraining epochs are saved in last.pt; continue with --resume")
