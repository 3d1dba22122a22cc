"""Each warning once per process: a grid parses every cell's flags (grid.check_run_cocoop_flags), then runs each cell,
and the same sentence 3-4 times per grid buried the output."""

import logging

from transformers.utils import logging as hf_logging

from cocoop_hf_training import run_cocoop


WARM_UP_SAID = "every step trains at the warm-up rate"


def test_warm_up_warning_once_per_process_over_a_grid_of_parses(tmp_path, caplog):
    hf_logging.warning_once.cache_clear()  # another test may have said it already
    caplog.set_level(logging.WARNING)
    for cell in range(4):  # a grid's cells, each parsed once to check it and once to run it
        run_cocoop.parse_args(["--dataset_name", "d", "--do_train", "--num_train_epochs", "1",
                               "--output_dir", str(tmp_path / f"c{cell}")])  # fmt: skip
    assert sum(WARM_UP_SAID in record.getMessage() for record in caplog.records) == 1
    run_cocoop.parse_args(["--dataset_name", "d", "--do_train", "--num_train_epochs", "2", "--warmup_epochs", "2",
                           "--output_dir", str(tmp_path / "other")])  # fmt: skip
    assert sum(WARM_UP_SAID in record.getMessage() for record in caplog.records) == 2  # another sentence is said
