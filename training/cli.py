"""What the training scripts share on the command line: a JSON/YAML file of options with flags overriding it, the
model options (which CLIP, which method, which prompt) and the logging setup."""

import json
import logging as std_logging
import os
import sys
from dataclasses import dataclass, field

from transformers.utils import logging


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
METHODS = ("cocoop", "coop", "zeroshot")


@dataclass
class ModelArguments:
    """Which CLIP, which method, which prompt."""

    clip_model_name_or_path: str = field(
        default="openai/clip-vit-base-patch16", metadata={"help": "Hub id or local folder of the frozen CLIP."}
    )
    clip_revision: str | None = field(default=None, metadata={"help": "Revision (commit) of the CLIP."})
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A trained CoCoOp/CoOp folder or repo to start from (e.g. evaluation only)."}
    )
    method: str = field(
        default="cocoop",
        metadata={"help": "'cocoop' (meta-net), 'coop' (conditional=False) or 'zeroshot' (CLIP, no training)."},
    )
    n_ctx: int | None = field(default=None, metadata={"help": "Context tokens (default: word count of ctx_init)."})
    ctx_init: str | None = field(
        default="a photo of a", metadata={"help": "Words the context starts from; 'none' for a random context."}
    )
    meta_net_reduction: int = field(default=16, metadata={"help": "Meta-net hidden width = projection_dim // this."})
    random_init_clip: bool = field(
        default=False,
        metadata={
            "help": "Build the CLIP from its config.json with RANDOM weights (demo/CI without weights): every "
            "accuracy is then meaningless, and the outputs say so."
        },
    )
    random_init_seed: int = field(default=0, metadata={"help": "Seed of the random CLIP weights."})
    cache_dir: str | None = field(default=None, metadata={"help": "Cache folder for Hub downloads."})

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {METHODS}, got {self.method!r}.")
        if isinstance(self.ctx_init, str) and self.ctx_init.strip().lower() in ("", "none", "null"):
            self.ctx_init = None


def read_structured_file(path, what: str = "config file"):
    """The content of a JSON or YAML file, read as data only (`yaml.safe_load`: no tags that build objects)."""
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path} does not exist.")
    with open(path, encoding="utf-8") as handle:
        if str(path).endswith(".json"):
            try:
                return json.load(handle)
            except json.JSONDecodeError as error:
                raise ValueError(f"{what} {path} is not valid JSON: {error}.") from None
        import yaml

        try:
            return yaml.safe_load(handle)
        except yaml.YAMLError as error:
            raise ValueError(f"{what} {path} is not valid YAML: {error}") from None


def parse_config_and_flags(parser, argv=None) -> tuple:
    """
    Parse `argv` (default: `sys.argv[1:]`) into the dataclasses of `parser` (an `HfArgumentParser`). A JSON/YAML file
    may stand first: its mapping of argument names to values replaces the defaults, and flags after it override it.
    Unknown names in the file are an error, not silently ignored.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0].endswith(CONFIG_SUFFIXES):
        config_path = argv.pop(0)
        values = read_structured_file(config_path)
        if not isinstance(values, dict):
            raise ValueError(
                f"config file {config_path} must hold a mapping of argument names to values, got "
                f"{type(values).__name__}."
            )
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"config file {config_path} has unknown arguments {unknown}; see --help for the names.")
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)


class _CurrentStdoutHandler(std_logging.StreamHandler):
    """Writes to whatever `sys.stdout` is at the time of the record (test runners and notebooks swap it)."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ and setStream assign it; the current stdout wins
        pass


def setup_logging(script_logger_name: str, level: int, transformers_level: int | None = None) -> None:
    """
    As transformers' example scripts: the script's own logger and those of the `training` modules print at `level`
    (INFO on the main process) to stdout; transformers logs at `transformers_level` (default: unchanged).

    A script run as `python training/x.py` logs under `__main__`, not `training.x`, so its logger is named here
    explicitly; the modules it imports (`training.data`, `training.evaluation`, ...) log under `training`.
    """
    names = ["training"]
    if script_logger_name != "training" and not script_logger_name.startswith("training."):
        names.append(script_logger_name)
    for name in names:
        target = std_logging.getLogger(name)
        if not any(isinstance(handler, _CurrentStdoutHandler) for handler in target.handlers):
            handler = _CurrentStdoutHandler()
            handler.setFormatter(
                std_logging.Formatter("%(asctime)s - %(levelname)s - %(name)s - %(message)s", "%H:%M:%S")
            )
            target.addHandler(handler)
        target.setLevel(level)
    if transformers_level is not None:
        logging.set_verbosity(transformers_level)
    logging.enable_explicit_format()


def run_script(main) -> None:
    """
    Run a script's `main()`. Bad input is refused with ValueError / FileNotFoundError carrying a message that names the
    culprit: show that message and exit with status 2, as argparse does, instead of a traceback. Set
    COCOOP_HF_TRACEBACK=1 to see the traceback too; any other exception keeps its traceback.
    """
    try:
        main()
    except (ValueError, FileNotFoundError) as error:
        if os.environ.get("COCOOP_HF_TRACEBACK"):
            raise
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
