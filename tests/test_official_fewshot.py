"""`--fewshot_file`: train on the very images of an official run, read from the few-shot file the official code wrote
(`<dataset>/split_fewshot/shot_K-seed_S.pkl`, a pickled {"train": [Datum], "val": [Datum]} with the absolute paths
of the machine that wrote it), on a miniature EuroSAT with real images and the tiny random CLIP of cocoop_hf_training/demo."""

import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest

from cocoop_hf_training.data import (
    DataArguments,
    OfficialFewShot,
    few_shot_indices,
    load_benchmark_splits,
    official_fewshot_rows,
    select_few_shot,
)
from cocoop_hf_training.run_cocoop import CoCoOpTrainer, main

from .test_benchmark_runs import EUROSAT, argv, benchmark, make_eurosat
from .test_benchmarks import NAMES, WNIDS, touch, write_classnames
from .test_official_pickle import CallsOnLoad, FakeDatum, pickle_as_dassl


ELSEWHERE = "/data/someone/eurosat/2750"  # the image folder on the machine that wrote the file


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    make_eurosat(root)
    return root


@pytest.fixture(scope="module")
def split(data_root):
    return json.loads((data_root / "eurosat" / "split_zhou_EuroSAT.json").read_text())


@pytest.fixture
def no_training(monkeypatch):
    monkeypatch.setattr(CoCoOpTrainer, "train", lambda *a, **kw: pytest.fail("training started before the error"))


def datum(entry, root=ELSEWHERE, **changes):
    """A Datum for one [relative path, label, class name] entry of the split file, as the official code makes it."""
    rel, label, name = entry
    fields = {"impath": f"{root}/{rel}", "label": label, "domain": 0, "classname": name, **changes}
    return FakeDatum(fields["impath"], fields["label"], fields["domain"], fields["classname"])


def write_fewshot(folder: Path, train, val=(), name="shot_2-seed_1.pkl", with_val=True) -> Path:
    """The file as CoOp's datasets write it: pickle.dump({"train": ..., "val": ...}, protocol=HIGHEST_PROTOCOL)."""
    path = folder / "split_fewshot" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"train": list(train), **({"val": list(val)} if with_val else {})}
    path.write_bytes(pickle_as_dassl(content))
    return path


def official_choice(split):
    """Two images per class in an order no draw of ours gives: class 1 first, each class's later image first."""
    train = split["train"]  # 3 images per class, classes listed 3, 0, 1, 2
    by_label = {label: [entry for entry in train if entry[1] == label] for label in range(4)}
    return [entry for label in (1, 3, 0, 2) for entry in (by_label[label][2], by_label[label][0])]


def fewshot_run(data_root, output_dir, path, *extra):
    return argv(output_dir, *benchmark(data_root), "--method", "coop", "--fewshot_file", str(path), *extra)


# ------------------------------------------------------------------------------------------- the run


