"""
Regenerate the demo assets shipped in cocoop_hf_training/demo (they are committed; this records how they were made):

- tiny-clip/: config.json of a tiny CLIP, no weights (the demo draws random ones from a fixed seed). This file is the
  one home of the tiny CLIP shape: tests/conftest.py and benchmarks/bench_cocoop.py read it, and this script does not
  write it. The script adds the real CLIP tokenizer files (from tests/fixtures/clip-tokenizer) and a
  CLIPImageProcessor config at the config's image size;
- cifar10_demo/{train,test}.parquet: 20 + 20 real CIFAR-10 test-set images per class (400 JPEG/PNG rows, < 0.5 MB),
  columns `img` (Image) and `label` (ClassLabel), drawn with a fixed seed.

    python cocoop_hf_training/demo/make_demo_assets.py --cifar10 <CIFAR-10 test split as one parquet file>
"""

import argparse
import random
import shutil
from pathlib import Path


DEMO_DIR = Path(__file__).resolve().parent
REPO = DEMO_DIR.parent.parent
PER_CLASS = {"train": 20, "test": 20}


def tiny_clip(out: Path) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor

    size = CLIPConfig.from_pretrained(out).vision_config.image_size
    for path in (REPO / "tests" / "fixtures" / "clip-tokenizer").iterdir():
        shutil.copy(path, out / path.name)
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(out)


def cifar10_subset(source: Path, out: Path, seed: int = 0) -> None:
    from datasets import load_dataset

    data = load_dataset("parquet", data_files=str(source), split="train")
    by_label = {}
    for index, label in enumerate(data["label"]):
        by_label.setdefault(label, []).append(index)
    rng = random.Random(seed)
    picks = {split: [] for split in PER_CLASS}
    for label in sorted(by_label):
        chosen = rng.sample(by_label[label], sum(PER_CLASS.values()))
        picks["train"] += chosen[: PER_CLASS["train"]]
        picks["test"] += chosen[PER_CLASS["train"] :]
    out.mkdir(parents=True, exist_ok=True)
    for split, indices in picks.items():
        data.select(sorted(indices)).to_parquet(out / f"{split}.parquet")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cifar10", type=Path, required=True, help="the CIFAR-10 test split as one parquet file")
    args = parser.parse_args()
    tiny_clip(DEMO_DIR / "tiny-clip")
    cifar10_subset(args.cifar10, DEMO_DIR / "cifar10_demo")
