"""Few-shot subsets exactly as the official code draws them (Dassl `generate_fewshot_dataset`, CoOp datasets)."""

import json
import math
import random
from collections import Counter, defaultdict

import pytest
from PIL import Image

from cocoop_hf_training.data import (
    FEWSHOT_INDICES_NAME,
    FEWSHOT_RULE,
    dassl_few_shot,
    few_shot_indices,
    record_training_items,
    select_few_shot,
    subsample_classes,
)


SEEDS = (1, 2, 3)
SHOTS = (1, 4, 16)
# Classes larger than, equal to and smaller than K in {1, 4, 16}: 20 and 17 (> 16), 16 (= 16, > 4), 4 (= 4, < 16),
# 3 and 1 (< 4). Interleaved so that the order of first appearance is not sorted.
CLASS_SIZES = {7: 20, 2: 16, 5: 4, 0: 1, 9: 3, 3: 17}
VAL_SIZES = {3: 5, 7: 4, 0: 2, 2: 6, 9: 1, 5: 4}


def interleaved(sizes: dict, seed: int) -> list[int]:
    labels = [label for label, count in sizes.items() for _ in range(count)]
    random.Random(seed).shuffle(labels)
    return labels


TRAIN = interleaved(CLASS_SIZES, 0)
VAL = interleaved(VAL_SIZES, 1)


@pytest.fixture(autouse=True)
def keep_global_random_state():
    """The reference below seeds the global `random` module, as the official code does; other tests never see it."""
    state = random.getstate()
    yield
    random.setstate(state)


def official(train_items, labels_of, num_shots, seed, val_items=None):
    """
    The official procedure, written out plainly: CoOp train.py -> set_random_seed (random.seed first), then
    generate_fewshot_dataset(train, K) and generate_fewshot_dataset(val, min(K, 4)) on the same stream.
    """
    random.seed(seed)

    def generate(items, k):
        tracker = defaultdict(list)
        for item in items:
            tracker[labels_of(item)].append(item)
        dataset = []
        for _, group in tracker.items():
            dataset.extend(random.sample(group, k) if len(group) >= k else group)
        return dataset

    train = generate(train_items, num_shots)
    val = generate(val_items, min(num_shots, 4)) if val_items is not None else None
    return train, val


def as_items(labels, split):
    """Datum-like items: (image path, label), so the reference samples items, not row numbers."""
    return [(f"{split}/{row:03d}.jpg", label) for row, label in enumerate(labels)]


def paths(items):
    return [path for path, _ in items]


def test_fixture_labels_cover_the_cases():
    first_appearance = list(dict.fromkeys(TRAIN))
    assert first_appearance != sorted(first_appearance)
    assert Counter(TRAIN) == CLASS_SIZES and Counter(VAL) == VAL_SIZES


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shots", SHOTS)
def test_train_and_val_draws_are_the_official_ones(seed, shots):
    train_items, val_items = as_items(TRAIN, "train"), as_items(VAL, "val")
    expected_train, expected_val = official(train_items, lambda item: item[1], shots, seed, val_items)
    train, val = dassl_few_shot(TRAIN, shots, seed, val_labels=VAL)
    assert [train_items[i] for i in train] == expected_train
    assert [val_items[i] for i in val] == expected_val
    # The training draw alone (the script's case, and ImageNet's) is the same list.
    assert select_few_shot(TRAIN, shots, seed) == train
    counts = Counter(TRAIN[i] for i in train)
    assert counts == {label: min(size, shots) for label, size in CLASS_SIZES.items()}
    assert Counter(VAL[i] for i in val) == {label: min(size, shots, 4) for label, size in VAL_SIZES.items()}
    # Classes in order of first appearance, not sorted.
    assert list(dict.fromkeys(TRAIN[i] for i in train)) == list(dict.fromkeys(TRAIN))


@pytest.mark.parametrize("shots", SHOTS)
def test_draws_differ_between_seeds(shots):
    draws = [tuple(select_few_shot(TRAIN, shots, seed)) for seed in SEEDS]
    assert len(set(draws)) == len(SEEDS)
    assert all(tuple(select_few_shot(TRAIN, shots, seed)) == draw for seed, draw in zip(SEEDS, draws, strict=True))


def test_validation_continues_the_stream_of_the_training_draw():
    train, val = dassl_few_shot(TRAIN, 4, 1, val_labels=VAL)
    assert train == select_few_shot(TRAIN, 4, 1)  # drawing val afterwards does not change the training draw
    # A val draw from a fresh stream (the seed set again) is a different list: ours continues the stream.
    fresh = official(as_items(VAL, "val"), lambda item: item[1], 4, 1)[0]
    assert [as_items(VAL, "val")[i] for i in val] != fresh


