"""
Tiny hostile config files cost bounded work and get one clear line (issue 16): YAML/JSON options files of the
training scripts (cocoop_hf_training/config_files.py, cli.py), a model folder's config.json (CoCoOpConfig) and a CLIP's config.json read by the
training scripts (cocoop_hf_training/modeling_setup.py), before anything is built from them.
"""

import importlib
import json
import time

import pytest
import yaml
from transformers.models.clip import modeling_clip

from cocoop_hf import CoCoOpConfig, CoCoOpModel, configuration_cocoop
from cocoop_hf_training import cli, grid, run_cocoop
from cocoop_hf_training.data import DataArguments
from cocoop_hf_training.modeling_setup import build_model, build_zero_shot_clip, random_clip

from .conftest import CLASS_NAMES, TINY_CLIP, tiny_clip_config


pytestmark = pytest.mark.usefixtures("single_thread")

# Wall-clock bound of a refusal: the cases took from seconds to minutes (or gigabytes) before; a refusal takes
# milliseconds. Generous for a loaded 2-core machine.
FAST_S = 2.0
# Longest error message a refusal may print: one line naming the file and the field, never a value expanded.
MESSAGE_CHARS = 600
# The documented cap on a training config file (cocoop_hf_training/config_files.py MAX_CONFIG_FILE_BYTES).
CONFIG_FILE_CAP = 2**20


def limits():
    """cocoop_hf.limits_cocoop, imported where a test uses it: without it, each such test fails on its own."""
    return importlib.import_module("cocoop_hf.limits_cocoop")


def reader():
    """cocoop_hf_training.config_files (what `cli.read_structured_file` runs), imported where a test reads its constants."""
    return importlib.import_module("cocoop_hf_training.config_files")


def laughs(levels: int) -> str:
    """A YAML "billion laughs": `levels` lists of 9 aliases of the one before, 9**levels strings once expanded."""
    parts = ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    parts += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "learning_rate: [" + ", ".join(parts) + "]\n"


def parse_file(tmp_path, text, name="cfg.yaml", *flags):
    """run_cocoop's own parsing of a config file (+ flags); returns (error message, seconds)."""
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        run_cocoop.parse_args([str(path), *flags])
    return str(error.value), time.perf_counter() - start


def assert_one_clear_line(message: str, *parts: str) -> None:
    assert len(message) < MESSAGE_CHARS and "\n" not in message, message[:MESSAGE_CHARS]
    for part in parts:
        assert part in message, message


# ---------------------------------------------------------------------------------------------- YAML / JSON files


def test_billion_laughs_is_refused_at_once(tmp_path):
    # Under 500 bytes, 9**9 = 387 million strings expanded: the original's error message built a repr of gigabytes.
    text = laughs(9)
    assert len(text) < 500
    message, seconds = parse_file(tmp_path, text)
    assert seconds < FAST_S
    assert_one_clear_line(message, "cfg.yaml", "line 1", f"{reader().MAX_CONFIG_VALUES:,} values", "aliases")


def test_a_smaller_alias_bomb_gives_a_short_message(tmp_path):
    # 9**6 strings: small enough to build, but its repr is 4 MB; the message shows a bounded prefix only.
    message, seconds = parse_file(tmp_path, laughs(6))
    assert seconds < FAST_S
    assert_one_clear_line(message, "cfg.yaml")


def test_a_value_of_the_wrong_type_is_shown_bounded(tmp_path):
    message, _ = parse_file(tmp_path, "learning_rate: [" + ", ".join(["'" + "x" * 1000 + "'"] * 500) + "]\n")
    assert_one_clear_line(message, "`learning_rate` must be a number", "(list of 500 items)")
    message, _ = parse_file(tmp_path, "seed: '" + "7x" * 100_000 + "'\n")
    assert_one_clear_line(message, "`seed`", "is not a valid int")


def test_unknown_names_are_listed_bounded(tmp_path):
    names = json.dumps({f"{'n' * 5000}{i}": 1 for i in range(50)})
    message, _ = parse_file(tmp_path, names, "cfg.json")
    assert_one_clear_line(message, "unknown arguments", "and 45 more")


def test_names_must_be_text(tmp_path):
    message, _ = parse_file(tmp_path, "1: 2\nsed: 3\n")  # sorting int and str names raised TypeError
    assert_one_clear_line(message, "cfg.yaml", "argument names must be text", "1 (int)")


