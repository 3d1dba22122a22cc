"""
Class prompts, the processor and the loaders on every backbone (issue 17): `build_prompt_ids` with each backbone's own
tokenizer (BOS or not, EOS or not, padding side, pad id, `context_start`, `attention_mask` only where the contract
says), the duplicate-name rule driven by that tokenizer, the processor's save/load round trip and image outputs per
backbone, `load_backbone_tokenizer` and `load_backbone`. Tiny tokenizers trained offline (tests/tiny_backbones.py says
which real tokenizer each stands for).
"""

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, AutoTokenizer, CLIPModel, MetaClip2Model, Siglip2Model, SiglipModel

from cocoop_hf.backbone_loading_cocoop import load_backbone
from cocoop_hf.processing_cocoop import (
    CoCoOpProcessor,
    build_prompt_ids,
    prompt_context_start,
    validate_class_names,
)

from .tiny_backbones import MODEL_TYPES, save_tiny_backbone, tiny_image_processor, tiny_tokenizer


pytestmark = pytest.mark.usefixtures("single_thread")

NAMES = ["tench", "great_white_shark", "electric ray", "goldfish"]
PREFIX = "a photo of a"
CONTEXT = {"clip": 77, "metaclip_2": 77, "siglip": 64, "siglip2": 64}
# Where the first context token sits in a right-padded prompt: after CLIP's <|startoftext|> / XLM-R's <s>; SigLIP's
# T5-style tokenizer has no start token; SigLIP 2's tokenizer pads on the left (the start differs per class).
EXPECTED_START = {"clip": 1, "metaclip_2": 1, "siglip": 0, "siglip2": None}


@pytest.fixture(scope="module")
def tokenizers():
    return {model_type: tiny_tokenizer(model_type) for model_type in MODEL_TYPES}


def n_ctx_of(tokenizer, prefix=PREFIX) -> int:
    return len(tokenizer(prefix, add_special_tokens=False)["input_ids"])


def reference_prompts(tokenizer, names, length):
    """The tokenizer's own padding of the prompts (its side, its pad id, its mask): what the prompts must equal."""
    prompts = [f"{PREFIX} {name.replace('_', ' ')}." for name in names]
    return tokenizer(prompts, padding="max_length", max_length=length, return_attention_mask=True, return_tensors="pt")


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_prompts_follow_each_tokenizer(model_type, tokenizers):
    tokenizer, length = tokenizers[model_type], CONTEXT[model_type]
    n_ctx = n_ctx_of(tokenizer)
    prompts = build_prompt_ids(tokenizer, NAMES, PREFIX, n_ctx, length, backbone=model_type)
    expected = reference_prompts(tokenizer, NAMES, length)
    torch.testing.assert_close(prompts["input_ids"], expected["input_ids"], rtol=0, atol=0)
    mask = expected["attention_mask"]
    # EOS (the last real token): the last position the tokenizer's own mask marks.
    last = torch.tensor([int(row.nonzero().max()) for row in mask])
    torch.testing.assert_close(prompts["eos_index"], last, rtol=0, atol=0)
    if tokenizer.eos_token_id is not None:
        assert (prompts["input_ids"].gather(1, last[:, None]) == tokenizer.eos_token_id).all()
    # The context words sit at context_start .. context_start + n_ctx - 1 of every prompt.
    prefix_ids = torch.tensor(tokenizer(PREFIX, add_special_tokens=False)["input_ids"])
    for row, start in enumerate(prompts["context_start"].tolist()):
        assert torch.equal(prompts["input_ids"][row, start : start + n_ctx], prefix_ids)
    expected_start = EXPECTED_START[model_type]
    assert prompt_context_start(tokenizer, PREFIX) == expected_start
    if expected_start is not None:
        assert prompts["context_start"].tolist() == [expected_start] * len(NAMES)
    else:  # left padding: after each prompt's own padding
        assert prompts["context_start"].tolist() == (length - mask.sum(1)).tolist()
        assert len(set(prompts["context_start"].tolist())) > 1  # the case is exercised: starts differ per class
    # The name's tokens as they stand in the prompt (what middle/front move): the prompt's tokens less those of the
    # prompt without a name. For CLIP-like tokenizers that is the name tokenised alone (official CoOp `name_lens`).
    without_name = len(tokenizer(f"{PREFIX}.")["input_ids"])
    in_prompt = [len(tokenizer(f"{PREFIX} {name.replace('_', ' ')}.")["input_ids"]) - without_name for name in NAMES]
    assert prompts["name_length"].tolist() == in_prompt
    alone = [
        len(ids) for ids in tokenizer([n.replace("_", " ") for n in NAMES], add_special_tokens=False)["input_ids"]
    ]
    if model_type != "siglip2":  # Gemma's tokenizer has no prefix space: a name alone is cut differently
        assert in_prompt == alone
    # attention_mask only for a bidirectional backbone whose tokenizer returns one (SigLIP 2 here).
    if model_type == "siglip2":
        torch.testing.assert_close(prompts["attention_mask"], mask, rtol=0, atol=0)
    else:
        assert "attention_mask" not in prompts
    assert "attention_mask" not in build_prompt_ids(tokenizer, NAMES, PREFIX, n_ctx, length)  # no backbone named
    assert {key: value.dtype for key, value in prompts.items()} == dict.fromkeys(prompts, torch.long)


