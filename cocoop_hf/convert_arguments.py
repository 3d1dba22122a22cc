"""The converter's command line (`cocoop-hf convert`, `python -m cocoop_hf.convert_official`).

Standard library only, and free of relative imports: `cocoop-hf convert --help` loads this file by its path, without
importing the model package (torch, transformers: seconds), so that help answers at once.
"""

import argparse


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The converter's command line; `prog` names it in the help (`cocoop-hf convert`; default: this module)."""
    parser = argparse.ArgumentParser(
        prog=prog or "python -m cocoop_hf.convert_official",
        description="Convert an official CoOp / CoCoOp / IVLP / MaPLe / PromptSRC (Dassl) checkpoint into a "
        "CoCoOpModel folder. The method and its sizes are read from the file's tensors.",
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="Dassl model.pth.tar-N file (CoOp/CoCoOp: prompt_learner/...; IVLP, PromptSRC: VLPromptLearner/...; "
        "MaPLe: MultiModalPromptLearner/...).",
    )
    parser.add_argument("--clip", required=True, help="Hub id or local folder of the CLIP it was trained on.")
    parser.add_argument("--revision", default=None, help="Revision (commit) of --clip.")
    parser.add_argument(
        "--class_names_file", required=True, help="Class names: a JSON list, or a text file with one name per line."
    )
    parser.add_argument("--output_dir", required=True, help="Folder to write the CoCoOpModel to (new or empty).")
    parser.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Replace the model files (weights, config, processor, code) an earlier conversion wrote into a "
        "non-empty --output_dir; a file of such a name it did not write is refused, other files are left alone.",
    )
    parser.add_argument(
        "--adapter_only", action="store_true", help="Write only config + prompt-learner tensors (names the base CLIP)."
    )
    parser.add_argument(
        "--ctx_init", default=None, help="Placeholder context words (default: see from_official_checkpoint)."
    )
    parser.add_argument(
        "--method",
        default=None,
        choices=("ivlp", "maple", "promptsrc"),
        help="The official trainer of a multimodal checkpoint, needed only when the file cannot tell: one holding "
        "the prompts alone (IVLP and PromptSRC save the same prompt keys); otherwise it must agree with the file.",
    )
    parser.add_argument(
        "--class_token_position",
        default="end",
        choices=("end", "middle", "front"),
        help="The official run's TRAINER.COOP.CLASS_TOKEN_POSITION (checkpoints do not store it; default: end).",
    )
    return parser
