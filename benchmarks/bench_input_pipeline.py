"""
Images/s of the training input pipeline (JPEG decode + RandomResizedCrop(224, bicubic) + flip + normalise, in
DataLoader workers through `datasets.with_transform`, exactly as cocoop_hf_training/run_cocoop.py) for 0/1/2/... workers.
Tells how many CPU workers keep a GPU fed: a GPU step's images/s divided by one worker's images/s.

    python benchmarks/bench_input_pipeline.py --parquet photos.parquet --image_column image --workers 0 1 2
    python benchmarks/bench_input_pipeline.py --parquet cocoop_hf_training/demo/cifar10_demo/train.parquet --image_column img

`--parquet` is any parquet file with an image column: real photos (e.g. a few hundred ImageNet JPEGs of about
500x375) give the numbers that matter; the demo's 32 px CIFAR-10 images run from a fresh clone but decode far faster.

Not a test: it reports speed only.
"""

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parquet", required=True, help="a parquet file with an image column (see above)")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--label_column", default="label")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=400, help="Images per measurement (the set is repeated).")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)

    import torch
    from datasets import concatenate_datasets, load_dataset
    from torch.utils.data import DataLoader
    from transformers import CLIPImageProcessor, default_data_collator

    from cocoop_hf_training.data import ImageTransform, build_transforms

    torch.set_num_threads(1)
    data = load_dataset("parquet", data_files=args.parquet, split="train")
    if args.label_column not in data.column_names:
        data = data.add_column(args.label_column, [0] * len(data))
    data = data.select_columns([args.image_column, args.label_column])
    data = data.rename_columns({args.image_column: "image", args.label_column: "label"})
    repeats = -(-args.images // len(data))
    data = concatenate_datasets([data] * repeats).select(range(args.images))
    first = data[0]["image"]
    processor = CLIPImageProcessor()  # CLIP mean/std; the size comes from --size
    train_transform, _ = build_transforms(processor, args.size)
    dataset = data.with_transform(ImageTransform(train_transform))
    print(f"{args.parquet}: {len(data)} images (e.g. {first.size[0]}x{first.size[1]} {first.mode}), {args.size}px")
    print("| workers | images/s | first batch (s) |\n|---|---|---|")
    for workers in args.workers:
        loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers, collate_fn=default_data_collator)
        start = time.perf_counter()
        count, first_batch = 0, None
        for batch in loader:
            count += batch["pixel_values"].shape[0]
            if first_batch is None:
                first_batch = time.perf_counter() - start
        elapsed = time.perf_counter() - start
        print(f"| {workers} | {count / elapsed:.1f} | {first_batch:.2f} |", flush=True)


if __name__ == "__main__":
    main()
