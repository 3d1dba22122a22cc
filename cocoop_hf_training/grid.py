"""
What the two grid scripts share: cocoop_hf_training/run_benchmark.py (Table 1) and cocoop_hf_training/run_transfer_benchmark.py (Tables
2 and 3). The published recipe of each method, the command line (the grid's own flags, then run_cocoop flags after
`--`), the run_cocoop command of a cell, `grid_cells.json` (the command each cell was run with), what a finished,
interrupted or foreign cell folder means, and the loop over the cells.

A cell is any object with `dataset`, `method`, `seed` and `output_dir` attributes whose str() names it in the logs
(and `transfer = True` for a transfer grid's cells: their source training takes the cross-dataset recipe).
"""

import argparse
import contextlib
import gc
import io
import json
import sys
from pathlib import Path

from transformers.utils import logging

from cocoop_hf.backbones_cocoop import backbone_of
from cocoop_hf.limits_cocoop import describe_value
from cocoop_hf_training import cli
from cocoop_hf_training.benchmarks import get_benchmark, load_benchmark
from cocoop_hf_training.checkpoints import latest_checkpoint
from cocoop_hf_training.interruptions import grid_rerun_note, rerun_note
from cocoop_hf_training.outputs import MANIFEST_NAME, check_grid_folder, prepare_grid_folder, read_json, write_output


logger = logging.get_logger(__name__)

CONFIGS = Path(__file__).resolve().parent / "configs"
# Published recipes (official configs/trainers/<Trainer>/*.yaml). CoOp as the official scripts/cocoop/base2new_train.sh
# runs it with TRAINER=CoOp: vit_b16_ctxv1, and vit_b16_ep50_ctxv1 on ImageNet.
RECIPES = {
    "zeroshot": CONFIGS / "zeroshot_clip_vit_b16.yaml",
    "coop": CONFIGS / "coop_vit_b16_ctxv1.yaml",
    "cocoop": CONFIGS / "cocoop_vit_b16_c4_ep10_batch1_ctxv1.yaml",
    # KgCoOp as the official htyao89/KgCoOp scripts/base2new_train.sh runs it (also on ImageNet: no override).
    "kgcoop": CONFIGS / "kgcoop_vit_b16_ep100_ctxv1.yaml",
    # The official base-to-new recipes of IVLP and PromptSRC (muzairkhattak/PromptSRC) and MaPLe
    # (muzairkhattak/multimodal-prompt-learning), ImageNet included (their scripts use one config for every dataset).
    "ivlp": CONFIGS / "ivlp_vit_b16_c2_ep20_batch4_4+4ctx.yaml",
    "maple": CONFIGS / "maple_vit_b16_c2_ep5_batch4_2ctx.yaml",
    "promptsrc": CONFIGS / "promptsrc_vit_b16_c2_ep20_batch4_4+4ctx.yaml",
}
RECIPE_OVERRIDES = {("coop", "ImageNet"): CONFIGS / "coop_vit_b16_ep50_ctxv1.yaml"}
# The transfer grid's (Tables 2 and 3) source training where the official repo ships a cross-dataset recipe of its
# own (shallower prompts, fewer epochs): MaPLe configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml,
# PromptSRC configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml. Table 1's ImageNet cell
# keeps the base-to-new recipe.
TRANSFER_RECIPES = {
    "maple": CONFIGS / "maple_vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml",
    "promptsrc": CONFIGS / "promptsrc_vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml",
}
METHOD_TITLES = {
    "zeroshot": "CLIP",
    "coop": "CoOp",
    "cocoop": "CoCoOp",
    "kgcoop": "KgCoOp",
    "ivlp": "IVLP",
    "maple": "MaPLe",
    "promptsrc": "PromptSRC",
}


def method_titles(content: dict) -> dict[str, str]:
    """
    METHOD_TITLES for the cell whose results.json is `content`: its zero-shot row is titled by the cell's backbone
    (run_cocoop records a non-CLIP one as `recipe.backbone`, evaluate_transfer as `backbone`; absent: CLIP).
    """
    backbone = (content.get("recipe") or {}).get("backbone") or content.get("backbone") or "clip"
    return {**METHOD_TITLES, "zeroshot": backbone_of(backbone).display_name}


# Flags the grid sets per cell; passing them after `--` would make a cell something other than its folder says.
GRID_FLAGS = (
    "--benchmark",
    "--data_root",
    "--seed",
    "--output_dir",
    "--method",
    "--overwrite_output_dir",
    "--resume_from_checkpoint",
    "--dataset_name",
    "--dataset_display_name",
    "--train_file",
    "--eval_file",
    "--split_file",
    "--do_train",
    "--protocol",
)
# Grid folder file: the command each cell was run with (a re-run with other flags is refused).
CELL_RECORDS_NAME = "grid_cells.json"