def test_the_reference_padding_tells_the_sides_apart(tokenizers):
    """The comparison above can fail: the same prompts padded on the other side differ."""
    tokenizer = tiny_tokenizer("siglip2")
    right = reference_prompts(tokenizer, NAMES, 64)["input_ids"]
    tokenizer.padding_side = "right"
    prompts = build_prompt_ids(tokenizer, NAMES, PREFIX, n_ctx_of(tokenizer), 64, backbone="siglip2")
    assert not torch.equal(prompts["input_ids"], right)
    assert prompts["context_start"].tolist() == [0] * len(NAMES) and prompt_context_start(tokenizer, PREFIX) == 0


def test_duplicate_names_follow_the_backbones_tokenizer(tokenizers):
    names = ["Cat", "cat", "dog"]
    # CLIP lowercases: its key rule and its ids refuse the pair; without a tokenizer the CLIP rule applies.
    with pytest.raises(ValueError, match=r"duplicate class name 'cat' at index 1: the CLIP tokenizer reads it"):
        validate_class_names(names)
    with pytest.raises(ValueError, match=r"duplicate class name 'cat' at index 1"):
        build_prompt_ids(tokenizers["clip"], names, PREFIX, 4)
    # MetaCLIP 2's XLM-R tokenizer is cased: it tells them apart, so nothing refuses them.
    metaclip = tokenizers["metaclip_2"]
    assert validate_class_names(names, metaclip) == names
    prompts = build_prompt_ids(metaclip, names, PREFIX, n_ctx_of(metaclip), 77, backbone="metaclip_2")
    assert not torch.equal(prompts["input_ids"][0], prompts["input_ids"][1])
    # SigLIP's tokenizer lowercases: identical prompt ids, refused by the ids themselves.
    siglip = tokenizers["siglip"]
    assert validate_class_names(names, siglip) == names  # the CLIP key rule is not applied to it
    with pytest.raises(ValueError, match=r"duplicate class name 'cat' at index 1: it tokenises to the same prompt"):
        build_prompt_ids(siglip, names, PREFIX, n_ctx_of(siglip), 64, backbone="siglip")
    with pytest.raises(ValueError, match=r"class name at index 1 is blank"):
        validate_class_names(["cat", " _ "], siglip)


@pytest.mark.parametrize(
    ("model_type", "name", "token"),
    [
        ("clip", "cat<|endoftext|>", "<|endoftext|>"),
        ("metaclip_2", "cat </s> dog", "</s>"),
        ("metaclip_2", "<s>cat", "<s>"),
        ("metaclip_2", "cat<pad>", "<pad>"),
        # (SigLIP: none; its canonicalisation drops punctuation, so "</s>" in a name reads as the letter "s".)
        ("siglip2", "cat<eos>", "<eos>"),
        ("siglip2", "<bos> cat", "<bos>"),
    ],
)
def test_names_holding_special_tokens_are_refused(model_type, name, token, tokenizers):
    tokenizer = tokenizers[model_type]
    with pytest.raises(ValueError, match=rf"class name {name!r} \(index 1\) contains the tokenizer's .*{token}"):
        build_prompt_ids(tokenizer, ["dog", name], PREFIX, n_ctx_of(tokenizer), CONTEXT[model_type])


