"""The options of `cocoop-hf evaluate` (evaluate_transfer) besides the model ones, and its parser (each option under its
exact names, no abbreviation). Imports nothing heavy, so that `--help` lists them without loading torch."""

import argparse
from dataclasses import dataclass, field

from cocoop_hf_training.exact_option_parser import ExactOptionParser
from cocoop_hf_training.model_arguments import ModelArguments


@dataclass
class TransferArguments:
    targets: str = field(default=None, metadata={"help": "YAML/JSON file with a `targets` list of data options."})
    output_dir: str = field(default=None, metadata={"help": "Where results.json / .md / .png go."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace this script's earlier results in --output_dir (never a file it did not write)."},
    )
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Images per forward pass."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader workers (decoding)."})
    use_cpu: bool = field(default=False, metadata={"help": "Run on CPU even if an accelerator is present."})
    mixed_precision: str = field(default="no", metadata={"help": "'no', 'fp16' or 'bf16' (autocast)."})
    seed: int = field(default=1, metadata={"help": "Seed recorded with the results (and used to build a model)."})
    prompt_template: str | None = field(
        default=None,
        metadata={
            "help": "--method zeroshot: score the plain backbone with this template (one '{}' for the class name). "
            "Default: the backbone's own template on SigLIP / SigLIP 2; on the CLIP family the CoOp-packaged "
            "zero-shot model of the --ctx_init words."
        },
    )
    source_dataset: str | None = field(
        default=None,
        metadata={
            "help": "Dataset the model was trained on, recorded with the results; read from the results.json of a "
            "--model_name_or_path folder when it has one (a different value here is an error)."
        },
    )


def build_evaluate_parser(
    description: str | None = None, prog: str | None = None, formatter_class=argparse.RawDescriptionHelpFormatter
) -> ExactOptionParser:
    """The (model, transfer) parser of evaluate_transfer; `description`: its docstring."""
    return ExactOptionParser(
        (ModelArguments, TransferArguments), prog=prog, description=description, formatter_class=formatter_class
    )
