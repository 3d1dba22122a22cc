"""
`cocoop-hf generate-split`: write the official-format `split_zhou_<Name>.json` of a dataset whose published split file
is missing, as the official code does on its first run (cocoop_hf_training.benchmarks.generate_split_file). The parser
imports nothing heavy, so that `--help` answers at once.
"""

import argparse


# Datasets whose official code can generate a split (benchmarks' catalogue: a `generator`); tests check the list.
GENERATED_SPLITS = ("Caltech101", "OxfordPets", "Food101", "SUN397", "DescribableTextures", "EuroSAT", "UCF101")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write the official-format split file split_zhou_<Name>.json of a dataset that lacks it, as the "
        "official CoOp code does on its first run, into the dataset's folder under --data_root; prints the path "
        f"written. Datasets that can be split so: {', '.join(GENERATED_SPLITS)}. An existing split file is never "
        "overwritten. Only the published split files reproduce the paper's splits exactly: a generated one "
        "shuffles the images in the file system's listing order.",
    )
    parser.add_argument("--benchmark", required=True, help="Dataset (official name, folder name or alias).")
    parser.add_argument("--data_root", required=True, help="The $DATA folder of the official DATASETS.md layout.")
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="Seed of the shuffle (default: 1, the seed of the official scripts' first run, which writes the file).",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    from cocoop_hf_training.benchmarks import generate_split_file

    path = generate_split_file(args.benchmark, args.data_root, args.seed)  # refuses an existing file (one line)
    print(path, flush=True)
    return path


if __name__ == "__main__":
    from cocoop_hf_training.script_runner import run_script

    run_script(main, "cocoop-hf generate-split")
