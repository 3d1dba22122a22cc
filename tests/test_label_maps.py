"""`--benchmark NAME` on a column source (imagefolder copy, parquet file): the archive's raw label names become the
official class names and label order, the same as the official-layout reader gives for the same images."""

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from cocoop_hf_training.benchmarks import LabelMapError, load_benchmark, official_label_map
from cocoop_hf_training.data import DataArguments, load_splits

from .test_benchmarks import NAMES, WNIDS, make_split_dataset, write_classnames


def _png(index: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (index * 37 % 256, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write_images(items) -> None:
    """Real tiny images at the official-layout paths (the official reader only needs the files to exist)."""
    for index, item in enumerate(items):
        Path(item.path).parent.mkdir(parents=True, exist_ok=True)
        Path(item.path).write_bytes(_png(index))


def _unique_name(item) -> str:
    return "__".join(Path(item.path).parts[-3:])


def imagefolder_copy(items, raw_of: dict, folder: Path) -> Path:
    """`folder/test/<raw label name>/<image>`: an imagefolder copy of the official test images."""
    for item in items:
        target = folder / "test" / raw_of[item.class_name] / _unique_name(item)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(item.path).read_bytes())
    return folder


def parquet_copy(items, raw_of: dict, path: Path, label_order: list[str], extra=()) -> Path:
    """A parquet file of the same images whose ClassLabel lists the raw names in `label_order` (not the official
    order); `extra` adds (raw name, image bytes) rows of classes the official reader ignores."""
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    rows = [
        {
            "image": {"bytes": Path(item.path).read_bytes(), "path": _unique_name(item)},
            "label": raw_of[item.class_name],
        }
        for item in items
    ]
    rows += [{"image": {"bytes": data, "path": f"extra_{i}.png"}, "label": raw} for i, (raw, data) in enumerate(extra)]
    names = list(label_order) + [raw for raw, _ in extra if raw not in label_order]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=names)})
    Dataset.from_dict(
        {"image": [r["image"] for r in rows], "label": [names.index(r["label"]) for r in rows]}, features=features
    ).to_parquet(str(path))
    return path


def load_copy(tmp_path, benchmark, classnames=None, **source):
    args = DataArguments(
        benchmark=benchmark,
        protocol="all",
        num_shots=None,
        eval_split="test",
        imagenet_classnames=classnames,
        **source,
    )
    data, names = load_splits(args, ["test"], cache_dir=str(tmp_path / "cache"))
    from datasets import Image as ImageFeature

    raw = data["test"].cast_column("image", ImageFeature(decode=False))
    return names, sorted(
        (Path(image["path"]).name, label) for image, label in zip(raw["image"], raw["label"], strict=True)
    )


def official(items, class_names):
    return sorted((_unique_name(item), item.label) for item in items), class_names


# dataset -> {official name in the miniature split file: raw name in the archive}
SPLIT_RAW_NAMES = {
    "Caltech101": {"face": "Faces", "accordion": "accordion"},
    "EuroSAT": {"Annual Crop Land": "AnnualCrop", "Sea or Lake": "SeaLake"},
    "OxfordPets": {"abyssinian": "Abyssinian", "american_bulldog": "american_bulldog"},
    "UCF101": {"Apply_Eye_Makeup": "ApplyEyeMakeup", "Handstand_Pushups": "HandstandPushups"},
    "DescribableTextures": {"banded": "banded", "blotchy": "blotchy"},
    "Food101": {"apple_pie": "apple_pie", "baby_back_ribs": "baby_back_ribs"},
    "StanfordCars": {
        "2012 AM General Hummer SUV": "AM General Hummer SUV 2012",
        "2012 Acura RL Sedan": "Acura RL Sedan 2012",
    },
    "SUN397": {"abbey": "/a/abbey", "outdoor apartment_building": "/a/apartment_building/outdoor"},
    "OxfordFlowers": {"pink primrose": "pink primrose", "hard-leaved pocket orchid": "hard-leaved pocket orchid"},
}
# Datasets whose raw names cannot be imagefolder folders (SUN397 class paths) or whose official order is not the
# sorted one of the names (OxfordFlowers: the source carries the official order); checked through parquet only.
PARQUET_ONLY = ("SUN397", "OxfordFlowers")