def test_run_trains_on_exactly_the_rows_of_the_official_file(data_root, split, tmp_path):
    chosen = official_choice(split)
    val = [datum(entry) for entry in split["val"]]
    path = write_fewshot(tmp_path, [datum(entry) for entry in chosen], val)
    output_dir = tmp_path / "out"
    main(fewshot_run(data_root, output_dir, path))

    saved = json.loads((output_dir / "fewshot_indices.json").read_text())
    rows = [split["train"].index(entry) for entry in chosen]
    labels = [entry[1] for entry in split["train"]]
    assert rows != select_few_shot(labels, 2, 1)  # not what our own draw would have given
    assert saved["indices"] == rows and saved["items"] == [[row, labels[row]] for row in rows]
    assert "sampling" not in saved
    assert saved["fewshot_file"] == {
        "path": str(path.resolve()),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    assert saved["fewshot_file_val"] == [[f"{ELSEWHERE}/{rel}", label, name] for rel, label, name in split["val"]]
    assert (saved["num_shots"], saved["seed"], saved["split"]) == (2, 1, "train")

    # Base/new subsampling applies to the file's train list (base = labels 0 and 1), kept in the file's order.
    image_dir = data_root / "eurosat" / "2750"
    base = [entry for entry in chosen if entry[1] in (0, 1)]
    trained = saved["trained"]
    assert trained["task"] == "base" and trained["classes"]["base"] == [EUROSAT[0][1], EUROSAT[1][1]]
    assert trained["items"] == [
        [split["train"].index(entry), entry[1], entry[1], str(image_dir / entry[0])] for entry in base
    ]
    results = json.loads((output_dir / "results.json").read_text())
    assert results["arguments"]["data"]["fewshot_file"] == str(path)


def test_imagenet_file_without_val_maps_onto_the_train_folder(tmp_path):
    """ImageNet's file has no "val"; its paths run <root>/imagenet/images/train/<wnid>/<image>."""
    for wnid in WNIDS:
        for i in range(2):
            touch(tmp_path / "imagenet" / "images" / "train" / wnid / f"{wnid}_{i}.JPEG")
            touch(tmp_path / "imagenet" / "images" / "val" / wnid / f"{wnid}_{i}.JPEG")
    write_classnames(tmp_path / "imagenet" / "classnames.txt")
    chosen = [(4, 1), (0, 0), (2, 1), (1, 0), (3, 1)]  # every class, as an official file lists them
    train = [
        FakeDatum(
            f"D:\\datasets\\imagenet\\images\\train\\{WNIDS[label]}\\{WNIDS[label]}_{i}.JPEG", label, 0, NAMES[label]
        )
        for label, i in chosen
    ]  # a file written on Windows: either separator is read
    path = write_fewshot(tmp_path, train, name="shot_1-seed_3.pkl", with_val=False)
    args = DataArguments(benchmark="imagenet", data_root=str(tmp_path), fewshot_file=str(path), num_shots=1)
    data, class_names = load_benchmark_splits(args, ["train"])
    official = official_fewshot_rows(args, data["train"], class_names, seed=3)
    assert official.indices == [4 * 2 + 1, 0, 2 * 2 + 1, 1 * 2, 3 * 2 + 1] and official.val is None


# ------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"impath": f"{ELSEWHERE}/Forest/Forest_99.jpg"},
            r"train\[1\] '/data/someone/eurosat/2750/Forest/Forest_99\.jpg' is not in the EuroSAT train split under "
            r".*eurosat/2750: looked for 'Forest/Forest_99\.jpg' there",
            id="unknown-image",
        ),
        pytest.param(
            {"impath": f"{ELSEWHERE}/SeaLake/SeaLake_16.jpg"},  # exists here, but in the test split
            r"train\[1\] '.*SeaLake_16\.jpg' is not in the EuroSAT train split.*looked for 'SeaLake/SeaLake_16\.jpg'",
            id="test-image",
        ),
        pytest.param(
            {"impath": "/data/someone/dtd/images/banded/banded_0001.jpg"},
            r"train\[1\] '/data/someone/dtd/images/banded/banded_0001\.jpg' is not inside a folder eurosat/2750",
            id="other-dataset",
        ),
        pytest.param(
            {"label": 3, "classname": "Sea or Lake"},
            r"train\[1\] '.*' has label 3 \('Sea or Lake'\) there, but label 1 \('Forest'\) in the EuroSAT train",
            id="wrong-label",
        ),
        pytest.param(
            {"classname": "forest"},
            r"train\[1\] '.*' has label 1 \('forest'\) there, but label 1 \('Forest'\) in the EuroSAT train",
            id="wrong-class-name",
        ),
    ],
)
def test_items_that_do_not_fit_this_machine_are_named(data_root, split, tmp_path, no_training, change, message):
    chosen = official_choice(split)
    assert (split["test"][0][0], chosen[1][1]) == ("SeaLake/SeaLake_16.jpg", 1)  # what the cases rely on
    train = [datum(entry, **(change if i == 1 else {})) for i, entry in enumerate(chosen)]
    path = write_fewshot(tmp_path, train)
    with pytest.raises(ValueError, match=message):
        main(fewshot_run(data_root, tmp_path / "out", path))
    assert not (tmp_path / "out" / "fewshot_indices.json").exists()


@pytest.mark.parametrize(
    ("name", "extra", "message"),
    [
        ("shot_2-seed_1.pkl", ["--num_shots", "4"], r"holds 2 images per class \(shot_2\), but --num_shots is 4"),
        ("shot_2-seed_1.pkl", ["--seed", "2"], r"drawn with seed 1 \(seed_1\), but this run's few-shot seed .* is 2"),
        ("shot_2-seed_1.pkl", ["--data_seed", "5"], r"drawn with seed 1 \(seed_1\), but .* is 5"),
        ("shot_1-seed_1.pkl", ["--num_shots", "1"], r"holds 2 images of label 1 \(.*K = 1\), but --num_shots is 1"),
        ("official.pkl", ["--num_shots", "1"], r"holds 2 images of label 1 \(.*K = 2\), but --num_shots is 1"),
        ("shot_2-seed_1.pkl", ["--train_split", "val"], r"not of --train_split 'val'"),
    ],
)
def test_shots_and_seed_must_be_those_of_the_file(data_root, split, tmp_path, no_training, name, extra, message):
    path = write_fewshot(tmp_path, [datum(entry) for entry in official_choice(split)], name=name)
    with pytest.raises(ValueError, match=message):
        main(fewshot_run(data_root, tmp_path / "out", path, *extra))


