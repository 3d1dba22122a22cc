"""cocoop_hf_training/benchmarks.py: the paper's datasets read from miniature copies of the official folder layouts.

The official loader only checks that each image path is a file (Dassl `Datum`), so empty files stand in for images.
"""

import json
import os
import random
from pathlib import Path

import pytest

from cocoop_hf_training.benchmarks import (
    BENCHMARKS,
    BenchmarkItem,
    BenchmarkLayoutError,
    generate_split_file,
    get_benchmark,
    load_benchmark,
    zero_shot_prompts,
)


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def write_split(dataset_dir: Path, split_file: str, image_root: Path, split: dict, make_images=True) -> None:
    """An official split file: {"train"|"val"|"test": [[relative_path, label, class_name], ...]}."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / split_file).write_text(json.dumps(split))
    image_root.mkdir(parents=True, exist_ok=True)
    if make_images:
        for entries in split.values():
            for rel, _, _ in entries:
                touch(image_root / rel)


# Per dataset: folder, split file, folder the paths are relative to, and entries in the official style
# (relative path, label, class name) as they appear in the published split files.
SPLIT_DATASETS = {
    "OxfordPets": (
        "oxford_pets",
        "split_zhou_OxfordPets.json",
        "images",
        [("Abyssinian_{}.jpg", "abyssinian"), ("american_bulldog_{}.jpg", "american_bulldog")],
    ),
    "OxfordFlowers": (
        "oxford_flowers",
        "split_zhou_OxfordFlowers.json",
        "jpg",
        [("image_0{}.jpg", "pink primrose"), ("image_1{}.jpg", "hard-leaved pocket orchid")],
    ),
    "StanfordCars": (
        "stanford_cars",
        "split_zhou_StanfordCars.json",
        "",
        [("cars_train/0{}.jpg", "2012 AM General Hummer SUV"), ("cars_test/1{}.jpg", "2012 Acura RL Sedan")],
    ),
    "Food101": (
        "food-101",
        "split_zhou_Food101.json",
        "images",
        [("apple_pie/10{}.jpg", "apple_pie"), ("baby_back_ribs/20{}.jpg", "baby_back_ribs")],
    ),
    "SUN397": (
        "sun397",
        "split_zhou_SUN397.json",
        "SUN397",
        [("a/abbey/sun_a{}.jpg", "abbey"), ("a/apartment_building/outdoor/sun_b{}.jpg", "outdoor apartment_building")],
    ),
    "DescribableTextures": (
        "dtd",
        "split_zhou_DescribableTextures.json",
        "images",
        [("banded/banded_{}.jpg", "banded"), ("blotchy/blotchy_{}.jpg", "blotchy")],
    ),
    "EuroSAT": (
        "eurosat",
        "split_zhou_EuroSAT.json",
        "2750",
        [("AnnualCrop/AnnualCrop_{}.jpg", "Annual Crop Land"), ("SeaLake/SeaLake_{}.jpg", "Sea or Lake")],
    ),
    "UCF101": (
        "ucf101",
        "split_zhou_UCF101.json",
        "UCF-101-midframes",
        [
            ("Apply_Eye_Makeup/v_ApplyEyeMakeup_g08_c0{}.jpg", "Apply_Eye_Makeup"),
            ("Handstand_Pushups/v_HandstandPushups_g08_c0{}.jpg", "Handstand_Pushups"),
        ],
    ),
    "Caltech101": (
        "caltech-101",
        "split_zhou_Caltech101.json",
        "101_ObjectCategories",
        [("Faces/image_000{}.jpg", "face"), ("accordion/image_000{}.jpg", "accordion")],
    ),
}


def make_split_dataset(root: Path, name: str, counts=(3, 2, 1), make_images=True):
    """Two classes; class 1 is listed first so label order cannot come from file order. counts: train/val/test per
    class."""
    folder, split_file, image_subdir, classes = SPLIT_DATASETS[name]
    split, n = {}, 0
    for split_name, count in zip(("train", "val", "test"), counts, strict=True):
        entries = []
        for label in (1, 0):
            pattern, class_name = classes[label]
            for _ in range(count):
                entries.append([pattern.format(n), label, class_name])
                n += 1
        split[split_name] = entries
    write_split(root / folder, split_file, root / folder / image_subdir, split, make_images=make_images)
    return split


@pytest.mark.parametrize("name", sorted(SPLIT_DATASETS))
def test_split_file_datasets_read_names_labels_and_paths_from_the_split_file(tmp_path, name):
    folder, _, image_subdir, classes = SPLIT_DATASETS[name]
    split = make_split_dataset(tmp_path, name)
    data = load_benchmark(name, tmp_path)

    assert data["class_names"] == [classes[0][1], classes[1][1]]
    assert {k: len(v) for k, v in data.items() if k != "class_names"} == {"train": 6, "val": 4, "test": 2}
    image_dir = tmp_path / folder / image_subdir
    for split_name in ("train", "val", "test"):
        expected = [BenchmarkItem(str(image_dir / rel), label, cname) for rel, label, cname in split[split_name]]
        assert data[split_name] == expected
    assert all(data["class_names"][item.label] == item.class_name for item in data["test"])


def test_stanford_cars_paths_are_relative_to_the_dataset_folder(tmp_path):
    make_split_dataset(tmp_path, "StanfordCars")
    item = load_benchmark("StanfordCars", tmp_path)["train"][0]
    assert Path(item.path).parent == tmp_path / "stanford_cars" / "cars_test"


@pytest.mark.parametrize("name", ["Caltech101", "DescribableTextures", "EuroSAT", "OxfordPets", "Food101"])
def test_missing_split_file_is_refused_with_its_path(tmp_path, name):
    folder, split_file, image_subdir, _ = SPLIT_DATASETS[name]
    (tmp_path / folder / image_subdir).mkdir(parents=True)
    with pytest.raises(BenchmarkLayoutError) as err:
        load_benchmark(name, tmp_path)
    assert split_file in str(err.value) and str(tmp_path / folder / split_file) in str(err.value)
    assert "DATASETS.md" in str(err.value)
    assert list((tmp_path / folder).iterdir()) == [tmp_path / folder / image_subdir.split("/")[0]]  # nothing written


def test_missing_dataset_folder_names_folder_and_instructions(tmp_path):
    with pytest.raises(BenchmarkLayoutError, match=r"dataset folder oxford_pets/ missing at .*DATASETS\.md"):
        load_benchmark("OxfordPets", tmp_path)


def test_missing_image_folder_is_named(tmp_path):
    (tmp_path / "eurosat").mkdir()
    (tmp_path / "eurosat" / "split_zhou_EuroSAT.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    with pytest.raises(BenchmarkLayoutError, match=r"image folder 2750/ missing"):
        load_benchmark("EuroSAT", tmp_path)


def test_missing_images_raise_unless_not_checked(tmp_path):
    make_split_dataset(tmp_path, "DescribableTextures", make_images=False)
    with pytest.raises(BenchmarkLayoutError, match=r"6 image\(s\) of the train split are missing"):
        load_benchmark("DTD", tmp_path)
    assert len(load_benchmark("DTD", tmp_path, check_files=False)["train"]) == 6


def test_class_without_train_images_is_an_error(tmp_path):
    split = {
        "train": [["banded/a.jpg", 0, "banded"], ["dotted/c.jpg", 2, "dotted"]],
        "val": [],
        "test": [["blotchy/b.jpg", 1, "blotchy"]],
    }
    write_split(tmp_path / "dtd", "split_zhou_DescribableTextures.json", tmp_path / "dtd" / "images", split)
    with pytest.raises(BenchmarkLayoutError, match=r"label 1 \('blotchy'\) occurs in test but has no train images"):
        load_benchmark("DTD", tmp_path)
    # Label 1 nowhere: three entries (labels may run up to 2), none with label 1. (With two entries, label 2 is refused
    # by itself: see tests/test_data_files_hostile.py.)
    split["test"] = [["banded/d.jpg", 0, "banded"]]
    write_split(tmp_path / "dtd", "split_zhou_DescribableTextures.json", tmp_path / "dtd" / "images", split)
    with pytest.raises(BenchmarkLayoutError, match=r"labels without train images: \[1\]"):
        load_benchmark("DTD", tmp_path)


def test_one_label_with_two_names_is_an_error(tmp_path):
    split = {"train": [["a/1.jpg", 0, "banded"]], "val": [["a/2.jpg", 0, "striped"]], "test": []}
    write_split(tmp_path / "dtd", "split_zhou_DescribableTextures.json", tmp_path / "dtd" / "images", split)
    with pytest.raises(BenchmarkLayoutError, match=r"label 0 is named both 'banded' and 'striped'"):
        load_benchmark("DTD", tmp_path)


def test_malformed_split_file_is_named(tmp_path):
    split = {"train": [["a/1.jpg", 0]], "val": [], "test": []}
    (tmp_path / "dtd" / "images").mkdir(parents=True)
    (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps(split))
    with pytest.raises(BenchmarkLayoutError, match=r"should be \[relative_path, label, class_name\]"):
        load_benchmark("DTD", tmp_path)
    (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").write_text(json.dumps({"train": []}))
    with pytest.raises(BenchmarkLayoutError, match=r"keys train, val and test"):
        load_benchmark("DTD", tmp_path)


# ---------------------------------------------------------------------------------------------------------- ImageNet

WNIDS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]
NAMES = ["tench", "goldfish", "great white shark", "tiger shark", "hammerhead shark"]


def write_classnames(path: Path, order=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    order = order if order is not None else range(len(WNIDS))
    path.write_text("".join(f"{WNIDS[i]} {NAMES[i]}\n" for i in order))


def test_imagenet_labels_follow_sorted_wnid_folders_and_val_is_test(tmp_path):
    root = tmp_path / "imagenet"
    write_classnames(root / "classnames.txt", order=[4, 2, 0, 1, 3])  # file order must not decide labels
    for split, per_class in (("train", 3), ("val", 2)):
        for wnid in WNIDS:
            for i in range(per_class):
                touch(root / "images" / split / wnid / f"{wnid}_{i}.JPEG")
    data = load_benchmark("ImageNet", tmp_path)
    assert data["class_names"] == NAMES
    assert (len(data["train"]), len(data["test"])) == (15, 10)
    assert data["val"] == data["test"]
    assert all(Path(item.path).parent.parent.name == "val" for item in data["test"])
    assert [item.label for item in data["test"]] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_imagenet_folder_missing_from_classnames_is_named(tmp_path):
    root = tmp_path / "imagenet"
    write_classnames(root / "classnames.txt", order=[0])
    touch(root / "images" / "train" / WNIDS[1] / "x.JPEG")
    (root / "images" / "val").mkdir(parents=True)
    with pytest.raises(BenchmarkLayoutError, match=r"\['n01443537'\] .* are not in classnames.txt"):
        load_benchmark("ImageNet", tmp_path)


def test_imagenet_missing_classnames_txt(tmp_path):
    (tmp_path / "imagenet" / "images" / "train").mkdir(parents=True)
    with pytest.raises(BenchmarkLayoutError, match=r"ImageNet: classnames.txt missing at .*imagenet"):
        load_benchmark("ImageNet", tmp_path)


@pytest.mark.parametrize(
    "name,folder,subdir",
    [("ImageNetA", "imagenet-adversarial", "imagenet-a"), ("ImageNetR", "imagenet-rendition", "imagenet-r")],
)
def test_imagenet_a_r_enumerate_their_own_wnids_and_skip_readme(tmp_path, name, folder, subdir):
    root = tmp_path / folder
    write_classnames(root / "classnames.txt")
    touch(root / subdir / "README.txt")
    for wnid in (WNIDS[4], WNIDS[1], WNIDS[3]):  # 3 of the 5 classes, like the 200 of 1,000
        touch(root / subdir / wnid / "0.jpg")
        touch(root / subdir / wnid / "1.jpg")
    data = load_benchmark(name, tmp_path)
    assert data["class_names"] == ["goldfish", "tiger shark", "hammerhead shark"]
    assert [item.label for item in data["test"]] == [0, 0, 1, 1, 2, 2]
    assert data["train"] == [] and data["val"] == []


def test_imagenet_a_stray_file_and_unknown_wnid_are_errors(tmp_path):
    root = tmp_path / "imagenet-adversarial"
    write_classnames(root / "classnames.txt")
    touch(root / "imagenet-a" / WNIDS[0] / "0.jpg")
    touch(root / "imagenet-a" / "notes.txt")
    with pytest.raises(BenchmarkLayoutError, match=r"only class folders, found file\(s\) \['notes.txt'\]"):
        load_benchmark("ImageNet-A", tmp_path)
    (root / "imagenet-a" / "notes.txt").unlink()
    touch(root / "imagenet-a" / "n99999999" / "0.jpg")
    with pytest.raises(BenchmarkLayoutError, match=r"\['n99999999'\] .* are not in classnames.txt"):
        load_benchmark("ImageNet-A", tmp_path)


def test_imagenet_sketch_uses_all_classes(tmp_path):
    root = tmp_path / "imagenet-sketch"
    write_classnames(root / "classnames.txt")
    for wnid in reversed(WNIDS):
        touch(root / "images" / wnid / "sketch_0.JPEG")
    data = load_benchmark("ImageNetSketch", tmp_path)
    assert data["class_names"] == NAMES
    assert [item.label for item in data["test"]] == [0, 1, 2, 3, 4]


def test_imagenet_v2_labels_are_folder_numbers_not_text_order(tmp_path):
    root = tmp_path / "imagenetv2"
    wnids = [f"n{i:08d}" for i in range(12)]
    (root).mkdir()
    (root / "classnames.txt").write_text("".join(f"{w} class {i}\n" for i, w in enumerate(wnids)))
    for i in range(12):
        touch(root / "imagenetv2-matched-frequency-format-val" / str(i) / "a.jpeg")
    data = load_benchmark("ImageNetV2", tmp_path)
    assert data["class_names"] == [f"class {i}" for i in range(12)]
    by_folder = {Path(item.path).parent.name: (item.label, item.class_name) for item in data["test"]}
    assert by_folder["10"] == (10, "class 10") and by_folder["2"] == (2, "class 2")
    assert [item.label for item in data["test"]] == list(range(12))

    (root / "imagenetv2-matched-frequency-format-val" / "11" / "a.jpeg").unlink()
    (root / "imagenetv2-matched-frequency-format-val" / "11").rmdir()
    with pytest.raises(BenchmarkLayoutError, match=r"exactly the folders 0..11 .* missing \['11'\]"):
        load_benchmark("ImageNetV2", tmp_path)


# ------------------------------------------------------------------------------------------------------ FGVCAircraft


def test_fgvc_aircraft_classes_are_variants_in_file_order(tmp_path):
    root = tmp_path / "fgvc_aircraft"
    root.mkdir()
    variants = ["707-320", "F-16A/B", "Falcon 2000"]
    (root / "variants.txt").write_text("\r\n".join(variants) + "\r\n")  # line endings must not leak into names
    lines = {"train": [("1000001", 2), ("1000002", 0), ("1000003", 1)], "val": [("1000004", 1)], "test": []}
    for split, rows in lines.items():
        (root / f"images_variant_{split}.txt").write_text("".join(f"{i} {variants[v]}\n" for i, v in rows))
        for image_id, _ in rows:
            touch(root / "images" / f"{image_id}.jpg")
    data = load_benchmark("fgvc_aircraft", tmp_path)
    assert data["class_names"] == variants
    assert data["train"][0] == BenchmarkItem(str(root / "images" / "1000001.jpg"), 2, "Falcon 2000")
    assert [item.label for item in data["train"]] == [2, 0, 1]
    assert data["val"] == [BenchmarkItem(str(root / "images" / "1000004.jpg"), 1, "F-16A/B")]
    assert data["test"] == []

    (root / "images_variant_test.txt").write_text("1000005 Boeing 747\n")
    with pytest.raises(BenchmarkLayoutError, match=r"variant 'Boeing 747' .* is not in variants.txt"):
        load_benchmark("FGVCAircraft", tmp_path)
    (root / "images_variant_test.txt").unlink()
    with pytest.raises(BenchmarkLayoutError, match=r"images_variant_test.txt missing at"):
        load_benchmark("FGVCAircraft", tmp_path)


# ------------------------------------------------------------------------------------------------ split generation

CALTECH_COUNTS = {  # folder: images; the expected train/val/test sizes follow round(n*0.5), round(n*0.2), rest
    "BACKGROUND_Google": 5,
    "Faces": 5,  # 2.5 -> 2 (halves to even), 1.0 -> 1, 2
    "Faces_easy": 5,
    "Leopards": 7,  # 3.5 -> 4, 1.4 -> 1, 2
    "Motorbikes": 10,  # 5, 2, 3
    "accordion": 4,  # 2, 0.8 -> 1, 1
    "airplanes": 6,  # 3, 1.2 -> 1, 2
}
CALTECH_SIZES = {"face": (2, 1, 2), "leopard": (4, 1, 2), "motorbike": (5, 2, 3), "accordion": (2, 1, 1)}
CALTECH_SIZES["airplane"] = (3, 1, 2)


def make_caltech(root: Path) -> Path:
    image_dir = root / "caltech-101" / "101_ObjectCategories"
    for folder, count in CALTECH_COUNTS.items():
        for i in range(count):
            touch(image_dir / folder / f"image_{i + 1:04d}.jpg")
    return image_dir


def test_caltech101_generated_split_follows_the_official_rules(tmp_path):
    image_dir = make_caltech(tmp_path)
    path = generate_split_file("Caltech101", tmp_path, seed=1)
    assert path == tmp_path / "caltech-101" / "split_zhou_Caltech101.json"
    data = load_benchmark("Caltech101", tmp_path)

    # ignored folders dropped, sorted case-sensitively (capitals first), renamed after sorting
    assert data["class_names"] == ["face", "leopard", "motorbike", "accordion", "airplane"]
    for label, name in enumerate(data["class_names"]):
        sizes = tuple(sum(item.label == label for item in data[s]) for s in ("train", "val", "test"))
        assert sizes == CALTECH_SIZES[name], name
    # a partition of each kept folder; nothing from the ignored ones
    used = sorted(item.path for s in ("train", "val", "test") for item in data[s])
    kept = [f for f in CALTECH_COUNTS if f not in ("BACKGROUND_Google", "Faces_easy")]
    assert used == sorted(str(image_dir / f / n) for f in kept for n in os.listdir(image_dir / f))

    # one stream seeded once, one shuffle per class in label order, train filled first
    rng = random.Random(1)
    for label, folder in enumerate(kept):
        images = [str(image_dir / folder / n) for n in os.listdir(image_dir / folder)]
        rng.shuffle(images)
        got = [item.path for s in ("train", "val", "test") for item in data[s] if item.label == label]
        assert got == images

    written = json.loads(path.read_text())
    assert written["train"][0] == [os.path.relpath(data["train"][0].path, image_dir), 0, "face"]
    with pytest.raises(FileExistsError, match=r"split_zhou_Caltech101.json exists; refusing to overwrite"):
        generate_split_file("Caltech101", tmp_path, seed=2)


def test_generated_split_depends_on_the_seed_only(tmp_path):
    make_caltech(tmp_path)
    first = generate_split_file("Caltech101", tmp_path, seed=1).read_text()
    os.remove(tmp_path / "caltech-101" / "split_zhou_Caltech101.json")
    assert generate_split_file("Caltech101", tmp_path, seed=1).read_text() == first
    os.remove(tmp_path / "caltech-101" / "split_zhou_Caltech101.json")
    assert generate_split_file("Caltech101", tmp_path, seed=2).read_text() != first


def test_folder_split_refuses_a_class_too_small_for_three_parts(tmp_path):
    for i in range(3):  # round(1.5) = 2 train, round(0.6) = 1 val, 0 test
        touch(tmp_path / "dtd" / "images" / "banded" / f"banded_{i}.jpg")
    with pytest.raises(BenchmarkLayoutError, match=r"banded has 3 image\(s\)"):
        generate_split_file("DTD", tmp_path, seed=1)
    assert not (tmp_path / "dtd" / "split_zhou_DescribableTextures.json").exists()


def test_eurosat_generated_split_uses_the_official_long_names(tmp_path):
    for folder in ("SeaLake", "AnnualCrop", "HerbaceousVegetation"):
        for i in range(4):
            touch(tmp_path / "eurosat" / "2750" / folder / f"{folder}_{i + 1}.jpg")
    generate_split_file("EuroSAT", tmp_path, seed=1)
    data = load_benchmark("EuroSAT", tmp_path)
    assert data["class_names"] == ["Annual Crop Land", "Herbaceous Vegetation Land", "Sea or Lake"]
    assert (len(data["train"]), len(data["val"]), len(data["test"])) == (6, 3, 3)


def test_oxford_pets_generated_split_reads_the_annotation_lists(tmp_path):
    root = tmp_path / "oxford_pets"
    # CLASS-ID 2 listed first: labels come from CLASS-ID - 1, val takes round(0.2 n) per class, first-seen order
    trainval = [f"american_bulldog_{i} 2 2 1" for i in range(8)] + [f"Abyssinian_{i} 1 1 1" for i in range(5)]
    test = ["Abyssinian_100 1 1 1", "american_bulldog_100 2 2 1"]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "trainval.txt").write_text("\n".join(trainval) + "\n")
    (root / "annotations" / "test.txt").write_text("\n".join(test) + "\n")
    for line in trainval + test:
        touch(root / "images" / (line.split(" ")[0] + ".jpg"))
    generate_split_file("OxfordPets", tmp_path, seed=3)
    data = load_benchmark("OxfordPets", tmp_path)
    assert data["class_names"] == ["abyssinian", "american_bulldog"]
    assert [item.label for item in data["val"]] == [1, 1, 0]  # round(1.6) = 2, round(1.0) = 1
    assert [item.label for item in data["train"]] == [1] * 6 + [0] * 4
    assert data["test"][0] == BenchmarkItem(str(root / "images" / "Abyssinian_100.jpg"), 0, "abyssinian")

    # one stream, one shuffle of each class's list positions in first-seen order, val filled first
    rng, names = random.Random(3), [line.split(" ")[0] for line in trainval]
    val, train = [], []
    for positions in (list(range(8)), list(range(8, 13))):
        rng.shuffle(positions)
        n_val = round(len(positions) * 0.2)
        val += [names[i] for i in positions[:n_val]]
        train += [names[i] for i in positions[n_val:]]
    assert [Path(item.path).stem for item in data["val"]] == val
    assert [Path(item.path).stem for item in data["train"]] == train


def test_sun397_generated_split_reverses_the_path_parts(tmp_path):
    root = tmp_path / "sun397"
    root.mkdir()
    (root / "ClassName.txt").write_text("/a/abbey\n/a/apartment_building/outdoor\n")
    train = [f"/a/apartment_building/outdoor/sun_b{i}.jpg" for i in range(5)] + [
        f"/a/abbey/sun_a{i}.jpg" for i in range(5)
    ]
    test = ["/a/abbey/sun_t.jpg"]
    (root / "Training_01.txt").write_text("\n".join(train) + "\n")
    (root / "Testing_01.txt").write_text("\n".join(test) + "\n")
    for line in train + test:
        touch(root / "SUN397" / line[1:])
    generate_split_file("SUN397", tmp_path, seed=1)
    data = load_benchmark("SUN397", tmp_path)
    assert data["class_names"] == ["abbey", "outdoor apartment_building"]
    assert (len(data["train"]), len(data["val"]), len(data["test"])) == (8, 2, 1)
    assert data["test"] == [BenchmarkItem(str(root / "SUN397" / "a" / "abbey" / "sun_t.jpg"), 0, "abbey")]


def test_ucf101_generated_split_splits_camel_case_and_reads_crlf_lists(tmp_path):
    root = tmp_path / "ucf101"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n")
    train = [f"HandstandPushups/v_HandstandPushups_g08_c0{i}.avi 2" for i in range(5)]
    train += [f"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c0{i}.avi 1" for i in range(5)]
    (lists / "trainlist01.txt").write_bytes(("\r\n".join(train) + "\r\n").encode())
    (lists / "testlist01.txt").write_bytes(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\n")
    frames = root / "UCF-101-midframes"
    for i in range(5):
        touch(frames / "Handstand_Pushups" / f"v_HandstandPushups_g08_c0{i}.jpg")
        touch(frames / "Apply_Eye_Makeup" / f"v_ApplyEyeMakeup_g08_c0{i}.jpg")
    touch(frames / "Apply_Eye_Makeup" / "v_ApplyEyeMakeup_g01_c01.jpg")
    generate_split_file("UCF101", tmp_path, seed=1)
    data = load_benchmark("UCF101", tmp_path)
    assert data["class_names"] == ["Apply_Eye_Makeup", "Handstand_Pushups"]
    assert data["test"] == [
        BenchmarkItem(str(frames / "Apply_Eye_Makeup" / "v_ApplyEyeMakeup_g01_c01.jpg"), 0, "Apply_Eye_Makeup")
    ]
    assert [item.label for item in data["val"]] == [1, 0]
    assert zero_shot_prompts("UCF101", data["class_names"])[1] == "a photo of a person doing Handstand Pushups."


def test_generation_refused_where_unsupported_and_hint_only_where_supported(tmp_path):
    with pytest.raises(ValueError, match=r"StanfordCars is not supported: .*split_zhou_StanfordCars.json"):
        generate_split_file("StanfordCars", tmp_path, seed=1)
    with pytest.raises(ValueError, match=r"ImageNet is not supported: it has no split file"):
        generate_split_file("ImageNet", tmp_path, seed=1)
    (tmp_path / "stanford_cars").mkdir()
    with pytest.raises(BenchmarkLayoutError, match=r"not supported here"):
        load_benchmark("StanfordCars", tmp_path)
    (tmp_path / "caltech-101").mkdir()
    with pytest.raises(BenchmarkLayoutError, match=r"cocoop-hf generate-split --benchmark Caltech101 --data_root "):
        load_benchmark("Caltech101", tmp_path)
    with pytest.raises(BenchmarkLayoutError, match=r"dataset folder food-101/ missing"):
        generate_split_file("Food101", tmp_path, seed=1)


# ------------------------------------------------------------------------------------------------------- catalogue

# trainers/zsclip.py CUSTOM_TEMPLATES of the official repository (data, copied).
OFFICIAL_TEMPLATES = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": "a photo of a {}.",
    "Food101": "a photo of {}, a type of food.",
    "SUN397": "a photo of a {}.",
    "Caltech101": "a photo of a {}.",
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": "a photo of a {}.",
    "ImageNetSketch": "a photo of a {}.",
    "ImageNetV2": "a photo of a {}.",
    "ImageNetA": "a photo of a {}.",
    "ImageNetR": "a photo of a {}.",
}


def test_catalogue_has_the_15_datasets_with_official_templates():
    assert {name: bench.template for name, bench in BENCHMARKS.items()} == OFFICIAL_TEMPLATES
    assert {name for name, bench in BENCHMARKS.items() if bench.test_only} == {
        "ImageNetV2",
        "ImageNetSketch",
        "ImageNetA",
        "ImageNetR",
    }


def test_zero_shot_prompts_read_underscores_as_spaces():
    assert zero_shot_prompts("UCF101", ["Apply_Eye_Makeup"]) == ["a photo of a person doing Apply Eye Makeup."]
    assert zero_shot_prompts("DTD", ["banded"]) == ["banded texture."]
    assert zero_shot_prompts("EuroSAT", ["Sea or Lake"]) == ["a centered satellite photo of Sea or Lake."]


def test_names_aliases_and_folders_resolve():
    assert get_benchmark("Flowers102").name == "OxfordFlowers"
    assert get_benchmark("dtd").name == "DescribableTextures"
    assert get_benchmark("caltech-101").name == "Caltech101"
    assert get_benchmark("imagenet-r").name == "ImageNetR"
    with pytest.raises(ValueError, match=r"Unknown benchmark 'CIFAR10'; choose one of"):
        get_benchmark("CIFAR10")
