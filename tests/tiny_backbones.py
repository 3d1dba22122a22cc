"""
Tiny random dual encoders of the four supported backbones, with tokenizers that follow each real tokenizer's rules.

`tiny_backbone(model_type, seed=0) -> (model, tokenizer, image_processor)` and `save_tiny_backbone(path, model_type)`
(a local checkpoint folder that `from_pretrained` / `AutoTokenizer` / `AutoImageProcessor` load offline).

Widths differ on purpose so that a width read from the wrong place fails: CLIP / MetaCLIP 2 text 32, vision 48,
projection 40; SigLIP / SigLIP 2 text 32, text head (`projection_size`) 48 = vision 48. 2 layers, 4 heads, 32 px
images in 8 px patches, the real text contexts (CLIP family 77, SigLIP family 64).

The tokenizers (nothing downloads: the non-CLIP ones are trained here, offline and deterministically, with the
`tokenizers` package on `CORPUS`; their vocabularies are tiny but every rule that decides where tokens go is the real
one, read in transformers 5.24's tokenizer classes):

- "clip": the real CLIP BPE tokenizer (`tests/fixtures/clip-tokenizer`, `CLIPTokenizer`): `<|startoftext|>` first,
  `<|endoftext|>` last and as padding (pad id = eos id 49407), right padding, lowercased, `model_input_names`
  input_ids + attention_mask.
- "metaclip_2": stands for MetaCLIP 2's XLM-RoBERTa sentencepiece tokenizer (`XLMRobertaTokenizer`, what
  `AutoTokenizer` maps `metaclip_2` to): the real class, given a Unigram vocabulary trained here. Kept: `<s>`=0,
  `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`; `<s> ... </s>` around every text; pad `<pad>`; right padding; cased (no
  lowercasing); Metaspace pre-tokenizer with a prefix space; input_ids + attention_mask. (Not kept: the
  precompiled NFKC normaliser of the real sentencepiece model.) Config: bos 0, eos 2 (MetaClip2TextModel pools at
  the FIRST `eos_token_id`), pad 1.
- "siglip": stands for SigLIP's T5-style sentencepiece tokenizer (`SiglipTokenizer`, which needs `sentencepiece`,
  not installed here: a `PreTrainedTokenizerFast` carries the same rules). Kept: `<pad>`=0, `</s>`=1, `<unk>`=2;
  NO BOS; `</s>` appended; pad token `</s>` (pad id = eos id = 1); right padding; SigLIP's canonicalisation
  (lowercase, punctuation removed, stripped: `SiglipTokenizer.canonicalize_text`, so the prompt's final "." gives
  no token); model_max_length 64; `model_input_names = ["input_ids"]` as the released checkpoints' tokenizers
  (converted with that setting because SigLIP was trained attending to padding): no attention mask.
- "siglip2": stands for SigLIP 2's Gemma tokenizer (`Siglip2Tokenizer`, the real class, given a BPE vocabulary
  trained here). Kept: `<pad>`=0, `<eos>`=1, `<bos>`=2, `<unk>`=3, `<mask>`=4; lowercased (the class adds
  `normalizers.Lowercase`); spaces as "▁"; no BOS, `<eos>` appended (the released checkpoints' setting:
  add_bos_token False, add_eos_token True); pad `<pad>`; padding side LEFT and `model_input_names` input_ids +
  attention_mask, as the `Siglip2Tokenizer` class says (a released checkpoint's tokenizer_config may override both;
  left padding + mask is the harder case for prompts: the context start varies per class and padding is masked).
"""

import json
import math
import string
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTokenizer,
    MetaClip2Config,
    MetaClip2Model,
    PreTrainedTokenizerFast,
    Siglip2Config,
    Siglip2ImageProcessor,
    Siglip2Model,
    Siglip2Tokenizer,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
    XLMRobertaTokenizer,
)


CLIP_TOKENIZER_DIR = Path(__file__).parent / "fixtures" / "clip-tokenizer"
MODEL_TYPES = ("clip", "metaclip_2", "siglip", "siglip2")
IMAGE_SIZE, PATCH_SIZE = 32, 8
TEXT_WIDTH, VISION_WIDTH, CLIP_PROJECTION = 32, 48, 40