def test_unknown_characters_are_a_name_not_a_special_token(tokenizers):
    siglip = tokenizers["siglip"]  # its tiny vocabulary has no CJK: the name reads as <unk>, as SigLIP's would
    prompts = build_prompt_ids(siglip, ["猫", "dog"], PREFIX, n_ctx_of(siglip), 64, backbone="siglip")
    assert siglip.unk_token_id in prompts["input_ids"][0].tolist()


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_too_long_prompts_are_refused_naming_the_class(model_type, tokenizers):
    tokenizer, length = tokenizers[model_type], CONTEXT[model_type]
    long_name = " ".join(["goldfish"] * 80)
    with pytest.raises(ValueError, match=rf"class name '{long_name}' makes a prompt of \d+ tokens .*{length} "):
        build_prompt_ids(tokenizer, ["dog", long_name], PREFIX, n_ctx_of(tokenizer), length)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_context_words_must_be_n_ctx_tokens(model_type, tokenizers):
    tokenizer = tokenizers[model_type]
    n_ctx = n_ctx_of(tokenizer)
    with pytest.raises(ValueError, match=rf"tokenise to {n_ctx} tokens, but n_ctx={n_ctx + 1}"):
        build_prompt_ids(tokenizer, NAMES, PREFIX, n_ctx + 1, CONTEXT[model_type])


def test_context_words_cut_differently_inside_the_prompt_are_refused():
    """A tokenizer whose pieces cross a space ("a c"): the words alone are not the tokens the context replaces."""
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("a c", -1.0)]
    pieces += [(char, -5.0) for char in "abcdefghijklmnopqrstuvwxyz ."]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    assert build_prompt_ids(tokenizer, ["dog"], "x a", 3, 16)["context_start"].tolist() == [0]  # "a dog": no merge
    with pytest.raises(ValueError, match=r"context words 'x a' tokenise differently inside the prompt of class 'cat'"):
        build_prompt_ids(tokenizer, ["dog", "cat"], "x a", 3, 16)


def test_a_tokenizer_without_pad_token_is_refused(tokenizers):
    tokenizer = tiny_tokenizer("metaclip_2")
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match=r"the tokenizer \(XLMRobertaTokenizer\) has no pad token"):
        build_prompt_ids(tokenizer, NAMES, PREFIX, n_ctx_of(tokenizer), 77)


# ---------------------------------------------------------------------------------------------- processor


@pytest.fixture(scope="module")
def backbone_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    return {model_type: save_tiny_backbone(root / model_type, model_type) for model_type in MODEL_TYPES}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_processor_round_trip_per_backbone(model_type, tokenizers, tmp_path):
    tokenizer, length = tokenizers[model_type], CONTEXT[model_type]
    n_ctx = n_ctx_of(tokenizer)
    processor = CoCoOpProcessor(
        tiny_image_processor(model_type), tokenizer, PREFIX, n_ctx, context_length=length, backbone_type=model_type
    )
    processor.save_pretrained(tmp_path)
    for loaded in (CoCoOpProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded.tokenizer) is type(tokenizer)
        assert type(loaded.image_processor) is type(processor.image_processor)
        assert loaded.tokenizer.padding_side == tokenizer.padding_side
        assert (loaded.prompt_prefix, loaded.n_ctx, loaded.context_length, loaded.backbone_type) == (
            PREFIX,
            n_ctx,
            length,
            model_type,
        )
        expected = processor(class_names=NAMES)
        got = loaded(class_names=NAMES)
        assert set(got) == set(expected)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    assert set(expected) == {"input_ids", "eos_index", "name_length", "context_start"} | (
        {"attention_mask"} if model_type == "siglip2" else set()
    )


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_processor_images_and_text_per_backbone(model_type, tokenizers):
    tokenizer, length = tokenizers[model_type], CONTEXT[model_type]
    processor = CoCoOpProcessor(
        tiny_image_processor(model_type), tokenizer, PREFIX, n_ctx_of(tokenizer), length, backbone_type=model_type
    )
    image = Image.new("RGB", (40, 24), (200, 30, 30))
    pixels = processor(images=[image, image])
    if model_type == "siglip2":  # patches as rows, with the patch mask and grid shape the vision tower needs
        assert set(pixels) == {"pixel_values", "pixel_attention_mask", "spatial_shapes"}
        assert pixels["pixel_values"].shape == (2, 16, 3 * 8 * 8) and pixels["spatial_shapes"].shape == (2, 2)
    else:  # CLIP family crops to a square; SigLIP resizes to it without a crop
        assert set(pixels) == {"pixel_values"} and pixels["pixel_values"].shape == (2, 3, 32, 32)
    direct = processor.image_processor([image, image], return_tensors="pt")
    for key in pixels:
        torch.testing.assert_close(pixels[key], direct[key], rtol=0, atol=0)
    texts = processor(text=["a photo of a cat.", "dog"])
    if model_type.startswith("siglip"):  # padded to the text context, as SigLIP was trained
        assert texts["input_ids"].shape == (2, length)
    else:
        assert texts["input_ids"].shape[1] < length
    ids = tokenizer(["a photo of a cat.", "dog"], add_special_tokens=True)["input_ids"]
    for row, expected in zip(texts["input_ids"].tolist(), ids, strict=True):
        assert [i for i in row if i != tokenizer.pad_token_id] == [i for i in expected if i != tokenizer.pad_token_id]


