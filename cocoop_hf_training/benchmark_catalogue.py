"""The catalogue of the 15 benchmarks: each dataset's official name, folder under the data root, zero-shot template,
reader and split generator (`BENCHMARKS`), the other names the same datasets go by (`ALIASES`), and `get_benchmark`,
which finds an entry by any of them.

Official reference: each dataset's file in KaiyangZhou/CoOp `datasets/` (folders, image folders, split-file names) and
`trainers/zsclip.py` (`CUSTOM_TEMPLATES`).
"""

from cocoop_hf_training.benchmark_layout import Benchmark
from cocoop_hf_training.benchmark_readers import (
    read_fgvc_aircraft,
    read_imagenet,
    read_imagenet_v2,
    split_file_reader,
    wnid_folder_reader,
)
from cocoop_hf_training.benchmark_splitters import (
    CALTECH101_IGNORED,
    CALTECH101_RENAMES,
    EUROSAT_RENAMES,
    folder_splitter,
    generate_oxford_pets,
    generate_sun397,
    generate_ucf101,
)


# --------------------------------------------------------------------------------------------------------------------
# The catalogue. Folder names, image folders and split-file names: each dataset's file in CoOp datasets/;
# templates: trainers/zsclip.py CUSTOM_TEMPLATES.


def _with_split_file(
    name: str, folder: str, template: str, image_subdir: str, generator=None, split_name: str | None = None
) -> Benchmark:
    split_file = f"split_zhou_{split_name or name}.json"
    return Benchmark(
        name,
        folder,
        template,
        split_file_reader(name, image_subdir, split_file, can_generate=generator is not None),
        split_file=split_file,
        image_subdir=image_subdir,
        generator=generator,
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("ImageNet", "imagenet", "a photo of a {}.", read_imagenet),  # datasets/imagenet.py
        # datasets/caltech101.py: paths relative to 101_ObjectCategories/
        _with_split_file(
            "Caltech101",
            "caltech-101",
            "a photo of a {}.",
            "101_ObjectCategories",
            folder_splitter("Caltech101", "101_ObjectCategories", CALTECH101_IGNORED, CALTECH101_RENAMES),
        ),
        # datasets/oxford_pets.py: paths relative to images/
        _with_split_file(
            "OxfordPets", "oxford_pets", "a photo of a {}, a type of pet.", "images", generate_oxford_pets
        ),
        # datasets/stanford_cars.py: read_split(split_path, self.dataset_dir), paths relative to the dataset folder;
        # generating needs the devkit .mat files (not read here)
        _with_split_file("StanfordCars", "stanford_cars", "a photo of a {}.", ""),
        # datasets/oxford_flowers.py: paths relative to jpg/; generating needs imagelabels.mat (not read here)
        _with_split_file("OxfordFlowers", "oxford_flowers", "a photo of a {}, a type of flower.", "jpg"),
        # datasets/food101.py: paths relative to images/; the release's own meta/ lists are not used
        _with_split_file(
            "Food101", "food-101", "a photo of {}, a type of food.", "images", folder_splitter("Food101", "images")
        ),
        Benchmark("FGVCAircraft", "fgvc_aircraft", "a photo of a {}, a type of aircraft.", read_fgvc_aircraft),
        # datasets/sun397.py: paths relative to SUN397/
        _with_split_file("SUN397", "sun397", "a photo of a {}.", "SUN397", generate_sun397),
        # datasets/dtd.py: paths relative to images/
        _with_split_file(
            "DescribableTextures", "dtd", "{} texture.", "images", folder_splitter("DescribableTextures", "images")
        ),
        # datasets/eurosat.py: paths relative to 2750/
        _with_split_file(
            "EuroSAT",
            "eurosat",
            "a centered satellite photo of {}.",
            "2750",
            folder_splitter("EuroSAT", "2750", renames=EUROSAT_RENAMES),
        ),
        # datasets/ucf101.py: paths relative to UCF-101-midframes/
        _with_split_file("UCF101", "ucf101", "a photo of a person doing {}.", "UCF-101-midframes", generate_ucf101),
        Benchmark("ImageNetV2", "imagenetv2", "a photo of a {}.", read_imagenet_v2, test_only=True),
        Benchmark(
            "ImageNetSketch",
            "imagenet-sketch",
            "a photo of a {}.",
            wnid_folder_reader("ImageNetSketch", "images"),
            test_only=True,
        ),
        Benchmark(
            "ImageNetA",
            "imagenet-adversarial",
            "a photo of a {}.",
            wnid_folder_reader("ImageNetA", "imagenet-a", ignored=("README.txt",)),
            test_only=True,
        ),
        Benchmark(
            "ImageNetR",
            "imagenet-rendition",
            "a photo of a {}.",
            wnid_folder_reader("ImageNetR", "imagenet-r", ignored=("README.txt",)),
            test_only=True,
        ),
    )
}

# Names used in the paper's tables and elsewhere for the same datasets.
ALIASES = {
    "flowers102": "OxfordFlowers",
    "dtd": "DescribableTextures",
    "fgvc_aircraft": "FGVCAircraft",
    "aircraft": "FGVCAircraft",
    "food-101": "Food101",
    "imagenet-v2": "ImageNetV2",
    "imagenet-sketch": "ImageNetSketch",
    "imagenet-a": "ImageNetA",
    "imagenet-r": "ImageNetR",
}


def get_benchmark(name: str) -> Benchmark:
    """The catalogue entry for an official name ("OxfordFlowers"), a folder name ("oxford_flowers") or an alias
    ("Flowers102", "DTD"), case-insensitively."""
    key = name.lower()
    for bench in BENCHMARKS.values():
        if key in (bench.name.lower(), bench.folder.lower()):
            return bench
    if key in ALIASES:
        return BENCHMARKS[ALIASES[key]]
    raise ValueError(f"Unknown benchmark {name!r}; choose one of {sorted(BENCHMARKS)}.")