def _official_split_dataset(tmp_path, name):
    root = tmp_path / "layout"
    make_split_dataset(root, name, make_images=False)
    loaded = load_benchmark(name, root, check_files=False)
    _write_images(loaded["test"])
    return loaded


@pytest.mark.parametrize("name", sorted(SPLIT_RAW_NAMES))
def test_copies_of_split_file_datasets_get_the_official_names_and_order(tmp_path, name):
    loaded = _official_split_dataset(tmp_path, name)
    expected_items, expected_names = official(loaded["test"], loaded["class_names"])
    raw_of = SPLIT_RAW_NAMES[name]
    if name not in PARQUET_ONLY:
        copy = imagefolder_copy(loaded["test"], raw_of, tmp_path / "imagefolder")
        names, items = load_copy(tmp_path, name, dataset_name=str(copy))
        assert names == expected_names
        assert items == expected_items
    # the parquet ClassLabel lists the raw names reversed: the official order must not come from the source's
    # order, except for the datasets whose official order only the source can carry
    raw_order = [raw_of[n] for n in loaded["class_names"]]
    if name not in ("StanfordCars", "OxfordFlowers"):
        raw_order = raw_order[::-1]
    path = parquet_copy(loaded["test"], raw_of, tmp_path / "copy.parquet", raw_order)
    names, items = load_copy(tmp_path, name, eval_file=str(path))
    assert (names, items) == (expected_names, expected_items)


def test_caltech101_copy_drops_the_ignored_classes_and_renames(tmp_path):
    loaded = _official_split_dataset(tmp_path, "Caltech101")
    raw_of = SPLIT_RAW_NAMES["Caltech101"]
    extra = [("BACKGROUND_Google", _png(1)), ("Faces_easy", _png(2))]
    path = parquet_copy(loaded["test"], raw_of, tmp_path / "c.parquet", ["accordion", "Faces"], extra=extra)
    names, items = load_copy(tmp_path, "Caltech101", eval_file=str(path))
    assert (names, items) == official(loaded["test"], loaded["class_names"])[::-1]
    assert names == ["face", "accordion"]  # "Faces" sorts before "accordion", as the folders do officially


def test_imagenet_copies_map_wnids_and_the_labels_in_wnid_order(tmp_path):
    root = tmp_path / "layout"
    write_classnames(root / "imagenet" / "classnames.txt", order=[4, 2, 0, 1, 3])
    for split in ("train", "val"):
        for wnid in WNIDS:
            (root / "imagenet" / "images" / split / wnid).mkdir(parents=True)
            (root / "imagenet" / "images" / split / wnid / f"{wnid}_{split}.JPEG").write_bytes(b"")
    loaded = load_benchmark("ImageNet", root, check_files=False)
    _write_images(loaded["test"])
    raw_of = dict(zip(NAMES, WNIDS, strict=True))
    classnames = str(root / "imagenet" / "classnames.txt")
    expected = official(loaded["test"], loaded["class_names"])

    copy = imagefolder_copy(loaded["test"], raw_of, tmp_path / "imagefolder")
    names, items = load_copy(tmp_path, "ImageNet", classnames, dataset_name=str(copy))
    assert (items, names) == expected

    # a Hub-style copy: other label names, in wnid order (label i is the i-th sorted wnid)
    hub_names = {name: f"hub name {i}" for i, name in enumerate(NAMES)}
    path = parquet_copy(loaded["test"], hub_names, tmp_path / "hub.parquet", [hub_names[n] for n in NAMES])
    names, items = load_copy(tmp_path, "ImageNet", classnames, eval_file=str(path))
    assert (items, names) == expected

    with pytest.raises(LabelMapError, match=r"through ImageNet's classnames.txt.*--imagenet_classnames"):
        load_copy(tmp_path, "ImageNet", dataset_name=str(copy))


@pytest.mark.parametrize("name, folder, subdir", [("ImageNetA", "imagenet-adversarial", "imagenet-a"),
                                                  ("ImageNetR", "imagenet-rendition", "imagenet-r"),
                                                  ("ImageNetSketch", "imagenet-sketch", "images")])  # fmt: skip
