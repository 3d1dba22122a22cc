"""
CoCoOp on the other backbones (SigLIP, MetaCLIP 2, CLIP): throughput, peak memory and agreement of CoCoOpModel
against the per-image reference of the official code, on the same random weights.

- reference: the official CoCoOp `CustomCLIP.forward` way, a Python loop over images: each image's context is
  `ctx + meta_net(image)`, all classes' full prompts are assembled (padded to the text context: CLIP family 77,
  SigLIP 64) and run through the backbone's own text layers (`tests/reference_backbones.py`, which calls nothing in
  cocoop_hf); logits with the backbone's rule (`logit_scale.exp() * cos`, SigLIP `+ logit_bias`);
- ours: `CoCoOpModel(pixel_values=..., **model.class_prompts(names))` as shipped.

Shapes (`--preset cpu`: "mid"): text 256 wide x 6 layers x 8 heads, vision 384 x 6 layers x 6 heads on 96 px images in
16 px patches, 4x MLPs; joint width 256 for the CLIP family (`projection_dim`). SigLIP has no image projection: its
text head maps to the vision width, so its joint width is 384 (`text_config.projection_size` = vision hidden size).
`--preset smoke`: the tiny configs of `tests/tiny_backbones.py` (text 32, vision 48, 2 layers), 10 classes.

Tokenizers: the tiny offline ones of `tests/tiny_backbones.py` follow each real tokenizer's rules (SigLIP: T5-style,
no BOS, `</s>` appended, pad `</s>`, right padding, no attention mask; MetaCLIP 2: XLM-R `<s> ... </s>`, pad `<pad>`)
but learn their vocabularies from a few lines, where an ImageNet class name would fall apart into characters. Here
they are retrained (same rules, `train_new_from_iterator`) on the 1000 ImageNet prompts, a name's word made a whole
piece where the real CLIP BPE has it as one token (rarer words stay cut), so that names tokenise to realistic
lengths (100 names: 2.37 tokens on average with either, 2.04 with CLIP's BPE). Checked on every row: the mean token
count of its names must lie within 0.5x-2x of the real CLIP BPE's (`tests/fixtures/clip-tokenizer`); both are
printed. CLIP uses its real tokenizer.

Each row first checks that the two paths agree (fp32 logits within 1e-5 of max|ref|; training rows: the gradient of
the first step's loss with respect to the whole prompt learner, as one vector, within 1e-4 of its max|ref|), then
times the steps interleaved in one process (median of the repeats) and reports images/s, the ratio ours / ref and
each path's peak memory. Why one vector and not each tensor (as bench_cocoop.py): the meta-net's first bias gets the
sum over the batch of its units' gradients, which can cancel. Seen on the tiny SigLIP (10 classes, 4 images, a
cruder vocabulary): its max was 80x below the second bias's, and fp32 rounding alone moved it by 1e-3 of that max
(ours in fp64 agreed with the fp32 reference to 2e-4 of it, ours in fp32 to 1e-3). A gradient missing from any
tensor still fails unless it is under 1e-4 of the largest; the JSON keeps each tensor's own relative difference.

    python benchmarks/bench_backbones.py --preset cpu --backbones siglip metaclip_2 --output cpu.json
    python benchmarks/bench_backbones.py --preset smoke                 # seconds

Exit status 1 when a row's paths disagree (FAIL). See benchmarks/README.md.
"""

import argparse
import json
import math
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from transformers import XLMRobertaTokenizer


REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):  # the references live in tests/; bench_cocoop's helpers beside this file
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench_cocoop import (  # noqa: E402
    CLASS_NAMES_FILE,
    GRAD_TOL,
    LOGIT_TOL_FP32,
    PeakMemory,
    _rel_diff,
    environment,
    finish,
    load_class_names,
    time_interleaved,
)