@pytest.mark.parametrize("name", ["cfg.yaml", "cfg.json"])
def test_a_file_over_the_size_cap_is_refused_before_it_is_read(tmp_path, name, monkeypatch):
    value = "x" * CONFIG_FILE_CAP
    text = f'{{"output_dir": "{value}"}}' if name.endswith(".json") else f"output_dir: {value}\n"
    read = []
    monkeypatch.setattr(yaml, "load", lambda *a, **k: read.append(1))
    monkeypatch.setattr(json, "loads", lambda *a, **k: read.append(1))
    message, seconds = parse_file(tmp_path, text, name)
    assert seconds < FAST_S and not read
    assert_one_clear_line(message, name, f"{CONFIG_FILE_CAP:,}")
    assert reader().MAX_CONFIG_FILE_BYTES == CONFIG_FILE_CAP


def test_yaml_is_read_by_the_c_safe_loader(tmp_path, monkeypatch):
    # The pure-Python loader took > 400 s on a 100 MB value; libyaml's takes milliseconds per MB.
    if not yaml.__with_libyaml__:
        pytest.skip("PyYAML built without libyaml: the pure-Python loader is the fallback (the size cap bounds it)")
    loaders = []
    real_load = yaml.load
    monkeypatch.setattr(yaml, "load", lambda stream, Loader: loaders.append(Loader) or real_load(stream, Loader))
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 3\nreport_to: [none]\n")
    assert cli.read_structured_file(path) == {"seed": 3, "report_to": ["none"]}
    assert loaders == [yaml.CSafeLoader]


def test_values_nested_deep_are_refused_without_recursion(tmp_path):
    # libyaml's C composer recurses per level (100,000 brackets crashed the process); the pure-Python one and json
    # raise RecursionError.
    for name, text in (
        ("deep.yaml", "seed: " + "[" * 100_000 + "]" * 100_000),
        ("deep.json", "[" * 100_000 + "]" * 100_000),
    ):
        message, seconds = parse_file(tmp_path, text, name)
        assert seconds < FAST_S
        assert_one_clear_line(message, name, f"more than {reader().MAX_CONFIG_DEPTH} deep")


def test_a_key_given_twice_is_refused(tmp_path):
    message, _ = parse_file(tmp_path, "learning_rate: 0.002\nseed: 1\nlearning_rate: 0.1\n")
    assert_one_clear_line(message, "cfg.yaml line 3", "'learning_rate' is given twice")
    message, _ = parse_file(tmp_path, '{"seed": 1, "seed": 2}', "cfg.json")
    assert_one_clear_line(message, "cfg.json", "'seed'", "twice")


def test_not_utf8_and_unreadable_numbers_name_the_file(tmp_path):
    message, _ = parse_file(tmp_path, b"dataset_display_name: caf\xe9\n")
    assert_one_clear_line(message, "cfg.yaml is not UTF-8 text")
    message, _ = parse_file(tmp_path, "seed: " + "9" * 5000 + "\n")
    assert_one_clear_line(message, "cfg.yaml is not valid YAML here", "4300 digits")
    message, _ = parse_file(tmp_path, '{"seed": ' + "9" * 5000 + "}", "cfg.json")
    assert_one_clear_line(message, "cfg.json is not valid JSON here", "4300 digits")