def test_imagenet_variant_copies_map_their_wnids(tmp_path, name, folder, subdir):
    root = tmp_path / "layout"
    write_classnames(root / folder / "classnames.txt")
    for wnid in (WNIDS[3], WNIDS[1]):
        (root / folder / subdir / wnid).mkdir(parents=True)
        (root / folder / subdir / wnid / f"{wnid}.jpg").write_bytes(b"")
    loaded = load_benchmark(name, root, check_files=False)
    _write_images(loaded["test"])
    copy = imagefolder_copy(loaded["test"], dict(zip(NAMES, WNIDS, strict=True)), tmp_path / "imagefolder")
    names, items = load_copy(tmp_path, name, str(root / folder / "classnames.txt"), dataset_name=str(copy))
    assert (items, names) == official(loaded["test"], loaded["class_names"])
    assert names == [NAMES[1], NAMES[3]]
    raw_of = dict(zip(NAMES, WNIDS, strict=True))
    path = parquet_copy(loaded["test"], raw_of, tmp_path / "copy.parquet", [WNIDS[3], WNIDS[1]])
    names, items = load_copy(tmp_path, name, str(root / folder / "classnames.txt"), eval_file=str(path))
    assert (items, names) == official(loaded["test"], loaded["class_names"])


def test_imagenet_v2_copy_orders_class_numbers_numerically(tmp_path):
    root = tmp_path / "layout" / "imagenetv2"
    root.mkdir(parents=True)
    (root / "classnames.txt").write_text("".join(f"n{i:08d} class {i}\n" for i in range(12)))
    for label in range(12):
        (root / "imagenetv2-matched-frequency-format-val" / str(label)).mkdir(parents=True)
        (root / "imagenetv2-matched-frequency-format-val" / str(label) / f"{label}.jpeg").write_bytes(b"")
    loaded = load_benchmark("ImageNetV2", root.parent, check_files=False)
    _write_images(loaded["test"])
    by_name = {f"class {i}": str(i) for i in range(12)}
    copy = imagefolder_copy(loaded["test"], by_name, tmp_path / "imagefolder")  # imagefolder sorts "10" before "2"
    names, items = load_copy(tmp_path, "ImageNetV2", str(root / "classnames.txt"), dataset_name=str(copy))
    assert (items, names) == official(loaded["test"], loaded["class_names"])
    assert names[2] == "class 2" and names[10] == "class 10"
    path = parquet_copy(loaded["test"], by_name, tmp_path / "v2.parquet", [str(i) for i in reversed(range(12))])
    assert load_copy(tmp_path, "ImageNetV2", str(root / "classnames.txt"), eval_file=str(path))[::-1] == (
        official(loaded["test"], loaded["class_names"])
    )


