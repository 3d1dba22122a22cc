"""
The parser of `cocoop-hf train` and `cocoop-hf evaluate`: HfArgumentParser taking each option under its exact names
only. argparse would read `--num_shot 4` as an abbreviation of `--num_shots` without a word (while a config file with
the same typo is refused), and HfArgumentParser answers an unknown flag with a library ValueError (a traceback): here
both are one `unrecognized arguments: [...]` refusal, which run_script prints as one `error:` line with exit status 2.
Light (no torch), so that the help path may import it.
"""


from transformers.hf_argparser import HfArgumentParser

from cocoop_hf_training.close_names import did_you_mean


class ExactOptionParser(HfArgumentParser):
    """HfArgumentParser without abbreviations, refusing what it does not know in one line naming the closest option."""

    def __init__(self, dataclass_types=None, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(dataclass_types, **kwargs)

    def parse_args_into_dataclasses(self, args=None, return_remaining_strings=False, **kwargs):
        # The option dataclasses are built (and check themselves) first, as HfArgumentParser does; then what is left.
        *parsed, unknown = super().parse_args_into_dataclasses(args=args, return_remaining_strings=True, **kwargs)
        if return_remaining_strings:
            return (*parsed, unknown)
        if unknown:
            raise ValueError(self.unrecognized_message(unknown))
        return tuple(parsed)

    def unrecognized_message(self, unknown: list[str]) -> str:
        """argparse's wording, with the closest known option of each unknown flag and where to find them all."""
        known = [name for action in self._actions for name in action.option_strings]
        flags = [argument.split("=", 1)[0] for argument in unknown if argument.startswith("--")]
        hint = did_you_mean(flags, known)
        # As a list, as HfArgumentParser wrote it (the grids quote a cell's refusal): each argument told apart.
        shown = repr(unknown) if len(unknown) <= 10 else f"{unknown[:10]!r} and {len(unknown) - 10} more"
        shown = shown if len(shown) <= 300 else shown[:300] + "..."  # a bounded line for a long pasted command
        return f"unrecognized arguments: {shown}{hint}; `{self.prog} --help` lists the options."