def test_aliases_within_the_limits_still_work(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: &s 3\nrandom_init_seed: *s\nreport_to: &none [none]\n")
    assert cli.read_structured_file(path) == {"seed": 3, "random_init_seed": 3, "report_to": ["none"]}
    path.write_text("seed: &s [*s]\n")  # an alias inside its own anchor: a value holding itself
    with pytest.raises(ValueError, match=r"cfg\.yaml line 1: the alias \*s refers to no anchor finished"):
        cli.read_structured_file(path)


def test_grid_recipe_is_read_the_same_way(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("- num_shots\n")  # a list, not a mapping (was AttributeError)
    with pytest.raises(ValueError, match=r"recipe .*recipe\.yaml must hold a mapping .* got list"):
        grid.expected_shots(recipe, [], "coop")
    recipe.write_text("num_shots: '16'\n")
    with pytest.raises(ValueError, match=r"recipe .*recipe\.yaml: `num_shots` must be a positive integer"):
        grid.expected_shots(recipe, [], "coop")
    recipe.write_text(laughs(9).replace("learning_rate", "num_shots"))
    with pytest.raises(ValueError, match=r"recipe .*recipe\.yaml line 1: holds more than"):
        grid.expected_shots(recipe, [], "coop")
    recipe.write_text("num_shots: 4\n")
    assert grid.expected_shots(recipe, [], "coop") == 4


# ---------------------------------------------------------------------------------------------- describe_value


def test_describe_value_is_bounded_for_any_value():
    nested = ["lol"] * 9
    for _ in range(9):
        nested = [nested] * 9  # 9**10 strings by reference: its repr would take gigabytes
    looped = []
    looped.append(looped)
    start = time.perf_counter()
    shown = {
        "nested": limits().describe_value(nested),
        "looped": limits().describe_value(looped),
        "text": limits().describe_value("x" * 10**7),
        "int": limits().describe_value(10**5000),
        "mapping": limits().describe_value({str(i): i for i in range(10**5)}),
    }
    assert time.perf_counter() - start < FAST_S
    assert all(len(text) < 200 for text in shown.values()), shown
    assert shown["text"].endswith("(str of 10,000,000 characters)")
    assert shown["nested"].startswith("[[[") and shown["nested"].endswith("(list of 9 items)")
    assert shown["int"] == "<a 16610-bit integer> (int)"
    assert shown["mapping"].startswith("{'0': 0, '1': 1,") and shown["mapping"].endswith("(dict of 100,000 items)")
    assert limits().describe_value(7) == "7 (int)" and limits().describe_value("cat", typed=False) == "'cat'"


# ---------------------------------------------------------------------------------------------- model configs


def clip_dict(**tower_changes) -> dict:
    """The tiny CLIP config as in config.json, `text_<name>` / `vision_<name>` / `<name>` changed."""
    config = tiny_clip_config().to_dict()
    for key, value in tower_changes.items():
        tower, _, name = key.partition("_")
        if tower in ("text", "vision") and name != "config":
            config[f"{tower}_config"][name] = value
        else:
            config[key] = value
    return config


def count_built_layers(monkeypatch) -> list:
    """A list that grows by one for every CLIP encoder layer built from now on."""
    built = []
    real_init = modeling_clip.CLIPEncoderLayer.__init__

    def init(self, *args, **kwargs):
        built.append(1)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(modeling_clip.CLIPEncoderLayer, "__init__", init)
    return built


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"text_num_hidden_layers": 100_000}, r"text_config\.num_hidden_layers` must be .* 1 to 64, got 100000"),
        ({"vision_hidden_size": 10**6}, r"`clip_config\.vision_config\.hidden_size` must be .* 1 to 8,192"),
        ({"vision_intermediate_size": 10**6}, r"vision_config\.intermediate_size` must be .* 1 to 32,768"),
        ({"text_vocab_size": 10**8}, r"text_config\.vocab_size` must be .* 1 to 1,000,000"),
        ({"text_max_position_embeddings": 10**6}, r"max_position_embeddings` must be .* 1 to 1,024"),
        ({"text_num_attention_heads": "4"}, r"num_attention_heads` must be an integer .*got '4' \(str\)"),
        ({"text_hidden_size": 66}, r"text_config\.hidden_size` \(66\) must be a multiple of num_attention_heads"),
        ({"vision_image_size": 0}, r"clip_config\.vision_config\.image_size` must be .* 1 to 1,024, got 0 \(int\)\.$"),
        ({"vision_image_size": 4}, r"image_size 4 with patch_size 8 must give 1 to 4,096 patches"),
        ({"vision_image_size": 1024, "vision_patch_size": 1}, r"image_size 1024 with patch_size 1 must give 1 to"),
        ({"projection_dim": 10**6}, r"`clip_config\.projection_dim` must be an integer from 1 to 8,192"),
        ({"text_num_labels": 200_000}, r"`clip_config\.text_config\.num_labels` must hold at most 100,000 classes"),
        ({"num_labels": 200_000}, r"`clip_config\.num_labels` must hold at most 100,000 classes"),
        ({"vision_config": [1, 2]}, r"`clip_config\.vision_config` must be a mapping of CLIP settings"),
    ],
)  # fmt: skip
def test_backbone_limits_are_checked_before_anything_is_built(changes, expected, monkeypatch):
    built = count_built_layers(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=expected) as error:
        CoCoOpConfig(clip_config=clip_dict(**changes), id2label=dict(enumerate(CLASS_NAMES)))
    assert time.perf_counter() - start < FAST_S and not built
    assert_one_clear_line(str(error.value))


def test_backbone_limits_hold_for_a_config_object_too():
    config = tiny_clip_config(layers=65)
    with pytest.raises(ValueError, match=r"text_config\.num_hidden_layers` must be an integer from 1 to 64, got 65"):
        CoCoOpConfig(clip_config=config)