from cocoop_hf import CoCoOpConfig, CoCoOpModel  # noqa: E402
from cocoop_hf.processing_cocoop import prompt_context_start  # noqa: E402
from tests.reference_backbones import (  # noqa: E402
    CAUSAL,
    reference_features_for_context,
    reference_image_embeds,
    reference_logits,
    reference_meta_net,
    reference_prompts,
)
from tests.tiny_backbones import siglip_fast_tokenizer, tiny_config, tiny_tokenizer  # noqa: E402


BACKBONES = ("siglip", "metaclip_2", "clip")
MODES = ("eval", "train")
N_CTX = 4
PREFIX = " ".join(["X"] * N_CTX)  # CoOp's placeholder words (ctx_init=None): the context replaces them
REALISTIC = (0.5, 2.0)  # mean name tokens / the real CLIP BPE's mean on the same names


@dataclass(frozen=True)
class RowSpec:
    backbone: str
    size: str  # "tiny" or "mid"
    classes: int
    batch: int
    mode: str
    ref_batch: int  # the reference's batch (<= batch): its per-image loop is slow
    repeats: int
    warmup: int


def _preset(backbones, size, classes, batch, ref_batch, repeats, warmup):
    return [
        RowSpec(b, size, classes, batch, mode, ref_batch[mode], repeats, warmup) for b in backbones for mode in MODES
    ]


PRESETS = {  # functions of the chosen backbones
    "smoke": lambda bs: _preset(bs, "tiny", 10, 4, {"eval": 4, "train": 4}, repeats=1, warmup=1),
    # A 2-core CPU, one thread: minutes per backbone. The reference runs 4 / 2 images (as bench_cocoop's mid rows).
    "cpu": lambda bs: _preset(bs, "mid", 100, 8, {"eval": 4, "train": 2}, repeats=3, warmup=2),
}


# ---------------------------------------------------------------------------------------------- backbone and tokens


def _whole_word_pieces(data: dict, words, specials: int) -> None:
    """
    Make `words` (pre-tokenised, "▁"-prefixed) whole pieces of a Unigram vocabulary, scored as its best piece (the
    trainer, on 2000 lines, scores "▁" alone so high that "▁x" would come out as "▁" + "x").
    """
    vocab = data["model"]["vocab"]
    best = max(score for _, score in vocab[specials:])
    wanted = dict.fromkeys(words)
    for entry in vocab[specials:]:
        if entry[0] in wanted:
            entry[1] = best
    known = {piece for piece, _ in vocab}
    vocab.extend([word, best] for word in wanted if word not in known)


def bench_tokenizer(model_type: str):
    """The tiny tokenizer of `model_type` retrained on the ImageNet prompts (see the module docstring)."""
    base = tiny_tokenizer(model_type)
    if model_type == "clip":
        return base  # the real CLIP BPE tokenizer
    names = json.loads(CLASS_NAMES_FILE.read_text(encoding="utf-8"))
    corpus = [f"{PREFIX} {name}." for name in names] + [f"a photo of a {name}." for name in names]
    trained = base.train_new_from_iterator(corpus, vocab_size=4000)
    backend = trained.backend_tokenizer
    normalise = backend.normalizer.normalize_str if backend.normalizer is not None else str
    # A word of the placeholders and names is a whole piece where the real CLIP BPE (49k merges) has it as one token;
    # the others stay cut into the trained sub-word pieces, as a real vocabulary cuts rare words.
    clip = tiny_tokenizer("clip")
    texts = [PREFIX, *names]
    pieces = [piece for text in texts for piece, _ in backend.pre_tokenizer.pre_tokenize_str(normalise(text))]
    words = [piece for piece in pieces if len(clip(piece.lstrip("▁"), add_special_tokens=False)["input_ids"]) == 1]
    data = json.loads(backend.to_str())
    if model_type == "metaclip_2":  # specials <s> <pad> </s> <unk> <mask> at XLM-R's ids 0..4, kept by the trainer
        _whole_word_pieces(data, words, 5)
        return XLMRobertaTokenizer(vocab=[tuple(pair) for pair in data["model"]["vocab"]], model_max_length=77)
    if model_type == "siglip":  # specials <pad> </s> <unk>; the rules of tiny_backbones.siglip_tokenizer
        _whole_word_pieces(data, words, 3)
        return siglip_fast_tokenizer(Tokenizer.from_str(json.dumps(data)))
    raise ValueError(f"--backbones: {model_type!r} is not benchmarked here; use some of {BACKBONES}.")