def test_fgvc_aircraft_copy_keeps_the_source_order(tmp_path):
    root = tmp_path / "layout" / "fgvc_aircraft"
    root.mkdir(parents=True)
    (root / "images").mkdir()
    (root / "variants.txt").write_text("707-320\nA300B4\n737-200\n")
    for split in ("train", "val", "test"):
        lines = [f"{split}{i} {variant}" for i, variant in enumerate(["A300B4", "707-320", "737-200"])]
        (root / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    loaded = load_benchmark("FGVCAircraft", root.parent, check_files=False)
    _write_images(loaded["test"])
    raw_of = {n: n for n in loaded["class_names"]}
    path = parquet_copy(loaded["test"], raw_of, tmp_path / "a.parquet", loaded["class_names"])
    names, items = load_copy(tmp_path, "FGVCAircraft", eval_file=str(path))
    assert (items, names) == official(loaded["test"], loaded["class_names"])


@pytest.mark.parametrize(
    "name, raw, message",
    [
        ("EuroSAT", ["AnnualCrop", "Beach"], r"'Beach' is no EuroSAT class; expected the 2750/ folder names"),
        ("UCF101", ["apply eye makeup"], r"'apply eye makeup' is no UCF101 action; expected CamelCase"),
        ("ImageNet", ["tench"], r"'tench' is not a wnid; expected ImageNet wnids such as 'n01440764'"),
        ("ImageNetV2", ["n01440764"], r"not a class number; expected the folder names '0'..'999'"),
        ("SUN397", ["apartment building outdoor"], r"no SUN397 class path; expected the paths of ClassName.txt"),
        ("StanfordCars", ["Hummer"], r"no devkit class name; expected '<make> <model> <year>'"),
        ("OxfordFlowers", ["1", "2"], r"'1' is a class number, not a name"),
        ("Caltech101", ["airplanes", "airplane"], r"several source labels give the official class name\(s\) \['airplane'\]"),
    ],
)  # fmt: skip
def test_raw_names_that_fit_no_official_class_are_refused(name, raw, message):
    with pytest.raises(LabelMapError, match=message):
        official_label_map(name, raw)


def test_label_map_rules_on_raw_names():
    ucf = official_label_map("UCF101", ["HammerThrow", "Hammering", "Haircut"])
    # classInd.txt order (alphabetical ignoring case): Haircut, Hammering, HammerThrow
    assert ucf.class_names == ["Haircut", "Hammering", "Hammer_Throw"]
    assert ucf.labels == {0: 2, 1: 1, 2: 0}
    sun = official_label_map("SUN397", ["b/bakery/shop", "/a/abbey", "a/apartment_building/outdoor"])
    assert sun.class_names == ["abbey", "outdoor apartment_building", "shop bakery"]
    pets = official_label_map("OxfordPets", ["Bengal", "american_bulldog", "Abyssinian"])
    assert pets.class_names == ["abyssinian", "american_bulldog", "bengal"]
    eurosat = official_label_map("EuroSAT", ["SeaLake", "Forest", "Annual Crop Land"])
    assert eurosat.class_names == ["Annual Crop Land", "Forest", "Sea or Lake"]
    caltech = official_label_map("Caltech101", ["airplanes", "BACKGROUND_Google", "Motorbikes", "Faces_easy"])
    assert (caltech.class_names, caltech.labels) == (["motorbike", "airplane"], {0: 1, 2: 0})
    assert caltech.dropped == ["BACKGROUND_Google", "Faces_easy"]


def test_column_benchmark_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"--benchmark EuroSAT needs --data_root.*or a source of its images"):
        DataArguments(benchmark="EuroSAT")
    with pytest.raises(ValueError, match=r"--imagenet_classnames names the wnid labels .* not of EuroSAT"):
        DataArguments(benchmark="EuroSAT", dataset_name="x", imagenet_classnames="c.txt")
    with pytest.raises(ValueError, match=r"--imagenet_classnames c.txt is only read with --benchmark"):
        DataArguments(dataset_name="x", imagenet_classnames="c.txt")
    with pytest.raises(ValueError, match=r"with --data_root the dataset folder's own classnames.txt is read"):
        DataArguments(benchmark="ImageNet", data_root="d", imagenet_classnames="c.txt")
    with pytest.raises(ValueError, match=r"ImageNetA is a test-only target.*--protocol all"):
        DataArguments(benchmark="imagenet-a", dataset_name="x")
    args = DataArguments(benchmark="eurosat", dataset_name="x")
    assert args.benchmark == "EuroSAT" and args.display_name == "EuroSAT"
    json.dumps(args.__dict__)  # recorded with the run


def test_a_source_with_another_class_count_is_warned(caplog):
    import logging

    from cocoop_hf_training.benchmarks import BENCHMARKS, EUROSAT_RENAMES, OFFICIAL_CLASS_COUNTS

    assert set(OFFICIAL_CLASS_COUNTS) == set(BENCHMARKS)
    with caplog.at_level(logging.WARNING, logger="cocoop_hf_training.label_maps"):
        official_label_map("EuroSAT", list(EUROSAT_RENAMES))
    assert "classes, the official dataset" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="cocoop_hf_training.label_maps"):
        official_label_map("EuroSAT", ["Forest", "River"])
    assert "EuroSAT: the source has 2 classes, the official dataset 10" in caplog.text


def test_run_cocoop_on_an_imagefolder_copy_named_as_a_benchmark(tmp_path):
    """The whole script: official names, the official base/new halves and the dataset's official template."""
    from cocoop_hf_training.run_cocoop import main

    from .conftest import tiny_run_argv

    loaded = _official_split_dataset(tmp_path, "EuroSAT")
    copy = imagefolder_copy(loaded["test"], SPLIT_RAW_NAMES["EuroSAT"], tmp_path / "imagefolder")
    data_args = ["--benchmark", "eurosat", "--dataset_name", str(copy), "--eval_split", "test"]
    content = main(
        tiny_run_argv(tmp_path / "out", data_args, "--method", "zeroshot", "--cache_dir", str(tmp_path / "c"),
                      eval_batch_size=4, train=False)
    )  # fmt: skip
    assert content["classes"] == {"base": ["Annual Crop Land"], "new": ["Sea or Lake"]}
    run = content["runs"][0]
    assert run["dataset"] == "EuroSAT" and run["prompt_template"] == "a centered satellite photo of {}."