# What the tiny tokenizers learn their vocabularies from: the class names and prompt words the tests use (so they
# become a few tokens each), plus the alphabet, digits and punctuation (so any other text still tokenises).
CORPUS = [
    "a photo of a tench.",
    "a photo of a goldfish.",
    "a photo of a great white shark.",
    "a photo of a tiger shark.",
    "a photo of a hammerhead.",
    "a photo of a electric ray.",
    "a photo of a stingray.",
    "This is a photo of cock.",
    "This is a photo of hen.",
    "This is a photo of ostrich.",
    "This is a photo of brambling.",
    "This is a photo of goldfinch.",
    "This is a photo of house finch.",
    "This is a photo of junco.",
    "This is a photo of indigo bunting.",
    "X X X X a photo of the cat dog bird fish car plane flower.",
    "X X X X X X X X X X X X X X X X X X X X X X X X X X X X X X X X.",
    "a bad photo of a small big good nice clean dirty dark bright type of pet.",
    string.ascii_lowercase + " " + string.ascii_uppercase + " " + string.digits + " " + string.punctuation,
]
# Whole pieces of the Unigram vocabularies (see `_unigram_vocab`): CoOp's placeholder "X", CLIP's and SigLIP's templates.
PROMPT_WORDS = ("X", "a", "photo", "of", "This", "is")


def _trained(tokenizer: Tokenizer, trainer) -> dict:
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    return json.loads(tokenizer.to_str())["model"]


def _unigram_vocab(
    tokenizer: Tokenizer, trainer, specials: list[str], lowercase: bool = False
) -> list[tuple[str, float]]:
    """
    A trained Unigram vocabulary in a canonical order: the trainer (multi-threaded) returns the same pieces with scores
    that differ in the last bits and ties in any order, so scores are rounded and pieces sorted (specials first).
    """
    vocab = _trained(tokenizer, trainer)["vocab"]
    assert [piece for piece, _ in vocab[: len(specials)]] == specials, vocab[: len(specials)]
    pieces = sorted((-round(score, 6), piece) for piece, score in vocab[len(specials) :])
    # The prompt words as whole pieces, as in a real vocabulary (on a few lines the trainer keeps "▁x" split in two,
    # which would make n_ctx placeholders 2 n_ctx tokens); class names stay split into several pieces.
    trained = {piece for _, piece in pieces}
    wanted = dict.fromkeys(f"▁{word.lower() if lowercase else word}" for word in PROMPT_WORDS)
    words = [(piece, -pieces[0][0]) for piece in wanted if piece not in trained]  # scored as the best trained piece
    return [(piece, 0.0) for piece in specials] + words + [(piece, -negative) for negative, piece in pieces]


def metaclip_2_tokenizer() -> XLMRobertaTokenizer:
    """The real `XLMRobertaTokenizer` class with a tiny Unigram vocabulary (specials at XLM-R's ids 0..4)."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend = Tokenizer(models.Unigram())
    # The pre-tokenizer XLMRobertaTokenizer builds (add_prefix_space=True), so the trained pieces fit it.
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=160, special_tokens=specials, unk_token="<unk>", shrinking_factor=0.75
    )
    return XLMRobertaTokenizer(vocab=_unigram_vocab(backend, trainer, specials), model_max_length=77)


def siglip_tokenizer() -> PreTrainedTokenizerFast:
    """SigLIP's T5-style rules on a tiny Unigram vocabulary: canonicalised text, `</s>` appended, pad = `</s>`."""
    specials = ["<pad>", "</s>", "<unk>"]
    backend = Tokenizer(models.Unigram())
    # SiglipTokenizer.canonicalize_text: lowercase, drop string.punctuation, strip.
    backend.normalizer = normalizers.Sequence(
        [
            normalizers.Lowercase(),
            normalizers.Replace(Regex("[" + "".join("\\" + c for c in string.punctuation) + "]"), ""),
            normalizers.Strip(),
        ]
    )
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=120, special_tokens=specials, unk_token="<unk>", shrinking_factor=0.75
    )
    vocab = _unigram_vocab(backend, trainer, specials, lowercase=True)
    backend.model = models.Unigram(vocab, unk_id=2, byte_fallback=False)
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    # SiglipTokenizer.build_inputs_with_special_tokens: the text, then `</s>` (no BOS).
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return siglip_fast_tokenizer(backend)


