"""Tiny hostile data files (issue 16): split files, official few-shot files, ImageNet's classnames.txt and class-name
files are checked before anything is sized or labelled by them, and each bad entry is refused in one line naming the
file, the entry and what would be right; nothing is silently truncated, renamed or drawn twice.

A split file is read two ways: from a benchmark's official layout (`--benchmark DTD --data_root`, cocoop_hf_training/benchmarks.py)
and as `--split_file` with `--image_root` (cocoop_hf_training/data.py); both must refuse the same files."""

import json
import os
import time
import tracemalloc
from contextlib import contextmanager
from pathlib import Path

import pytest


try:
    import resource
except ImportError:  # not on Windows: tracemalloc alone measures
    resource = None

from cocoop_hf_training.benchmarks import (
    BenchmarkLayoutError,
    generate_split_file,
    load_benchmark,
    official_label_map,
    read_wnid_names,
)
from cocoop_hf_training.data import DataArguments, load_benchmark_splits, load_splits, official_fewshot_rows

from .test_benchmark_runs import make_eurosat
from .test_benchmarks import NAMES, WNIDS, touch
from .test_official_fewshot import datum, official_choice, write_fewshot


SPLIT_NAME = "split_zhou_DescribableTextures.json"
VALID = {
    "train": [["banded/0.jpg", 0, "banded"], ["blotchy/1.jpg", 1, "blotchy"], ["banded/2.jpg", 0, "banded"]],
    "val": [["blotchy/3.jpg", 1, "blotchy"]],
    "test": [["banded/4.jpg", 0, "banded"], ["blotchy/5.jpg", 1, "blotchy"]],
}


def write_split_bytes(root: Path, content: bytes) -> dict:
    """The same split file in the DTD layout under `root/data` and as a --split_file with its --image_root; every
    path of VALID exists (the official loader checks only that each is a file)."""
    images = root / "data" / "dtd" / "images"
    for entries in VALID.values():
        for rel, _, _ in entries:
            touch(images / rel)
    (root / "data" / "dtd" / SPLIT_NAME).write_bytes(content)
    return {"data_root": root / "data", "split_file": root / "data" / "dtd" / SPLIT_NAME, "image_root": images}


def read_split(where: dict, reader: str):
    """Read the split file as --benchmark (official layout) or as --split_file; returns the class names."""
    if reader == "benchmark":
        return load_benchmark("DTD", where["data_root"])["class_names"]
    args = DataArguments(split_file=str(where["split_file"]), image_root=str(where["image_root"]))
    return load_splits(args, ["train", "test"])[1]


READERS = ["benchmark", "split_file"]