def test_k_of_k_consumes_random_numbers_and_smaller_classes_do_not():
    # Class 0 has exactly K = 4 items: random.sample still runs (a permutation) and moves the stream on.
    labels = [0] * 4 + [1] * 10
    rng = random.Random(5)
    expected = rng.sample(range(4), 4) + [4 + i for i in rng.sample(range(10), 4)]
    assert select_few_shot(labels, 4, 5) == expected
    # Class 0 has 3 < K items: all kept in order, nothing consumed, class 1 draws from the fresh stream.
    labels = [0] * 3 + [1] * 10
    assert select_few_shot(labels, 4, 5) == [0, 1, 2] + [3 + i for i in random.Random(5).sample(range(10), 4)]


def test_private_stream_equals_the_seeded_module_and_leaves_it_alone():
    population = list(range(50))
    for seed in SEEDS:
        random.seed(seed)
        assert random.Random(seed).sample(population, 7) == random.sample(population, 7)
    random.seed(123)
    before = random.getstate()
    first = dassl_few_shot(TRAIN, 4, 2, val_labels=VAL)
    assert random.getstate() == before  # the caller's stream is neither read nor moved
    random.seed(999)
    assert dassl_few_shot(TRAIN, 4, 2, val_labels=VAL) == first


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shots", SHOTS)
def test_base_new_split_is_the_official_rule(seed, shots):
    train_items = as_items(TRAIN, "train")
    fewshot = official(train_items, lambda item: item[1], shots, seed)[0]
    # CoOp OxfordPets.subsample_classes: labels of the few-shot train list, sorted, first ceil(n / 2) are base.
    labels = sorted({label for _, label in fewshot})
    m = math.ceil(len(labels) / 2)
    present = [TRAIN[i] for i in select_few_shot(TRAIN, shots, seed)]
    for subsample, selected in (("base", labels[:m]), ("new", labels[m:]), ("all", labels)):
        relabel = subsample_classes(present, subsample)
        assert relabel == {old: new for new, old in enumerate(selected)}
    assert list(subsample_classes(present, "base")) == [0, 2, 3]  # 6 classes: 0, 2, 3 base; 5, 7, 9 new


def test_indices_file_records_rule_and_items_and_refuses_another_rule(tmp_path):
    indices = few_shot_indices(TRAIN, 4, 1, tmp_path, "train", overwrite=False)
    path = tmp_path / FEWSHOT_INDICES_NAME
    saved = json.loads(path.read_text())
    assert saved["sampling"] == FEWSHOT_RULE and saved["indices"] == indices
    assert saved["items"] == [[i, TRAIN[i]] for i in indices]
    assert few_shot_indices(TRAIN, 4, 1, tmp_path, "train", overwrite=False) == indices
    # A file written before the rule was recorded (drawn per sorted label) is refused, naming both rules.
    del saved["sampling"]
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match=r"older rule .*" + FEWSHOT_RULE + r".*--overwrite_output_dir"):
        few_shot_indices(TRAIN, 4, 1, tmp_path, "train", overwrite=False)
    saved["sampling"] = "some-other-rule/v0"
    path.write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="'some-other-rule/v0'"):
        few_shot_indices(TRAIN, 4, 1, tmp_path, "train", overwrite=False)
    assert few_shot_indices(TRAIN, 4, 1, tmp_path, "train", overwrite=True) == indices
    assert json.loads(path.read_text())["sampling"] == FEWSHOT_RULE


def test_training_items_are_recorded_in_order(tmp_path):
    from datasets import Dataset
    from datasets import Image as ImageFeature

    image_paths = []
    for row in range(len(TRAIN)):
        image_paths.append(str(tmp_path / f"{row}.png"))
        Image.new("RGB", (4, 4), (row, 0, 0)).save(image_paths[-1])
    indices = few_shot_indices(TRAIN, 4, 3, tmp_path, "train", overwrite=False)
    relabel = subsample_classes([TRAIN[i] for i in indices], "base")
    kept = [i for i in indices if TRAIN[i] in relabel]
    subset = Dataset.from_dict(
        {"image": [image_paths[i] for i in kept], "label": [TRAIN[i] for i in kept], "source_row": kept}
    ).cast_column("image", ImageFeature())
    names = {"base": ["c0", "c2", "c3"], "new": ["c5", "c7", "c9"]}
    record_training_items(tmp_path, subset, "base", relabel, names)
    saved = json.loads((tmp_path / FEWSHOT_INDICES_NAME).read_text())
    assert saved["indices"] == indices  # the draw itself is untouched
    assert saved["trained"] == {
        "task": "base",
        "classes": names,
        "items": [[i, TRAIN[i], relabel[TRAIN[i]], image_paths[i]] for i in kept],
    }