def test_real_backbones_fit_the_limits():
    # ViT-bigG/14 (OpenCLIP), SigLIP 2 so400m at 512 px, MetaCLIP 2's vocabulary: all within the limits.
    bigg = {
        "projection_dim": 1280,
        "text_config": dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32),
        "vision_config": dict(
            hidden_size=1664, intermediate_size=8192, num_attention_heads=16, num_hidden_layers=48, patch_size=14
        ),
    }
    siglip = {
        "projection_dim": 1152,
        "text_config": dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27,
                            vocab_size=256_000, max_position_embeddings=64),
        "vision_config": dict(hidden_size=1152, intermediate_size=4304, num_attention_heads=16, num_hidden_layers=27,
                              image_size=512, patch_size=16),
    }  # fmt: skip
    metaclip2 = {"text_config": dict(vocab_size=901_629, hidden_size=1024, num_attention_heads=16)}
    for clip_config in (bigg, siglip, metaclip2):
        limits().check_backbone_config(clip_config)
    assert 2.4e9 < limits().estimated_clip_parameters(bigg) < 2.6e9  # OpenCLIP's ViT-bigG-14: 2.54 B parameters


def test_parameter_estimate_is_exact_for_clip():
    import torch
    from transformers import CLIPConfig, CLIPModel

    for config in (tiny_clip_config(), tiny_clip_config(layers=3, hidden=32, projection=16, image_size=48)):
        with torch.device("meta"):
            model = CLIPModel(config)
        assert limits().estimated_clip_parameters(config) == sum(p.numel() for p in model.parameters())
        assert limits().estimated_clip_parameters(config.to_dict()) == limits().estimated_clip_parameters(config)
    assert limits().estimated_clip_parameters(CLIPConfig()) == 151_277_313  # openai/clip-vit-base-patch32


def test_class_count_is_bounded_before_names_are_checked():
    too_many = {i: f"class {i}" for i in range(limits().MAX_CLASSES + 1)}
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"`id2label` must hold at most 100,000 classes .*it holds 100,001 classes"):
        CoCoOpConfig(clip_config=clip_dict(), id2label=too_many)
    with pytest.raises(ValueError, match=r"`num_labels` must hold at most 100,000 classes"):
        CoCoOpConfig(clip_config=clip_dict(), num_labels=200_000)  # would fill id2label with 200,000 names
    assert time.perf_counter() - start < FAST_S


def test_id2label_messages_are_bounded():
    long = "x" * 10**6
    cases = [
        ({"0": long, "1": long}, "names class 0 and class 1 both"),
        ({str(i + 50_000): f"c{i}" for i in range(50_000)}, "keys must be exactly 0..49999"),  # 50,000 missing
        ({"0": "a", "9" * 5000: "b"}, "keys must be class indices 0, 1, ..., got the key '999"),
    ]
    for id2label, expected in cases:
        with pytest.raises(ValueError) as error:
            CoCoOpConfig(clip_config=clip_dict(), id2label=id2label)
        assert_one_clear_line(str(error.value), expected)


@pytest.fixture(scope="module")
def saved_full(tiny_clip_dir, tokenizer, tmp_path_factory):
    model = CoCoOpModel.from_clip(str(tiny_clip_dir), CLASS_NAMES, tokenizer=tokenizer)
    folder = tmp_path_factory.mktemp("full")
    model.save_pretrained(folder)
    return folder


def edited_copy(folder, tmp_path, edit):
    """A copy of a saved folder (weights linked) whose config.json `edit(config)` changed."""
    copy = tmp_path / "edited"
    copy.mkdir()
    for item in folder.iterdir():
        (copy / item.name).symlink_to(item)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (copy / "config.json").unlink()
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def test_a_saved_model_with_too_many_layers_is_refused_before_building(saved_full, tmp_path, monkeypatch):
    def edit(config):
        config["backbone_config"]["text_config"]["num_hidden_layers"] = 65  # the 100000 took minutes

    folder = edited_copy(saved_full, tmp_path, edit)
    built = count_built_layers(monkeypatch)
    start = time.perf_counter()
    with pytest.raises(ValueError) as error:
        CoCoOpModel.from_pretrained(folder)
    assert time.perf_counter() - start < FAST_S and not built
    assert_one_clear_line(str(error.value), f"{folder}/config.json:", "text_config.num_hidden_layers", "65")


def test_a_config_asking_for_more_than_its_weights_is_refused(saved_full, tmp_path, monkeypatch):
    # 64 layers per tower is within the limits, but the file holds the weights of 2: stock loading builds 64 and fills
    # 62 with random values (a warning in the log only).
    def edit(config):
        for tower in ("text_config", "vision_config"):
            config["backbone_config"][tower]["num_hidden_layers"] = 64

    folder = edited_copy(saved_full, tmp_path, edit)
    built = count_built_layers(monkeypatch)
    with pytest.raises(ValueError) as error:
        CoCoOpModel.from_pretrained(folder)
    assert not built
    assert_one_clear_line(str(error.value), "config.json", "parameters", "does not match its weights")
    # The unedited folder loads.
    assert CoCoOpModel.from_pretrained(saved_full).config.clip_config.text_config.num_hidden_layers == 2