@contextmanager
def bounded(seconds=1.0, megabytes=32):
    """
    The block must finish within `seconds` and allocate at most `megabytes` (tracemalloc peak). The address space is
    also capped at 512 MB above its current size while the block runs, so that code which sizes a structure by a
    hostile label fails here with a MemoryError instead of filling the machine's memory (Linux; elsewhere the cap is
    skipped and tracemalloc alone measures).
    """
    limits = resource.getrlimit(resource.RLIMIT_AS) if resource is not None else None
    try:
        size = int(Path("/proc/self/statm").read_text().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        size = None
    if size is not None and limits is not None:
        cap = size + 512 * 2**20
        resource.setrlimit(
            resource.RLIMIT_AS, (cap if limits[1] == resource.RLIM_INFINITY else min(cap, limits[1]), limits[1])
        )
    tracemalloc.start()
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if limits is not None:
            resource.setrlimit(resource.RLIMIT_AS, limits)
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < megabytes * 2**20, f"allocated {peak / 2**20:.1f} MB"


# ------------------------------------------------------------------------------------------------- split files


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("label", [10**8, 10**12])
def test_a_huge_label_is_refused_before_anything_is_sized_by_it(tmp_path, reader, label):
    # Class "blotchy" labelled `label` throughout (a consistent file, but for the label's size): train[1] comes first.
    split = {
        part: [[rel, label if name == "blotchy" else 0, name] for rel, _, name in entries]
        for part, entries in VALID.items()
    }
    where = write_split_bytes(tmp_path, json.dumps(split).encode())
    with bounded(), pytest.raises(ValueError) as refused:
        read_split(where, reader)
    message = str(refused.value)
    assert str(where["split_file"]) in message and f"train[1] has the label {label}" in message
    entries = 6 if reader == "benchmark" else 5  # the parts read: all three, or --train_split and --eval_split
    assert f"with {entries} entries in" in message and f"no label can exceed {entries - 1}" in message
    assert "\n" not in message


def test_a_huge_class_id_in_an_annotation_list_is_refused_before_anything_is_sized_by_it(tmp_path):
    """OxfordPets' split is generated from annotations/*.txt, whose CLASS-ID (label + 1) is digits of any length."""
    pets = tmp_path / "oxford_pets"
    lines = {"trainval.txt": [], "test.txt": []}
    for breed, class_id in (("Abyssinian", 1), ("beagle", 100000001)):
        for n in range(4):
            touch(pets / "images" / f"{breed}_{n}.jpg")
            lines["trainval.txt" if n < 3 else "test.txt"].append(f"{breed}_{n} {class_id} 1 1")
    for name, content in lines.items():
        (pets / "annotations").mkdir(exist_ok=True)
        (pets / "annotations" / name).write_text("\n".join(content) + "\n")
    with bounded(), pytest.raises(BenchmarkLayoutError, match=r"labels must run 0\.\.100000000 .*\[1, 2, 3"):
        generate_split_file("OxfordPets", tmp_path, seed=1)
    assert not (pets / "split_zhou_OxfordPets.json").exists()


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("label", "shown"),
    [
        pytest.param('"zero"', r"'zero' \(str\)", id="word"),
        pytest.param('"1"', r"'1' \(str\)", id="digits-as-text"),
        pytest.param("1e400", r"inf \(float\)", id="1e400-is-inf"),
        pytest.param("0.9", r"0\.9 \(float\)", id="fraction-not-truncated"),
        pytest.param("1.0", r"1\.0 \(float\)", id="float"),
        pytest.param("true", r"True \(bool\)", id="bool"),
        pytest.param("null", r"None \(NoneType\)", id="null"),
    ],
)
def test_a_label_that_is_no_integer_is_named(tmp_path, reader, label, shown):
    text = json.dumps(VALID).replace('["blotchy/1.jpg", 1,', f'["blotchy/1.jpg", {label},', 1)
    where = write_split_bytes(tmp_path, text.encode())
    with pytest.raises(ValueError, match=rf"{SPLIT_NAME}: train\[1\] has the label {shown}; a label is an integer"):
        read_split(where, reader)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"train": 5}, r": split 'train' is int 5, not a list of \[relative_path, label, class_name\]"),
        pytest.param({"train": {"a": 1}}, r": split 'train' is dict \{'a': 1\}, not a list"),
        pytest.param({"train": [["a.jpg", 0, "x"], "b.jpg"]}, r": train\[1\] is 'b\.jpg'; each entry should be"),
        pytest.param({"train": [[7, 0, "x"]]}, r": train\[0\] has the path 7; it should be a non-empty relative"),
        pytest.param({"train": [["a.jpg", 0, 7]]}, r": train\[0\] has the class name 7; it should be a non-empty"),
        pytest.param({"train": [["a.jpg", -1, "x"]]}, r": train\[0\] has the label -1; labels are class indices"),
    ],
)
def test_a_malformed_part_or_entry_is_named(tmp_path, reader, change, message):
    where = write_split_bytes(tmp_path, json.dumps({**VALID, **change}).encode())
    with pytest.raises(ValueError, match=re_file(where) + message):
        read_split(where, reader)


def re_file(where: dict) -> str:
    import re

    return re.escape(str(where["split_file"]))


@pytest.mark.parametrize("reader", READERS)
def test_an_image_listed_twice_in_a_split_is_refused(tmp_path, reader):
    split = json.loads(json.dumps(VALID))
    split["train"].append(["banded/./0.jpg", 0, "banded"])  # the same file, spelled differently
    where = write_split_bytes(tmp_path, json.dumps(split).encode())
    with pytest.raises(
        ValueError, match=re_file(where) + r": train\[3\] lists 'banded/\./0\.jpg' again \(as train\[0\]"
    ):
        read_split(where, reader)


@pytest.mark.parametrize("reader", READERS)
def test_a_split_file_that_is_not_utf8_is_named(tmp_path, reader):
    text = json.dumps(VALID).replace('"blotchy"]', '"blotchy caf\u00e9"]').replace("\\u00e9", "\u00e9")
    where = write_split_bytes(tmp_path, text.encode("latin-1"))
    with pytest.raises(ValueError, match=re_file(where) + r" is not UTF-8 text: byte 0xe9 at line 1"):
        read_split(where, reader)


@pytest.mark.parametrize("reader", READERS)
def test_a_split_file_nested_too_deeply_is_named(tmp_path, reader):
    where = write_split_bytes(tmp_path, b"[" * 100_000)
    with bounded(), pytest.raises(ValueError, match=re_file(where) + r" nests its JSON lists too deeply"):
        read_split(where, reader)