# ---------------------------------------------------------------------------------------------- recipes


def recipe_for(method: str, dataset: str, transfer: bool = False) -> Path:
    """The recipe of a cell: with `transfer` (a transfer grid's source training) the method's cross-dataset one."""
    if transfer and method in TRANSFER_RECIPES:
        return TRANSFER_RECIPES[method]
    return RECIPE_OVERRIDES.get((method, dataset), RECIPES[method])


def expected_shots(recipe: Path, extra: list[str], method: str) -> int | None:
    """Shots a cell trains with: `--num_shots` after `--` wins over the recipe's; zero-shot trains on none."""
    if method == "zeroshot":
        return None
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--num_shots", type=int)
    given = parser.parse_known_args(extra)[0].num_shots
    if given is not None:
        return given
    content = cli.read_structured_file(recipe, "recipe")
    if not isinstance(content, dict):
        raise ValueError(f"recipe {recipe} must hold a mapping of run_cocoop options, got {type(content).__name__}.")
    shots = content.get("num_shots")
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise ValueError(
            f"recipe {recipe}: `num_shots` must be a positive integer (images per class), got {describe_value(shots)}."
        )
    return shots


# ---------------------------------------------------------------------------------------------- arguments


def _split_argv(argv):
    """The grid's own flags, and the run_cocoop flags after `--`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def parse_grid_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """
    `parser`'s flags (it has --method and --seeds) before `--`; the run_cocoop flags after it in `args.extra`, none of
    them one the grid sets per cell. Methods and seeds keep their order, each once.
    """
    own, extra = _split_argv(argv)
    args = parser.parse_args(own)
    for flag in extra:
        name = flag.split("=", 1)[0]
        # argparse also takes an unambiguous prefix ("--output_d") for the full name: refuse those as well
        if name.startswith("--") and len(name) > 2 and any(grid.startswith(name) for grid in GRID_FLAGS):
            raise ValueError(f"{name} after '--' is set by the grid per cell: use the grid's options.")
    args.extra = extra
    args.method = list(dict.fromkeys(args.method))
    args.seeds = list(dict.fromkeys(args.seeds))
    return args


def run_cocoop_argv(cell, extra: list[str], data_root: str, options: tuple[str, ...] = ()) -> list[str]:
    """The run_cocoop flags that define a cell's run (resume flags aside); `options` go before --seed."""
    return [
        str(recipe_for(cell.method, cell.dataset, transfer=getattr(cell, "transfer", False))),
        "--benchmark",
        cell.dataset,
        "--data_root",
        str(Path(data_root).resolve()),
        *options,
        "--seed",
        str(cell.seed),
        "--output_dir",
        str(cell.output_dir),
        *extra,
    ]


def check_run_cocoop_flags(cell, argv: list[str]) -> tuple:
    """
    run_cocoop's own parsing and checks of a cell's command (a typo, a bad value, an option that does not fit the
    method or the protocol), before the grid writes anything: a flag after `--` that run_cocoop would refuse stops
    the grid now, not when that cell comes up hours later. A --model_name_or_path is refused: the grid trains its
    own models, and a cell's folder would hold a run of another model than the cell names. Returns run_cocoop's
    (model, data, training, run) arguments of the cell.
    """
    from cocoop_hf_training.run_arguments import parse_args
    from cocoop_hf_training.run_method import resolve_run_method

    printed = io.StringIO()
    refused = f"{cell}: run_cocoop refuses the flags after '--'"
    try:
        with contextlib.redirect_stderr(printed):  # argparse prints its usage there before it exits
            model_args, data_args, training_args, run_args = parse_args(argv)
    except SystemExit:  # argparse's error, a bad value: its message is the last line it printed
        lines = printed.getvalue().strip().splitlines()
        raise ValueError(f"{refused}: {lines[-1] if lines else 'they do not parse'}") from None
    except ValueError as error:
        raise ValueError(f"{refused}: {error}") from None
    if model_args.model_name_or_path is not None:
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path} after '--': the grid trains its own models, each "
            "cell from --clip_model_name_or_path with its method's recipe. Evaluate a trained model on other datasets "
            "with cocoop_hf_training/evaluate_transfer.py, or on its own with cocoop_hf_training/run_cocoop.py --model_name_or_path."
        )
    try:
        # What run_cocoop.main refuses before it writes a file: template options, the model config's rules.
        resolve_run_method(model_args, data_args, training_args, run_args, read_backbone=False)
    except ValueError as error:
        raise ValueError(f"{refused}: {error}") from None
    return model_args, data_args, training_args, run_args