def test_renamed_file_takes_k_from_its_largest_class(data_root, split, tmp_path, caplog):
    path = write_fewshot(tmp_path, [datum(entry) for entry in official_choice(split)], name="official.pkl")
    args = DataArguments(benchmark="EuroSAT", data_root=str(data_root), fewshot_file=str(path), num_shots=2)
    data, class_names = load_benchmark_splits(args, ["train"])
    official = official_fewshot_rows(args, data["train"], class_names, seed=7)  # the seed cannot be checked
    assert official.indices == [split["train"].index(entry) for entry in official_choice(split)]
    assert "not named shot_K-seed_S.pkl: K is taken as 2" in caplog.text


def test_fewshot_file_needs_a_benchmark_and_training(data_root, split, tmp_path, no_training):
    path = write_fewshot(tmp_path, [datum(entry) for entry in official_choice(split)])
    with pytest.raises(
        ValueError, match=r"--fewshot_file .*shot_2-seed_1\.pkl lists images of an official run.*pass "
    ):
        main(argv(tmp_path / "a", "--dataset_name", str(tmp_path), "--fewshot_file", str(path)))
    with pytest.raises(ValueError, match=r"--fewshot_file .*missing\.pkl does not exist"):
        main(fewshot_run(data_root, tmp_path / "b", tmp_path / "missing.pkl"))
    with pytest.raises(ValueError, match=r"lists training images: pass --do_train, or drop it"):
        main(argv(tmp_path / "c", *benchmark(data_root), "--fewshot_file", str(path), train=False))
    with pytest.raises(ValueError, match=r"is a few-shot list: pass --num_shots 2 \(its images per class\)"):
        DataArguments(benchmark="EuroSAT", data_root=str(data_root), fewshot_file=str(path), num_shots=None)


def test_hostile_file_is_refused_without_running_anything(data_root, split, tmp_path, no_training, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    marker = tmp_path / "executed"
    entries = [datum(entry) for entry in official_choice(split)]
    entries[0] = datum(split["train"][0], label=CallsOnLoad(os.system, f"touch {marker}"))
    path = write_fewshot(tmp_path, entries)
    with pytest.raises(ValueError, match=r"--fewshot_file: cannot read few-shot split .*posix\.system"):
        main(fewshot_run(data_root, tmp_path / "out", path))
    path.write_bytes(pickle.dumps(CallsOnLoad(os.system, f"touch {marker}"), protocol=5))  # a bare REDUCE
    with pytest.raises(ValueError, match=r"--fewshot_file: cannot read few-shot split .*posix\.system"):
        main(fewshot_run(data_root, tmp_path / "out2", path))
    assert not marker.exists() and list(cwd.iterdir()) == []
    assert not (tmp_path / "out" / "fewshot_indices.json").exists()


# ------------------------------------------------------------------------------------------- fewshot_indices.json


def test_saved_indices_of_another_origin_are_never_reused(tmp_path):
    labels = [0, 0, 0, 1, 1, 1]
    first = OfficialFewShot(
        indices=[2, 0, 4, 3], source={"path": "/a/shot_2-seed_1.pkl", "sha256": "1" * 64}, val=None
    )
    assert few_shot_indices(labels, 2, 1, tmp_path, "train", False, official=first) == [2, 0, 4, 3]
    assert few_shot_indices(labels, 2, 1, tmp_path, "train", False, official=first) == [2, 0, 4, 3]  # resume
    changed = OfficialFewShot(indices=[2, 0, 4, 3], source={**first.source, "sha256": "2" * 64}, val=None)
    with pytest.raises(ValueError, match=r"its images came from .*'1111.*this run trains on those of --fewshot_file"):
        few_shot_indices(labels, 2, 1, tmp_path, "train", False, official=changed)
    with pytest.raises(
        ValueError, match=r"its images are those of the official few-shot file .*this run draws its own"
    ):
        few_shot_indices(labels, 2, 1, tmp_path, "train", False)
    drawn = few_shot_indices(labels, 2, 1, tmp_path, "train", True)  # --overwrite_output_dir
    assert drawn == select_few_shot(labels, 2, 1)
    with pytest.raises(ValueError, match=r"its images came from 'dassl-generate_fewshot_dataset/v1', this run trains"):
        few_shot_indices(labels, 2, 1, tmp_path, "train", False, official=first)
