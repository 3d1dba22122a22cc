"""
Where the offline demo's files are, for Python code (the README's usage snippet, a notebook): they ship inside this
package (package data), so the paths work the same from a clone and from an installed wheel, whatever the current
folder.

- `TINY_CLIP`: a tiny CLIP folder (config.json, the real CLIP tokenizer, an image processor config) with no weights:
  `CoCoOpModel.from_clip(TINY_CLIP, names, random_init=True)` builds it with random weights.
- `DEMO_IMAGE`: one real 32x32 CIFAR-10 test image of a cat (the row `0153.jpg` of `CIFAR10_DEMO/test.parquet`,
  saved as PNG).
- `CIFAR10_DEMO`: the folder of the demo recipe's 400 CIFAR-10 images (train.parquet, test.parquet).
"""

from pathlib import Path


DEMO_DIR = Path(__file__).resolve().parent / "demo"
TINY_CLIP = DEMO_DIR / "tiny-clip"
DEMO_IMAGE = DEMO_DIR / "images" / "cat.png"
CIFAR10_DEMO = DEMO_DIR / "cifar10_demo"