@pytest.mark.parametrize("reader", READERS)
def test_a_split_file_with_a_byte_order_mark_reads_as_without(tmp_path, reader):
    """A BOM is an encoding mark (Windows editors write one), not content: the file reads as its author meant."""
    where = write_split_bytes(tmp_path, b"\xef\xbb\xbf" + json.dumps(VALID).encode())
    assert read_split(where, reader) == ["banded", "blotchy"]


def test_two_labels_with_one_name_in_a_split_file_are_refused(tmp_path):
    split = json.loads(json.dumps(VALID))
    for part in split.values():
        for entry in part:
            entry[2] = "banded"
    where = write_split_bytes(tmp_path, json.dumps(split).encode())
    with pytest.raises(ValueError, match=re_file(where) + r": the class name 'banded' is repeated \(labels 0 and 1\)"):
        read_split(where, "split_file")


# ------------------------------------------------------------------------------------------------- few-shot files


@pytest.fixture(scope="module")
def eurosat(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    split = make_eurosat(root)
    args = DataArguments(benchmark="EuroSAT", data_root=str(root), fewshot_file=None, num_shots=2)
    data, class_names = load_benchmark_splits(args, ["train"])
    return root, split, data["train"], class_names


def fewshot_rows(eurosat, path):
    root, _, train, class_names = eurosat
    args = DataArguments(benchmark="EuroSAT", data_root=str(root), fewshot_file=str(path), num_shots=2)
    return official_fewshot_rows(args, train, class_names, seed=1)


@pytest.mark.parametrize(
    ("labels", "missing"),
    [
        pytest.param(
            (1,), r"3 of the 4 classes .*: 0 'Annual Crop Land', 2 'Herbaceous Vegetation Land', 3 'Sea", id="one"
        ),
        pytest.param((0, 1, 3), r"1 of the 4 classes .*: 2 'Herbaceous Vegetation Land'\.", id="a-new-class"),
    ],
)
def test_a_fewshot_file_must_list_every_class_of_the_split(eurosat, tmp_path, labels, missing):
    """Base-to-new on 4 classes trains labels 0 and 1; a file with one class would train the other base class on no
    image, and a file without a new class would give the official run other halves than this one."""
    chosen = [entry for entry in official_choice(eurosat[1]) if entry[1] in labels]
    path = write_fewshot(tmp_path, [datum(entry) for entry in chosen])
    with pytest.raises(ValueError, match=rf"--fewshot_file .*shot_2-seed_1\.pkl lists no image of {missing}"):
        fewshot_rows(eurosat, path)


@pytest.mark.parametrize("spelling", ["same", "other-root"])
def test_a_fewshot_file_naming_one_image_twice_is_refused(eurosat, tmp_path, spelling):
    chosen = official_choice(eurosat[1])  # two images of each class
    train = [datum(entry) for entry in chosen]
    # The second image of the first class replaced by its first one: still K = 2 per class, one image twice.
    train[1] = datum(chosen[0]) if spelling == "same" else datum(chosen[0], root="/mnt/copy/eurosat/2750")
    path = write_fewshot(tmp_path, train)
    again = "lists it again" if spelling == "same" else r"names the image of train\[0\] again"
    with pytest.raises(ValueError, match=rf"--fewshot_file .*: train\[1\] '.*' {again} \(train\[0\] '.*'\)"):
        fewshot_rows(eurosat, path)


def test_a_fewshot_file_with_a_repeated_val_image_is_refused(eurosat, tmp_path):
    split = eurosat[1]
    val = [datum(entry) for entry in split["val"]] + [datum(split["val"][2])]
    path = write_fewshot(tmp_path, [datum(entry) for entry in official_choice(split)], val)
    with pytest.raises(ValueError, match=rf"val\[{len(split['val'])}\] '.*' lists the image of val\[2\] again"):
        fewshot_rows(eurosat, path)


# ------------------------------------------------------------------------------------------------- classnames.txt


def make_imagenet(root: Path, classnames: bytes) -> Path:
    for wnid in WNIDS:
        for folder in ("train", "val"):
            touch(root / "imagenet" / "images" / folder / wnid / f"{wnid}_0.JPEG")
    (root / "imagenet" / "classnames.txt").write_bytes(classnames)
    return root / "imagenet" / "classnames.txt"


def classnames_text(lines) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode()


def test_a_repeated_wnid_is_refused_naming_both_lines(tmp_path):
    lines = [f"{wnid} {name}" for wnid, name in zip(WNIDS, NAMES, strict=True)]
    lines.insert(3, "")  # blank lines count as lines in the message
    lines.append(f"{WNIDS[1]} carp")  # would silently rename goldfish
    path = make_imagenet(tmp_path, classnames_text(lines))
    message = r"classnames\.txt: wnid 'n01443537' is on line 2 \('goldfish'\) and again on line 7 \('carp'\)"
    with pytest.raises(BenchmarkLayoutError, match=message):
        load_benchmark("ImageNet", tmp_path)
    with pytest.raises(ValueError, match=message):
        read_wnid_names(path)  # --imagenet_classnames


def test_imagenet_v2_refuses_a_repeated_wnid(tmp_path):
    """ImageNet-V2 labels by line: a repeated line would shift every later class."""
    dataset_dir = tmp_path / "imagenetv2"
    for label in range(3):
        touch(dataset_dir / "imagenetv2-matched-frequency-format-val" / str(label) / "0.jpeg")
    (dataset_dir / "classnames.txt").write_text(f"{WNIDS[0]} tench\n{WNIDS[1]} goldfish\n{WNIDS[0]} tench\n")
    with pytest.raises(BenchmarkLayoutError, match=r"wnid 'n01440764' is on line 1 .* and again on line 3"):
        load_benchmark("ImageNetV2", tmp_path)


def test_a_classnames_txt_with_a_byte_order_mark_reads_as_without(tmp_path):
    path = make_imagenet(
        tmp_path, b"\xef\xbb\xbf" + classnames_text(f"{w} {n}" for w, n in zip(WNIDS, NAMES, strict=True))
    )
    assert load_benchmark("ImageNet", tmp_path)["class_names"] == NAMES
    names = read_wnid_names(path)
    assert list(names) == WNIDS
    # A copy whose labels are no wnids is read in wnid order: the first wnid must sort as itself, not after the rest.
    assert official_label_map("ImageNet", [f"class {i}" for i in range(5)], names).class_names == NAMES


def test_a_classnames_txt_that_is_not_utf8_is_named(tmp_path):
    path = make_imagenet(
        tmp_path, classnames_text([f"{WNIDS[0]} tench", f"{WNIDS[1]} gold\xe9fish"]).replace(b"\xc3\xa9", b"\xe9")
    )
    with pytest.raises(BenchmarkLayoutError, match=r"classnames\.txt is not UTF-8 text: byte 0xe9 at line 2"):
        load_benchmark("ImageNet", tmp_path)
    with pytest.raises(ValueError, match=r"classnames\.txt is not UTF-8 text: byte 0xe9 at line 2"):
        read_wnid_names(path)


def test_a_classnames_txt_that_cannot_be_read_is_named(tmp_path):
    path = make_imagenet(tmp_path, b"")
    path.unlink()
    path.mkdir()  # a folder where the file should be
    with pytest.raises(BenchmarkLayoutError, match=r"classnames\.txt cannot be read: Is a directory"):
        load_benchmark("ImageNet", tmp_path)


# ------------------------------------------------------------------------------------------------- --class_names_file


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(b"\xef\xbb\xbfcat\ndog\nfox\n", ["cat", "dog", "fox"], id="bom-dropped"),  # not "\ufeffcat"
        pytest.param(
            b"cat\nd\xf6g\nfox\n",
            r"--class_names_file .*names\.txt is not UTF-8 text: byte 0xf6 at line 2",
            id="latin-1",
        ),
        pytest.param(
            b"cat\n\ndog\ncat\n", r"names\.txt: the class name 'cat' is repeated \(lines 1 and 4\)", id="repeat"
        ),
        pytest.param(
            b'["cat", "dog", "cat"]', r"the class name 'cat' is repeated \(positions 0 and 2\)", id="json-repeat"
        ),
    ],
)
def test_class_names_file_encoding_bom_and_repeats(tmp_path, content, expected):
    """Three integer labels named by a --class_names_file: a byte-order mark is no part of the first name (it would
    enter its prompt), other encodings are named, and two classes with one name (one prompt) are refused."""
    from .test_data import _int_label_file

    data_file = _int_label_file(tmp_path, num_classes=3)
    names = tmp_path / "names.txt"
    names.write_bytes(content)
    args = DataArguments(train_file=data_file, image_column="img", class_names_file=str(names))
    if isinstance(expected, list):
        assert load_splits(args, ["train"])[1] == expected
    else:
        with pytest.raises(ValueError, match=expected):
            load_splits(args, ["train"])


# ------------------------------------------------------------------------------------------------- label maps


def test_many_raw_label_names_map_in_linear_time():
    """A column source (e.g. a 300 KB parquet file) with 20,000 distinct label names: the repeated-name check of the
    label map counts names once (it took 6.5 s, quadratic, before)."""
    raw = [f"flower {i}" for i in range(20_000)]
    with bounded(seconds=1.0, megabytes=64):
        label_map = official_label_map("OxfordFlowers", raw)
    assert label_map.class_names == raw and label_map.labels[19_999] == 19_999
