"""
The class set a model holds is one immutable record: swapped whole by `set_class_names` (a forward in another thread
sees the old or the new class set, never a mix), built at first use after loading (a config with very many classes
is not tokenised on load), and it follows `.to(...)` like the weights.
"""

import copy
import json
import shutil
import sys
import threading
import time

import pytest
import torch

import cocoop_hf.class_set_holder_cocoop as class_set_holder
from cocoop_hf import CoCoOpModel

from .conftest import CLASS_NAMES, NEW_CLASS_NAMES


pytestmark = pytest.mark.usefixtures("single_thread")

LOGITS_TOL = 1e-5  # absolute, on logits of the same fp32 computation (|logits| <= logit_scale.exp() = 100)
SHORT_SET = ["bird", "fish", "a very long class name with many words in it"]  # 3 classes, other prompt lengths


def unit_embeds(batch: int, dim: int, seed: int = 0) -> torch.Tensor:
    features = torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed))
    return features / features.norm(dim=-1, keepdim=True)


@pytest.fixture(scope="module")
def model(tiny_clip_dir, tokenizer):
    built = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer).eval()
    with torch.no_grad():
        built.prompt_learner.ctx.normal_(std=0.3, generator=torch.Generator().manual_seed(0))
    return built


def matches(logits: torch.Tensor, reference: torch.Tensor) -> bool:
    return logits.shape == reference.shape and bool((logits - reference).abs().max() <= LOGITS_TOL)


def test_set_class_names_is_atomic_for_concurrent_forwards(model):
    """Forwards on the held class set while another thread swaps it: each result is wholly one class set's."""
    embeds = unit_embeds(2, model.config.clip_config.projection_dim)
    references = []
    with torch.no_grad():
        for names in (NEW_CLASS_NAMES, SHORT_SET):
            model.set_class_names(names)
            references.append(model(image_embeds=embeds).logits)
    assert references[0].shape != references[1].shape
    stop = threading.Event()
    results, errors = [], []

    def forward_loop():
        try:
            with torch.no_grad():
                while not stop.is_set():
                    results.append(model(image_embeds=embeds).logits)
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)
            stop.set()

    def swap_loop():
        swaps = 0
        while not stop.is_set():
            model.set_class_names((NEW_CLASS_NAMES, SHORT_SET)[swaps % 2])
            swaps += 1

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the interleavings a busy server sees, in a second
    threads = [threading.Thread(target=forward_loop) for _ in range(3)] + [threading.Thread(target=swap_loop)]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and len(results) < 3000 and not stop.is_set():
            time.sleep(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        sys.setswitchinterval(switch)
        model.set_class_names(CLASS_NAMES)
    assert not errors, errors[:3]
    assert len(results) > 50  # enough forwards ran during the swaps to mean something
    mixed = [i for i, logits in enumerate(results) if not any(matches(logits, ref) for ref in references)]
    assert not mixed, f"{len(mixed)} of {len(results)} forwards returned logits of neither class set"


def test_forward_reads_the_held_class_set_once(tiny_clip_dir, tokenizer, monkeypatch):
    """
    A swap in the middle of one forward (after its text features were computed) changes nothing of that call: KgCoOp's
    loss uses the zero-shot features of the same class set as the logits, not those of the set swapped in.
    """
    kgcoop = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer, kgcoop_weight=8.0).eval()
    other = NEW_CLASS_NAMES[: len(CLASS_NAMES)]  # same class count: a mix would not fail on a shape
    embeds = unit_embeds(2, kgcoop.config.clip_config.projection_dim, seed=1)
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        expected = kgcoop(image_embeds=embeds, labels=labels)
        # (The original code had no `_text_features`: this test then patches the method its forward called.)
        patched = "_text_features" if hasattr(CoCoOpModel, "_text_features") else "get_text_features"
        original = getattr(CoCoOpModel, patched)

        def features_then_swap(self, *args, **kwargs):  # another thread's set_class_names, mid-forward
            features = original(self, *args, **kwargs)
            self.set_class_names(other)
            return features

        monkeypatch.setattr(CoCoOpModel, patched, features_then_swap)
        output = kgcoop(image_embeds=embeds, labels=labels)
    assert kgcoop.class_names == other  # the swap happened
    torch.testing.assert_close(output.logits, expected.logits, rtol=0, atol=LOGITS_TOL)
    torch.testing.assert_close(output.kgcoop_loss, expected.kgcoop_loss, rtol=0, atol=1e-6)


def test_held_class_set_follows_dtype_and_copies(model):
    embeds = unit_embeds(3, model.config.clip_config.projection_dim, seed=2)
    with torch.no_grad():
        expected = model(image_embeds=embeds).logits
        copied = copy.deepcopy(model).double()
        assert copied.prompt_ids.dtype == torch.long and copied.class_names == CLASS_NAMES
        logits = copied(image_embeds=embeds.double()).logits
    assert logits.dtype == torch.float64
    torch.testing.assert_close(logits.float(), expected, rtol=0, atol=1e-4)  # fp32 vs fp64 rounding
    names = model.class_names
    names.append("not a class")  # the returned list is the caller's: the model keeps its class set
    assert model.class_names == CLASS_NAMES