def eurosat_imagefolder(folder: Path, missing=()) -> Path:
    """An imagefolder copy of EuroSAT: `train/` and `test/`, each with two tiny images in every one of its 10 archive
    folders, except the `missing` ones ("train/SeaLake": one split's folder, "SeaLake": the class in both)."""
    from cocoop_hf_training.benchmarks import EUROSAT_RENAMES

    for split in ("train", "test"):
        for index, raw in enumerate(EUROSAT_RENAMES):
            if raw in missing or f"{split}/{raw}" in missing:
                continue
            for shot in range(2):
                path = folder / split / raw / f"{shot}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_png(2 * index + shot))
    return folder


@pytest.mark.parametrize("benchmark", [True, False])
def test_a_class_missing_from_the_train_split_stays_a_new_class(tmp_path, caplog, benchmark):
    """Base-to-new needs no training images of the new classes: the halves come from the whole class list, so a class
    the train split lacks keeps its place in the new half and its test images in the new evaluation."""
    import logging

    from cocoop_hf_training.run_cocoop import main

    from .conftest import tiny_run_argv

    copy = eurosat_imagefolder(tmp_path / "eurosat", missing=("train/SeaLake",))
    data_args = ["--dataset_name", str(copy), *(["--benchmark", "eurosat"] if benchmark else [])]
    with caplog.at_level(logging.WARNING, logger="cocoop_hf_training.data"):
        content = main(
            tiny_run_argv(tmp_path / "out", data_args, "--cache_dir", str(tmp_path / "c"), eval_batch_size=4)
        )
    sea = "Sea or Lake" if benchmark else "SeaLake"
    assert content["classes"]["new"][-1] == sea and len(content["classes"]["new"]) == 5
    metrics = content["runs"][0]["metrics"]
    assert metrics["new"]["num_classes"] == 5 and metrics["new"]["num_samples"] == 10  # its 2 test images included
    assert metrics["base"]["num_classes"] == 5 and metrics["base"]["num_samples"] == 10
    expected = {"num_classes": 10, "without_images": {"train": [sea]}}
    if benchmark:
        expected["official_num_classes"] = 10
    assert content["class_set"] == expected
    assert json.loads((tmp_path / "out" / "results.json").read_text())["class_set"] == expected
    assert f"1 of the 10 classes have no images in split 'train': ['{sea}']" in caplog.text


def test_a_base_class_missing_from_the_train_split_is_refused_before_any_file(tmp_path):
    from cocoop_hf_training.run_cocoop import main

    from .conftest import tiny_run_argv

    copy = eurosat_imagefolder(tmp_path / "eurosat", missing=("train/AnnualCrop",))
    data_args = ["--benchmark", "eurosat", "--dataset_name", str(copy)]
    with pytest.raises(ValueError, match=r"1 of the 5 base classes have no images .*\['Annual Crop Land'\].*Dassl"):
        main(tiny_run_argv(tmp_path / "out", data_args, "--cache_dir", str(tmp_path / "c")))
    assert not (tmp_path / "out").exists()


def test_a_partial_archive_records_its_class_count(tmp_path, caplog):
    """9 of EuroSAT's 10 folders: the results still say EuroSAT, and results.json says how many classes it had."""
    import logging

    from cocoop_hf_training.run_cocoop import main

    from .conftest import tiny_run_argv

    copy = eurosat_imagefolder(tmp_path / "eurosat", missing=("SeaLake",))
    data_args = ["--benchmark", "eurosat", "--dataset_name", str(copy)]
    with caplog.at_level(logging.WARNING, logger="cocoop_hf_training.label_maps"):
        content = main(
            tiny_run_argv(tmp_path / "out", data_args, "--method", "zeroshot", "--cache_dir", str(tmp_path / "c"),
                          eval_batch_size=4, train=False)
        )  # fmt: skip
    assert content["runs"][0]["dataset"] == "EuroSAT"
    assert content["class_set"] == {"num_classes": 9, "without_images": {}, "official_num_classes": 10}
    assert "EuroSAT: the source has 9 classes, the official dataset 10" in caplog.text