def check_layouts(datasets: list[str], data_root: str) -> None:
    """Every dataset's official layout (folders, split files; not each image) is there before the first cell runs."""
    for name in datasets:
        load_benchmark(name, data_root, check_files=False)


# ---------------------------------------------------------------------------------------------- cell states


def run_identity(run: dict) -> dict:
    """Dataset (its official name where known), method and seed a results.json run records."""
    try:
        dataset = get_benchmark(str(run.get("dataset"))).name
    except ValueError:
        dataset = run.get("dataset")
    return {"dataset": dataset, "method": run.get("method"), "seed": run.get("seed")}


class AnotherCellsRun(ValueError):
    """A cell's folder holds a finished run of another cell; `differ` names what differs (--status shows it)."""

    def __init__(self, message: str, differ: str):
        super().__init__(message)
        self.differ = differ


def check_same_cell(results_path: Path, found: dict, wanted: dict) -> None:
    """A finished run of another cell in a cell's folder is an error, never a skip."""
    if found != wanted:
        differ = ", ".join(
            f"{key} {found[key]!r} (cell: {wanted[key]!r})" for key in wanted if found[key] != wanted[key]
        )
        raise AnotherCellsRun(
            f"{results_path} is a finished run of another cell: {differ}. If it is this grid's own run, give the "
            "run's flags again after `--`; else move that folder away, or choose another --output_dir; the grid does "
            "not overwrite finished runs.",
            differ,
        )


def resume_flags(cell) -> tuple[str, list[str]]:
    """What to do with a run_cocoop cell that is not finished: ('run' | 'resume' | 'restart', extra flags)."""
    if not cell.output_dir.is_dir() or not any(cell.output_dir.iterdir()):
        return "run", []
    if latest_checkpoint(cell.output_dir) is not None:
        return "resume", ["--resume_from_checkpoint", "latest"]
    if isinstance(read_json(cell.output_dir / MANIFEST_NAME), dict):
        # An interrupted run of this cell that saved no checkpoint: run_cocoop deletes what that run recorded and is
        # unchanged (cocoop_hf_training/outputs.py); a user's own files there are kept, and one in the way of an output is
        # refused, named, never replaced.
        return "restart", ["--overwrite_output_dir"]
    # No run of run_cocoop started here: let it refuse the folder, naming the files, before anything is written.
    return "run", []


# ---------------------------------------------------------------------------------------------- grid


def read_cell_records(path: Path) -> dict[str, list[str]]:
    """
    `grid_cells.json` (cell folder -> the command it was run with); {} when there is none yet. A file that cannot be
    read as such is refused, naming it: read as empty, the grid would skip or resume the cells of another command as
    this command's (the grid writes it through a rename, so a damaged file is someone's edit, not a crash).
    """
    if not path.exists():
        return {}
    fix = (
        "it records the command each cell of this grid was run with, so the grid cannot tell its cells from another "
        "command's. Restore it, or choose another --output_dir"
    )
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: invalid JSON or UTF-8
        raise ValueError(f"{path} cannot be read as JSON ({type(error).__name__}: {error}): {fix}.") from None
    if not isinstance(records, dict):
        raise ValueError(
            f"{path} must hold a JSON object (cell folder -> its command), got {type(records).__name__}: {fix}."
        )
    for folder, command in records.items():
        if not (isinstance(command, list) and all(isinstance(part, str) for part in command)):
            raise ValueError(
                f"{path}: the record of {folder!r} must be a list of strings (the command its cell was run with), "
                f"got {describe_value(command)}: {fix}."
            )
    return records


def _write_records(path: Path, records: dict) -> None:
    # A new file renamed into place, never through a symlink, recorded in the grid folder's manifest
    # (cocoop_hf_training/outputs.py): a later run proves it the grid's own, a user's file of that name is refused.
    write_output(path, json.dumps(records, indent=2, sort_keys=True) + "\n", "grid records")


def check_cell_folder(cell, output_dir) -> None:
    """
    Refuse a cell folder reached through a symlink (the cell folder itself, or its dataset or method folder): the
    cell's run would write, and an interrupted one be restarted, in a folder outside the grid's.
    """
    root, path = Path(output_dir), Path(cell.output_dir)
    parts = path.relative_to(root).parts if path.is_relative_to(root) else (path.name,)
    root = root if path.is_relative_to(root) else path.parent
    for part in parts:
        root = root / part
        if root.is_symlink():
            raise ValueError(
                f"{root} is a symbolic link: the cell {cell} would be run in {root.resolve()}, outside the grid "
                "folder. Remove the link (or move the folder it points to there), or choose another --output_dir."
            )