def siglip_fast_tokenizer(backend: Tokenizer) -> PreTrainedTokenizerFast:
    """A SigLIP-rule tokenizer around `backend`: `</s>` is EOS and pad, right padding to 64, no attention mask (the
    released SigLIP tokenizers return `input_ids` only)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        pad_token="</s>",
        unk_token="<unk>",
        model_max_length=64,
        padding_side="right",
        model_input_names=["input_ids"],
    )


def siglip2_tokenizer() -> Siglip2Tokenizer:
    """The real `Siglip2Tokenizer` class (Gemma BPE, lowercased) with a tiny BPE vocabulary; `<eos>` appended."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    # What Siglip2Tokenizer builds: lowercase, spaces as "▁", split after each space.
    backend.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(" ", "▁")])
    # Merges are learned inside words and never across punctuation, as in Gemma's vocabulary ("shark" + "." stay two).
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(pattern="▁", behavior="merged_with_next"), pre_tokenizers.Punctuation()]
    )
    trainer = trainers.BpeTrainer(vocab_size=160, special_tokens=specials, show_progress=False)
    model = _trained(backend, trainer)
    vocab = model["vocab"]
    assert [token for token, index in sorted(vocab.items(), key=lambda item: item[1])[:5]] == specials
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    return Siglip2Tokenizer(vocab=vocab, merges=merges, add_bos_token=False, add_eos_token=True, model_max_length=64)


def tiny_tokenizer(model_type: str):
    if model_type == "clip":
        return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)
    return {"metaclip_2": metaclip_2_tokenizer, "siglip": siglip_tokenizer, "siglip2": siglip2_tokenizer}[
        _checked(model_type)
    ]()


def _checked(model_type: str) -> str:
    if model_type not in MODEL_TYPES:
        raise ValueError(f"no tiny backbone {model_type!r}: use one of {MODEL_TYPES}")
    return model_type


def _tower(hidden: int, **fields) -> dict:
    return dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4, **fields)


def tiny_config(model_type: str, tokenizer):
    """The tiny config of `model_type`, its token ids (bos/eos/pad, vocabulary size) the tokenizer's."""
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if model_type in ("clip", "metaclip_2"):
        config_class = CLIPConfig if model_type == "clip" else MetaClip2Config
        return config_class(
            text_config=_tower(TEXT_WIDTH, max_position_embeddings=77, **ids),
            vision_config=_tower(VISION_WIDTH, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
            projection_dim=CLIP_PROJECTION,
        )
    text = _tower(TEXT_WIDTH, max_position_embeddings=64, projection_size=VISION_WIDTH, **ids)
    if model_type == "siglip":
        vision = _tower(VISION_WIDTH, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
        return SiglipConfig(text_config=text, vision_config=vision)
    # SigLIP 2 (NaFlex): `num_patches` is the position-embedding grid (4 x 4 patches of 8 px), resized per image.
    vision = _tower(VISION_WIDTH, patch_size=PATCH_SIZE, num_patches=(IMAGE_SIZE // PATCH_SIZE) ** 2)
    return Siglip2Config(text_config=text, vision_config=vision)


def tiny_image_processor(model_type: str):
    if model_type in ("clip", "metaclip_2"):
        return CLIPImageProcessor(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )
    if model_type == "siglip":  # resize to the square, no crop, mean/std 0.5 (the class defaults)
        return SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return Siglip2ImageProcessor(patch_size=PATCH_SIZE, max_num_patches=(IMAGE_SIZE // PATCH_SIZE) ** 2)


def tiny_backbone(model_type: str, seed: int = 0):
    """`(model, tokenizer, image_processor)`: a tiny random `model_type` backbone in eval mode, fp32."""
    tokenizer = tiny_tokenizer(_checked(model_type))
    config = tiny_config(model_type, tokenizer)
    model_class = {"clip": CLIPModel, "metaclip_2": MetaClip2Model, "siglip": SiglipModel, "siglip2": Siglip2Model}
    with torch.random.fork_rng(devices=[]):  # the global RNG of the caller is left as it was
        torch.manual_seed(seed)
        model = model_class[model_type](config).eval()
        if model_type in ("siglip", "siglip2"):
            # SigLIP initialises scale and bias to 0; the released values (scale log 10, bias -10) are far from it.
            # Distinct non-zero values make a test that forgets `logit_bias` or `logit_scale` fail.
            with torch.no_grad():
                model.logit_scale.fill_(math.log(10.0))
                model.logit_bias.fill_(-1.5)
    return model, tokenizer, tiny_image_processor(model_type)


def save_tiny_backbone(path, model_type: str, seed: int = 0) -> Path:
    """Write the tiny `model_type` backbone, its tokenizer and image processor to `path` (a local checkpoint)."""
    model, tokenizer, image_processor = tiny_backbone(model_type, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    return Path(path)