# ---------------------------------------------------------------------------------------------- lazy prompts on load

MANY = 400


def many_class_folder(shared, tmp_path, names) -> str:
    folder = tmp_path / "many"
    shutil.copytree(shared.full_dir, folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(names)}
    config["label2id"] = {name: i for i, name in enumerate(names)}
    config_file.write_text(json.dumps(config))
    return str(folder)


@pytest.fixture
def counted_builds(monkeypatch):
    """How many times the model tokenised a class set (class_set_holder_cocoop's build_prompt_ids), with counts."""
    calls = []
    original = class_set_holder.build_prompt_ids

    def counting(tokenizer, class_names, *args, **kwargs):
        calls.append(len(list(class_names)))
        return original(tokenizer, class_names, *args, **kwargs)

    monkeypatch.setattr(class_set_holder, "build_prompt_ids", counting)
    return calls


def test_loading_many_classes_tokenises_at_first_use(shared, tmp_path, counted_builds):
    names = [f"class {i}" for i in range(MANY)]
    loaded = CoCoOpModel.from_pretrained(many_class_folder(shared, tmp_path, names))
    assert counted_builds == []  # nothing tokenised on load
    assert loaded.class_names == names and loaded.config.id2label[MANY - 1] == names[-1]
    embeds = unit_embeds(2, loaded.config.clip_config.projection_dim, seed=3)
    with torch.no_grad():
        held = loaded(image_embeds=embeds).logits
        again = loaded(image_embeds=embeds).logits
    assert counted_builds == [MANY]  # built once, at the first use, then kept
    with torch.no_grad():
        given = loaded(image_embeds=embeds, **loaded.class_prompts(names)).logits
    assert held.shape == (2, MANY)
    torch.testing.assert_close(held, given, rtol=0, atol=LOGITS_TOL)
    assert torch.equal(held, again)


def test_first_uses_in_two_threads_build_one_class_set(shared, tmp_path):
    names = [f"class {i}" for i in range(50)]
    loaded = CoCoOpModel.from_pretrained(many_class_folder(shared, tmp_path, names))
    embeds = unit_embeds(2, loaded.config.clip_config.projection_dim, seed=4)
    barrier, results, errors = threading.Barrier(2), [None, None], []

    def first_use(index):
        try:
            barrier.wait()
            with torch.no_grad():
                results[index] = loaded(image_embeds=embeds).logits
        except BaseException as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=first_use, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=LOGITS_TOL)
    assert results[0].shape == (2, len(names))


def test_bad_name_found_at_first_use_names_the_file(shared, tmp_path):
    """A name the tokenizer cannot fit in a prompt is refused when the class set is first built, naming the file."""
    long_name = " ".join(["goldfish"] * 80)
    folder = many_class_folder(shared, tmp_path, ["cat", long_name])
    loaded = CoCoOpModel.from_pretrained(folder)
    embeds = unit_embeds(1, loaded.config.clip_config.projection_dim)
    with pytest.raises(
        ValueError, match=r"many.*config\.json, id2label.*class name 'goldfish goldfish.*over the text"
    ):
        loaded(image_embeds=embeds)
    loaded.set_class_names(["cat", "dog"])  # the model stays usable
    assert loaded(image_embeds=embeds).logits.shape == (1, 2)


def test_names_without_tokenising_are_still_checked_on_load(shared, tmp_path):
    """validate_class_names needs no tokenizer: two names CLIP reads alike are refused on load, as before."""
    folder = many_class_folder(shared, tmp_path, ["cat", "dog"])
    config_file = tmp_path / "many" / "config.json"
    config = json.loads(config_file.read_text())
    config["id2label"] = {"0": "Cat", "1": "cat "}
    config["label2id"] = {"Cat": 0, "cat ": 1}
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"(?i)cat"):
        CoCoOpModel.from_pretrained(folder)


def test_first_use_under_inference_mode_still_trains(shared, tmp_path):
    """Prompts built lazily inside `torch.inference_mode()` are ordinary tensors: a training step works afterwards."""
    loaded = CoCoOpModel.from_pretrained(many_class_folder(shared, tmp_path, ["cat", "dog", "bird"]))
    embeds = unit_embeds(2, loaded.config.clip_config.projection_dim, seed=5)
    with torch.inference_mode():
        loaded(image_embeds=embeds)  # the first use: builds the held prompts
    assert not loaded.prompt_ids.is_inference()
    loss = loaded.train()(image_embeds=embeds, labels=torch.tensor([0, 2])).loss
    loss.backward()
    assert loaded.prompt_learner.ctx.grad is not None and torch.isfinite(loaded.prompt_learner.ctx.grad).all()
