"""The name tables give a dataset when no --dataset_display_name is given: never a split's file name ("train")."""

import pytest

from cocoop_hf_training.data_arguments import DataArguments


@pytest.mark.parametrize(
    "values, name",
    [
        ({"train_file": "demo/cifar10_demo/train.parquet", "eval_file": "demo/cifar10_demo/test.parquet"}, "cifar10_demo"),
        ({"eval_file": "cifar10_demo/test.parquet"}, "cifar10_demo"),
        ({"train_file": "hub/cifar10/data/train-00000-of-00001.parquet"}, "cifar10"),  # a Hub repo's layout
        ({"train_file": "data/Validation.csv"}, "work"),  # split-named folders up to the working folder
        ({"train_file": "files/eurosat.parquet"}, "eurosat"),  # a file named after its dataset keeps its name
        ({"dataset_name": "tanganke/eurosat"}, "eurosat"),
        ({"split_file": "dtd/split_zhou_DescribableTextures.json", "image_root": "dtd/images"}, "DescribableTextures"),
        ({"train_file": "x/train.parquet", "dataset_display_name": "Mine"}, "Mine"),
    ],
)  # fmt: skip
def test_display_name(values, name, tmp_path, monkeypatch):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")  # relative paths are read from here
    assert DataArguments(**values).display_name == name


def test_a_split_file_at_the_top_of_the_working_folder_takes_its_name(tmp_path, monkeypatch):
    folder = tmp_path / "pets_2024"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert DataArguments(train_file="train.parquet", eval_file="test.parquet").display_name == "pets_2024"
