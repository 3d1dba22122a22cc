"""
Regenerate the demo assets shipped in training/demo (they are committed; this records how they were made):

- tiny-clip/: config.json of a tiny CLIP (no weights: the demo draws random ones from a fixed seed), the real CLIP
  tokenizer files (from tests/fixtures/clip-tokenizer) and a 32-px CLIPImageProcessor config;
- cifar10_demo/{train,test}.parquet: 20 + 20 real CIFAR-10 test-set images per class (400 JPEG/PNG rows, < 0.5 MB),
  columns `img` (Image) and `label` (ClassLabel), drawn with a fixed seed.

    python training/demo/make_demo_assets.py --cifar10 ../shared/data/cifar10/test.parquet
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

    text = dict(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
        hidden_act="quick_gelu",
    )
    vision = dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        hidden_act="quick_gelu",
    )
    out.mkdir(parents=True, exist_ok=True)
    CLIPConfig(text_config=text, vision_config=vision, projection_dim=48).save_pretrained(out)
    for path in (REPO / "tests" / "fixtures" / "clip-tokenizer").iterdir():
        shutil.copy(path, out / path.name)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)


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
    parser.add_argument("--cifar10", type=Path, default=REPO.parent / "shared" / "data" / "cifar10" / "test.parquet")
    args = parser.parse_args()
    tiny_clip(DEMO_DIR / "tiny-clip")
    cifar10_subset(args.cifar10, DEMO_DIR / "cifar10_demo")