def name_lengths(tokenizer, names) -> list[int]:
    return [len(tokenizer(name, add_special_tokens=False)["input_ids"]) for name in names]


def check_realistic(tokenizer, clip_tokenizer, names) -> dict:
    """Mean/max token counts of the names with `tokenizer` and with the real CLIP BPE; a ValueError when unrealistic."""
    ours, clip = name_lengths(tokenizer, names), name_lengths(clip_tokenizer, names)
    stats = {"name_tokens_mean": statistics.mean(ours), "name_tokens_max": max(ours)}
    stats.update(clip_name_tokens_mean=statistics.mean(clip), clip_name_tokens_max=max(clip))
    ratio = stats["name_tokens_mean"] / stats["clip_name_tokens_mean"]
    if not REALISTIC[0] <= ratio <= REALISTIC[1]:
        raise ValueError(f"class names tokenise to {ratio:.2f}x the real CLIP BPE's mean length (want {REALISTIC}).")
    return stats


def backbone_config(model_type: str, size: str, tokenizer):
    """The tiny config of `model_type` (token ids from `tokenizer`), grown to "mid" (module docstring)."""
    config = tiny_config(model_type, tokenizer)
    if size == "tiny":
        return config
    data = config.to_dict()
    text, vision = data["text_config"], data["vision_config"]
    text.update(hidden_size=256, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=8)
    vision.update(hidden_size=384, intermediate_size=1536, num_hidden_layers=6, num_attention_heads=6)
    vision.update(image_size=96, patch_size=16)
    if CAUSAL[model_type]:
        data["projection_dim"] = 256
    else:
        text["projection_size"] = vision["hidden_size"]  # SigLIP: text head -> the vision tower's width
    return type(config).from_dict(data)


def build_model(model_type: str, size: str, tokenizer, seed: int, text_chunk_tokens=None) -> CoCoOpModel:
    """
    CoCoOp on a random backbone, with a random context (N(0, 0.02)) and meta-net (PyTorch's Linear init) so that every
    class prompt and every image's bias differ; SigLIP's logit scale and bias set to distinct non-zero values (its init
    is 0), so that a path that forgets the bias fails. `text_chunk_tokens`: the config's (None: its default).
    """
    options = {} if text_chunk_tokens is None else {"text_chunk_tokens": text_chunk_tokens}
    torch.manual_seed(seed)
    config = backbone_config(model_type, size, tokenizer)
    model = CoCoOpModel(
        CoCoOpConfig(
            backbone_config=config.to_dict(),
            ctx_init=None,
            n_ctx=N_CTX,
            prompt_context_start=prompt_context_start(tokenizer, PREFIX),
            **options,
        )
    )
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        model.prompt_learner.ctx.copy_(torch.randn(model.prompt_learner.ctx.shape, generator=generator) * 0.02)
        for linear in (m for m in model.prompt_learner.modules() if isinstance(m, torch.nn.Linear)):
            for tensor in (linear.weight, linear.bias):
                tensor.copy_((torch.rand(tensor.shape, generator=generator) * 2 - 1) * linear.in_features**-0.5)
        if not CAUSAL[model_type]:
            model.clip.logit_scale.fill_(math.log(10.0))
            model.clip.logit_bias.fill_(-1.5)
    return model.eval()


# ---------------------------------------------------------------------------------------------- the two paths