def test_a_model_config_file_over_the_cap_is_not_read(saved_full, tmp_path, monkeypatch):
    monkeypatch.setattr(configuration_cocoop, "MAX_MODEL_CONFIG_BYTES", 100)
    with pytest.raises(
        ValueError, match=r"config\.json: model config .*config\.json has \d[\d,]* bytes, more than the 100"
    ):
        CoCoOpConfig.from_pretrained(saved_full)


# ---------------------------------------------------------------------------------------------- training scripts


def clip_folder(tmp_path, source, **changes):
    """A copy of a CLIP folder whose config.json has `changes` (as `clip_dict`)."""
    folder = tmp_path / "clip"
    folder.mkdir()
    for item in source.iterdir():
        if item.name != "config.json":
            (folder / item.name).symlink_to(item)
    config = json.loads((source / "config.json").read_text())
    for key, value in changes.items():
        tower, _, name = key.partition("_")
        config[f"{tower}_config"][name] = value
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def model_args(clip, **kwargs):
    return cli.ModelArguments(clip_model_name_or_path=str(clip), **kwargs)


def test_random_init_clip_is_checked_before_it_is_built(tmp_path, monkeypatch):
    folder = clip_folder(tmp_path, TINY_CLIP, vision_num_hidden_layers=65)
    built = count_built_layers(monkeypatch)
    for build in (
        lambda: random_clip(model_args(folder, random_init_clip=True)),
        lambda: build_model(model_args(folder, random_init_clip=True), CLASS_NAMES, seed=1),
    ):
        with pytest.raises(ValueError) as error:
            build()
        assert_one_clear_line(str(error.value), f"{folder}/config.json:", "vision_config.num_hidden_layers", "65")
    assert not built


def test_pretrained_clip_is_checked_before_it_is_built(tiny_clip_dir, tmp_path, monkeypatch):
    folder = clip_folder(tmp_path, tiny_clip_dir, text_num_hidden_layers=64, vision_num_hidden_layers=64)
    built = count_built_layers(monkeypatch)
    for build in (
        lambda: build_model(model_args(folder, method="coop"), CLASS_NAMES, seed=1),
        lambda: build_zero_shot_clip(model_args(folder, method="zeroshot"), "a photo of a {}.", CLASS_NAMES),
    ):
        with pytest.raises(ValueError) as error:
            build()
        assert_one_clear_line(str(error.value), f"{folder}/config.json describes", f"weights in {folder} hold")
    assert not built


@pytest.mark.parametrize("size", [0, -3, 10**6])
def test_image_size_flag_is_checked_with_its_name(size):
    # 0 was read as "not given": "cannot tell the input size from the image processor: pass --image_size".
    with pytest.raises(
        ValueError, match=rf"--image_size must be the model's input resolution in pixels, 1 to 1024 .*got {size}"
    ):
        DataArguments(dataset_name="x", image_size=size)


def test_from_clip_checks_the_clip_before_building(tiny_clip_dir, tmp_path, monkeypatch, tokenizer):
    folder = clip_folder(tmp_path, tiny_clip_dir, text_num_hidden_layers=65)
    built = count_built_layers(monkeypatch)
    with pytest.raises(ValueError) as error:
        CoCoOpModel.from_clip(str(folder), CLASS_NAMES, tokenizer=tokenizer)
    assert not built
    assert_one_clear_line(str(error.value), f"{folder}/config.json:", "text_config.num_hidden_layers", "65")


def test_an_adapter_checks_its_base_clip_before_building(tiny_clip_dir, tmp_path, monkeypatch, tokenizer):
    base = clip_folder(tmp_path, tiny_clip_dir)
    adapter = tmp_path / "adapter"
    CoCoOpModel.from_clip(str(base), CLASS_NAMES, tokenizer=tokenizer).save_pretrained(adapter, adapter_only=True)
    config = json.loads((base / "config.json").read_text())
    config["vision_config"]["num_hidden_layers"] = 64  # the base CLIP's config edited after the adapter was saved
    (base / "config.json").write_text(json.dumps(config))
    built = count_built_layers(monkeypatch)
    with pytest.raises(ValueError) as error:
        CoCoOpModel.from_pretrained(adapter)
    assert not built
    assert_one_clear_line(str(error.value), f"{base}/config.json describes", "does not match its weights")