def test_processor_refuses_an_unknown_backbone_type(tokenizers):
    with pytest.raises(ValueError, match=r"backbone model_type 'blip' is not supported"):
        CoCoOpProcessor(tiny_image_processor("clip"), tokenizers["clip"], PREFIX, 4, backbone_type="blip")


# ---------------------------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_backbone_and_tokenizer_load_with_their_own_classes(model_type, backbone_dirs, tokenizers):
    folder = backbone_dirs[model_type]
    model = load_backbone(folder)
    classes = {"clip": CLIPModel, "metaclip_2": MetaClip2Model, "siglip": SiglipModel, "siglip2": Siglip2Model}
    assert type(model) is classes[model_type]
    tokenizer = CoCoOpProcessor.load_backbone_tokenizer(folder, model.config.text_config.vocab_size)
    assert type(tokenizer) is type(AutoTokenizer.from_pretrained(folder)) and len(tokenizer) == len(
        tokenizers[model_type]
    )
    assert CoCoOpProcessor.load_clip_tokenizer(folder, model.config.text_config.vocab_size).get_vocab() == (
        tokenizer.get_vocab()
    )  # the old name loads the same
    with pytest.raises(OSError, match=r"no usable (CLIP )?tokenizer in .* vocab_size 3"):
        CoCoOpProcessor.load_backbone_tokenizer(folder, 3)  # more tokens than the text tower has ids


@pytest.mark.parametrize("model_type", ["siglip", "metaclip_2"])
def test_a_folder_without_tokenizer_files_is_refused(model_type, backbone_dirs, tmp_path):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).symlink_to(backbone_dirs[model_type] / name)
    with pytest.raises((OSError, ValueError)):
        CoCoOpProcessor.load_backbone_tokenizer(folder, 10_000)


def test_load_backbone_checks_the_config_first(backbone_dirs, tmp_path, monkeypatch):
    import json

    folder = tmp_path / "edited"
    folder.mkdir()
    source = backbone_dirs["siglip2"]
    for item in source.iterdir():
        (folder / item.name).symlink_to(item)
    config = json.loads((source / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] = 100_000
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(config))
    built = []
    monkeypatch.setattr(Siglip2Model, "__init__", lambda self, *a, **k: built.append(1))
    with pytest.raises(ValueError, match=r"text_config\.num_hidden_layers` must be an integer from 1 to 64"):
        load_backbone(folder)
    config["text_config"]["num_hidden_layers"] = 2
    config["model_type"] = "blip"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"model_type 'blip' is not supported"):
        load_backbone(folder)
    assert not built


def test_clip_name_length_is_the_official_count(tokenizers):
    """Official CoOp `name_lens`: the name tokenised alone, also where its last '.' merges with the prompt's ("..")."""
    clip = tokenizers["clip"]
    prompts = build_prompt_ids(clip, ["Mr.", "cat"], PREFIX, 4)
    assert prompts["name_length"].tolist() == [
        len(clip(n, add_special_tokens=False)["input_ids"]) for n in ["Mr.", "cat"]
    ]
    in_prompt = len(clip(f"{PREFIX} Mr..")["input_ids"]) - len(clip(f"{PREFIX}.")["input_ids"])
    assert prompts["name_length"].tolist()[0] == 2 != in_prompt  # the case differs: the other count would fail