def reference_forward(model: CoCoOpModel, prompts, pixel_values) -> torch.Tensor:
    """Official CoCoOp, per image: ctx + meta_net(image) -> all class prompts -> the backbone's own text layers."""
    backbone = model.clip
    state = dict(model.prompt_learner.named_parameters())
    with torch.no_grad():  # the frozen image encoder
        image_embeds = reference_image_embeds(backbone, {"pixel_values": pixel_values})
    texts = [
        reference_features_for_context(backbone, prompts, state["ctx"] + reference_meta_net(state, image), N_CTX)
        for image in image_embeds
    ]
    return reference_logits(backbone, image_embeds, torch.stack(texts))


def make_step(model: CoCoOpModel, path: str, mode: str, prompts, pixel_values, labels):
    """One step: eval (logits under no_grad) or train (fp32 CE, backward, the official SGD unless `update=False`)."""
    optimizer = torch.optim.SGD(model.prompt_learner.parameters(), lr=0.002, momentum=0.9, weight_decay=5e-4)

    def forward():
        if path == "ours":
            return model(pixel_values=pixel_values, **prompts).logits
        return reference_forward(model, prompts, pixel_values)

    def step(update: bool = True):
        if mode == "eval":
            with torch.no_grad():
                return forward()
        optimizer.zero_grad(set_to_none=True)
        logits = forward()
        F.cross_entropy(logits.float(), labels).backward()
        if update:
            optimizer.step()
        return logits.detach()

    return step


def run_row(model: CoCoOpModel, spec: RowSpec, tokenizer, seed: int) -> dict:
    row = {**asdict(spec), "tolerance": f"logits {LOGIT_TOL_FP32:g} x max|ref|, grads {GRAD_TOL['fp32']:g}"}
    names = load_class_names(spec.classes)
    ours_prompts = dict(model.class_prompts(names, tokenizer=tokenizer))
    context = model.config.backbone_config.text_config.max_position_embeddings
    ref_prompts = reference_prompts(tokenizer, names, PREFIX, N_CTX, context, CAUSAL[spec.backbone])
    # Both paths get the same prompts: the reference builds its own from the tokenizer, the model's must match.
    for key in ("input_ids", "eos_index", "context_start"):
        if not torch.equal(ours_prompts[key], getattr(ref_prompts, key)):
            raise AssertionError(f"the model's class prompts differ from the reference's in {key!r}")
    row["prompt_tokens_max"] = int(ref_prompts.eos_index.max()) + 1
    row["text_chunk_tokens"] = model.config.text_chunk_tokens
    model.train(spec.mode == "train")
    generator = torch.Generator().manual_seed(seed)
    size = model.config.backbone_config.vision_config.image_size
    pixels = torch.randn(spec.batch, 3, size, size, generator=generator)
    labels = torch.randint(0, spec.classes, (spec.batch,), generator=generator)
    initial = {k: v.detach().clone() for k, v in model.prompt_learner.state_dict().items()}
    rb = spec.ref_batch

    def reset():  # both paths start from the same prompt-learner tensors
        model.prompt_learner.load_state_dict(initial)
        model.zero_grad(set_to_none=True)

    def grads():
        return {n: p.grad.clone() for n, p in model.prompt_learner.named_parameters() if p.grad is not None}

    ours = make_step(model, "ours", spec.mode, ours_prompts, pixels, labels)
    ours_small = make_step(model, "ours", spec.mode, ours_prompts, pixels[:rb], labels[:rb])
    ref = make_step(model, "ref", spec.mode, ref_prompts, pixels[:rb], labels[:rb])

    # Agreement on the first rb images (ours at the reference's batch and at its own); first steps give peak memory.
    reset()
    with PeakMemory(torch.device("cpu")) as memory:
        ref_out = ref(update=False)
    row["ref_peak_mib"], ref_grads = memory.peak_mib, grads()
    reset()
    ours_out, ours_grads = ours_small(update=False), grads()
    reset()
    with PeakMemory(torch.device("cpu")) as memory:
        ours_batch_out = ours(update=False)[:rb]
    row["ours_peak_mib"] = memory.peak_mib
    row["max_rel_diff"] = max(_rel_diff(out, ref_out) for out in (ours_out, ours_batch_out))
    passed = row["max_rel_diff"] <= LOGIT_TOL_FP32
    row["grad_rel_diff"] = None
    if spec.mode == "train":
        # The prompt learner's gradient as one vector: max |ours - ref| over all its tensors / max |ref| (see the
        # module docstring); a gradient that does not reach ours counts as zero. Per tensor, for the record.
        diffs = {n: (ours_grads.get(n, 0 * g) - g).abs().max().item() for n, g in ref_grads.items()}
        scale = max(g.abs().max().item() for g in ref_grads.values())
        row["grad_rel_diff"] = max(diffs.values()) / max(scale, 1e-30)
        row["grad_rel_diff_per_tensor"] = {
            n: diffs[n] / max(g.abs().max().item(), 1e-30) for n, g in ref_grads.items()
        }
        passed = passed and row["grad_rel_diff"] <= GRAD_TOL["fp32"]
    row["pass"] = "PASS" if passed else "FAIL"

    reset()
    for _ in range(spec.warmup - 1):  # the agreement step counted as one warm-up
        ours(), ref()
    times = time_interleaved([ours, ref], spec.repeats, torch.device("cpu"))
    row["ours_img_s"], row["ours_times_s"] = spec.batch / statistics.median(times[0]), times[0]
    row["ref_img_s"], row["ref_times_s"] = rb / statistics.median(times[1]), times[1]
    row["ratio"] = row["ours_img_s"] / row["ref_img_s"]
    reset()
    return row