def check_grid_cells(cells: list, output_dir, command, flags_name: str) -> dict[str, list[str]]:
    """
    Before any cell runs, whatever the launcher: grid_cells.json readable, the grid's own files provably its own, no
    cell folder reached through a symlink, and no cell run earlier with another command (`command(cell)`; `flags_name`
    names what differs in the error). Returns grid_cells.json's records.
    """
    records = read_cell_records(Path(output_dir) / CELL_RECORDS_NAME)  # a damaged file is refused naming it
    check_grid_folder(output_dir)  # a records file or table the grid cannot prove its own is refused
    for cell in cells:
        check_cell_folder(cell, output_dir)
        recorded, wanted = records.get(str(cell.output_dir)), command(cell)
        if recorded is not None and recorded != wanted:
            raise ValueError(
                f"{cell.output_dir} was run by this grid with other {flags_name}:\n  then: {' '.join(recorded)}\n"
                f"  now:  {' '.join(wanted)}\nRe-run with the same flags, or choose another --output_dir."
            )
    return records


def record_commands(output_dir, records: dict, cells: list, command) -> None:
    """
    Record in grid_cells.json the command of `cells`, all at once before their jobs are submitted (launchers other than
    inline): only the grid's own process writes that file, never a job, so two jobs cannot lose each other's record.
    """
    if cells:
        records.update({str(cell.output_dir): command(cell) for cell in cells})
        _write_records(Path(output_dir) / CELL_RECORDS_NAME, records)


def refuse_running_jobs(cells: list, output_dir, finished_run) -> None:
    """
    The inline grid in a folder where --launcher local or slurm submitted jobs: a cell whose job is still running is
    refused (the inline run would write its folder at the same time). A grid without jobs reads nothing more.
    """
    from cocoop_hf_training.grid_cell_states import cell_state, jobs_folder

    if not jobs_folder(output_dir).is_dir():
        return
    for cell in cells:
        state = cell_state(cell, output_dir, finished_run)
        if state.state == "running":
            raise ValueError(
                f"{cell}: {state.detail}, submitted by an earlier --launcher local or slurm run of this grid: "
                "running it inline now would write its folder twice at once. Wait for the job (--status), or end it, "
                "then rerun."
            )


def run_cells(cells: list, output_dir, *, title: str, desc: str, command, finished_run, next_step, run, flags_name):
    """
    Run (or skip, or resume) every cell in order; returns each cell's results.json content.

    `command(cell)`: what defines the cell's run, recorded in grid_cells.json; `finished_run(cell)`: the results.json
    content of its finished run, or None; `next_step(cell)`: (action, flags) for one that is not finished;
    `run(cell, flags)` runs it. A cell run earlier (finished or not) with another command (another CLIP, epochs,
    learning rate, ...; `flags_name` names them in the error) is refused before anything runs: its results would be
    skipped or resumed as if they were this command's. `title` opens the log line that counts the cells to run.
    """
    from tqdm.auto import tqdm

    records_path = Path(output_dir) / CELL_RECORDS_NAME
    records = check_grid_cells(cells, output_dir, command, flags_name)
    finished = {cell: content for cell in cells if (content := finished_run(cell)) is not None}
    # A finished cell's job is not running: only the others are looked at (each cell folder read once).
    refuse_running_jobs([cell for cell in cells if cell not in finished], output_dir, finished_run)
    logger.info("%s: %d finished, %d to run.", title, len(finished), len(cells) - len(finished))
    prepare_grid_folder(output_dir)  # every check passed: from here the grid records what it writes there
    results = {}
    progress = tqdm(cells, desc=desc, unit="cell")
    for index, cell in enumerate(progress, 1):
        progress.set_postfix_str(str(cell))
        if cell in finished:
            logger.info("[%d/%d] %s: finished earlier, skipped.", index, len(cells), cell)
            results[cell] = finished[cell]
            continue
        action, flags = next_step(cell)
        logger.info("[%d/%d] %s: %s in %s", index, len(cells), cell, action, cell.output_dir)
        records[str(cell.output_dir)] = command(cell)
        _write_records(records_path, records)
        # Ctrl-C: one line saying which cell ran, what is kept and where a rerun of this cell starts (run_script).
        kept = len(set(results) | set(finished))
        with rerun_note(grid_rerun_note, cell, index, len(cells), kept, next_step):
            run(cell, flags)
        results[cell] = finished_run(cell)
        if results[cell] is None:
            raise RuntimeError(f"{cell}: the run returned without finishing {cell.output_dir}.")
        gc.collect()  # the cell's model and datasets, before the next cell builds its own
    progress.close()
    return results