# ---------------------------------------------------------------------------------------------- table and main

COLUMNS = {  # header: row field, format
    "backbone": ("backbone", ""), "size": ("size", ""), "classes": ("classes", ""), "batch": ("batch", ""),
    "ref b": ("ref_batch", ""), "mode": ("mode", ""),
    "chunk tok": ("text_chunk_tokens", ""), "name tok": ("name_tokens_mean", ".2f"),
    "CLIP name tok": ("clip_name_tokens_mean", ".2f"), "max prompt": ("prompt_tokens_max", ""),
    "ref img/s": ("ref_img_s", ".2f"), "ours img/s": ("ours_img_s", ".2f"), "ratio": ("ratio", ".2f"),
    "ref MiB": ("ref_peak_mib", ".0f"), "ours MiB": ("ours_peak_mib", ".0f"), "rel diff": ("max_rel_diff", ".1e"),
    "grad diff": ("grad_rel_diff", ".1e"), "pass": ("pass", ""),
}  # fmt: skip


def format_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = ("-" if row.get(key) is None else format(row[key], spec) for key, spec in COLUMNS.values())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=["siglip"])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1: steady on a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--text-chunk-tokens",
        type=int,
        help="ours: config.text_chunk_tokens (tokens per text-tower call; default: its)",
    )
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    for name in ("threads", "text_chunk_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}.")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args) -> int:
    env = environment(torch.device("cpu"))
    print(f"# preset {args.preset}: " + "; ".join(f"{k} {v}" for k, v in env.items()))
    clip_tokenizer = tiny_tokenizer("clip")
    rows = []
    for backbone in dict.fromkeys(args.backbones):
        tokenizer = bench_tokenizer(backbone)
        specs = PRESETS[args.preset]([backbone])
        model = build_model(backbone, specs[0].size, tokenizer, args.seed, args.text_chunk_tokens)
        for spec in specs:
            print(f"# row: {spec}", file=sys.stderr, flush=True)
            stats = check_realistic(tokenizer, clip_tokenizer, load_class_names(spec.classes))
            rows.append({**stats, **run_row(model, spec, tokenizer, args.seed)})
        del model
    return finish(rows, env, args, format_table(rows))


if __name__ == "__main__":
    sys.exit(main())
