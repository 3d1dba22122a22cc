"""
The official-file reader (`cocoop_hf.official_pickle`): Dassl checkpoints and few-shot splits read as data, bit-exact
like torch.load for genuine files; hostile pickles execute, import, write and allocate nothing.
"""

import ast
import collections
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import cocoop_hf
from cocoop_hf.official_pickle import load_official_fewshot_split, load_official_state_dict

from . import hostile_pickles as hostile


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one thread is steadier


CALLS = []


def record_call(*args):
    """A global a malicious pickle could name; plain unpickling would call it."""
    CALLS.append(args)
    return args


class CallsOnLoad:
    """Pickles as `function(*args)`: unpickling calls `function`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def official_state_dict(n_ctx=4, width=64, projection=48, hidden=3, conditional=True, n_train_classes=5, seed=0):
    """Tensors as the official PromptLearner names them, in fp16 (Dassl's default PREC for CoCoOp)."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return (torch.randn(*shape, generator=generator) * 0.3).half()

    state = {"ctx": randn(n_ctx, width)}
    if conditional:
        state.update(
            {
                "meta_net.linear1.weight": randn(hidden, projection),
                "meta_net.linear1.bias": randn(hidden),
                "meta_net.linear2.weight": randn(width, hidden),
                "meta_net.linear2.bias": randn(width),
            }
        )
    # Class-dependent buffers of the training class set: ignored on import.
    state["token_prefix"] = randn(n_train_classes, 1, width)
    state["token_suffix"] = randn(n_train_classes, 77 - 1 - n_ctx, width)
    # Like Module.state_dict(): an OrderedDict carrying `_metadata`.
    state = collections.OrderedDict(state)
    state._metadata = collections.OrderedDict({"": {"version": 1}})
    return state


def write_dassl_checkpoint(path, state_dict, **extra):
    """What Dassl's save_checkpoint writes: the training state with a pickled CosineAnnealingLR object."""
    parameters = [torch.nn.Parameter(t.float().clone()) for key, t in state_dict.items() if "token_" not in key]
    optimizer = torch.optim.SGD(parameters, lr=0.002, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    sum(p.sum() for p in parameters).backward()
    optimizer.step()
    scheduler.step()
    checkpoint = {
        "state_dict": state_dict,
        "epoch": 10,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler,
        "val_result": 71.3,
        **extra,
    }
    torch.save(checkpoint, path)
    return path


def test_weights_only_refuses_real_dassl_file(cocoop_checkpoint):
    """The premise: a real Dassl file is not weights-only loadable (its LR scheduler is a pickled object)."""
    path, _ = cocoop_checkpoint
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_load_official_state_dict_keeps_only_prompt_learner(cocoop_checkpoint):
    path, state = cocoop_checkpoint
    tensors = load_official_state_dict(path)
    assert set(tensors) == {key for key in state if not key.startswith("token_")}
    for key, tensor in tensors.items():
        assert tensor.dtype == torch.float16 and torch.equal(tensor, state[key])


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_official_state_dict(tmp_path / "nowhere.pth")
    (tmp_path / "garbage.pth").write_bytes(os.urandom(2048))
    with pytest.raises(OSError, match="cannot read official checkpoint.*garbage.pth"):
        load_official_state_dict(tmp_path / "garbage.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not a CoOp/CoCoOp prompt-learner checkpoint"):
        load_official_state_dict(tmp_path / "list.pth")
    torch.save({"state_dict": {"ctx": torch.zeros(4, 8), "epoch_note": "x"}}, tmp_path / "str.pth")
    with pytest.raises(ValueError, match="'epoch_note'.*not a tensor"):
        load_official_state_dict(tmp_path / "str.pth")
    torch.save({"state_dict": {"meta_net.linear1.weight": torch.zeros(3, 48)}}, tmp_path / "noctx.pth")
    with pytest.raises(ValueError, match="no 'ctx' tensor"):
        load_official_state_dict(tmp_path / "noctx.pth")


def test_malicious_object_inside_state_dict(tmp_path):
    """A global planted among the tensors is neither called nor accepted as a tensor."""
    state = official_state_dict(seed=8)
    state["ctx"] = CallsOnLoad(record_call, "in state_dict")
    path = tmp_path / "evil-state.pth.tar-1"
    torch.save({"state_dict": state, "epoch": 1}, path)
    CALLS.clear()
    with pytest.raises(ValueError, match=r"state_dict entry 'ctx' is <not loaded: .*record_call>, not a tensor"):
        load_official_state_dict(path)
    assert CALLS == []


# ---------------------------------------------------------------------------------------------- the reader, as data


def dassl_like_checkpoint(tmp_path, legacy: bool):
    """A Dassl checkpoint in one torch.save layout: fp16 tensors, OrderedDict with _metadata, SGD + scheduler."""
    state = official_state_dict(seed=11)
    path = tmp_path / ("legacy.pth.tar-10" if legacy else "zip.pth.tar-10")
    write_dassl_checkpoint(path, state)
    if legacy:  # the same object, rewritten in the legacy layout
        torch.save(torch.load(path, weights_only=False), path, _use_new_zipfile_serialization=False)
    return path, state


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_both_torch_save_layouts_bit_exact(tmp_path, legacy):
    path, state = dassl_like_checkpoint(tmp_path, legacy)
    with open(path, "rb") as file:
        assert (file.read(4) == b"PK\x03\x04") != legacy
    tensors = load_official_state_dict(path)
    assert set(tensors) == {key for key in state if not key.startswith("token_")}
    for key, tensor in tensors.items():
        assert tensor.dtype == torch.float16 and tensor.shape == state[key].shape
        assert torch.equal(tensor.view(torch.int16), state[key].view(torch.int16))  # the same bits


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_views_and_dtypes_like_torch_load(tmp_path, legacy):
    """Tensors sharing a storage at offsets, transposed, empty, 0-d, of other dtypes: as torch.load rebuilds them."""
    base = torch.randn(10, 12, generator=torch.Generator().manual_seed(0))
    state = {
        "ctx": base[2:6, 3:11],
        "transposed": base.t(),
        "empty": torch.empty(0, 3),
        "scalar": torch.tensor(2.5, dtype=torch.float64),
        "bf16": base[0].to(torch.bfloat16),
        "int64": torch.arange(5),
        "bool": torch.tensor([True, False, True]),
    }
    path = tmp_path / "bare.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    expected = torch.load(path, weights_only=True)
    tensors = load_official_state_dict(path)
    assert set(tensors) == set(state)
    for key, tensor in tensors.items():
        assert tensor.dtype == expected[key].dtype and tensor.shape == expected[key].shape, key
        assert tensor.stride() == expected[key].stride() and torch.equal(tensor, expected[key]), key


@pytest.fixture
def clean_cwd(tmp_path, monkeypatch):
    """An empty working directory: torch's legacy loader writes `<class name>.patch` relative to it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def assert_globals_intact():
    assert collections.Counter.__name__ == "Counter" and "dump_patches" not in vars(collections.Counter)
    assert torch._utils._rebuild_tensor_v2.__defaults__ == (None,)


def assert_benign_files_still_load(tmp_path):
    """Nothing leaked into later loads: ours and torch's weights-only loader both give the saved values."""
    path, state = dassl_like_checkpoint(tmp_path, legacy=False)
    for key, tensor in load_official_state_dict(path).items():
        assert torch.equal(tensor.view(torch.int16), state[key].view(torch.int16)) and not tensor.is_neg()
    plain = torch.arange(1.0, 4.0)
    torch.save(plain, tmp_path / "plain.pt")
    loaded = torch.load(tmp_path / "plain.pt", weights_only=True)
    assert torch.equal(loaded, plain) and not loaded.is_neg()


def test_attack_dump_patches_writes_nothing(tmp_path, clean_cwd):
    """BUILD on `collections.Counter` + a legacy `module` record made torch write `<any path>.patch`."""
    target = tmp_path / "target" / "evil"
    target.parent.mkdir()
    path = tmp_path / "patch.pth"
    path.write_bytes(hostile.dump_patches_attack(str(target)))
    with pytest.raises(OSError, match=re.escape(str(path)) + r".*sets attributes of <global collections\.Counter>"):
        load_official_state_dict(path)
    assert list(target.parent.iterdir()) == [] and list(clean_cwd.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "patch.pth", "target"]
    assert_globals_intact()
    assert_benign_files_still_load(tmp_path)


def test_attack_rebuild_tensor_defaults_changes_nothing(tmp_path, clean_cwd):
    """BUILD on `_rebuild_tensor_v2` set `metadata={"neg": True}` as its default: every later load negated."""
    ctx = torch.randn(4, 8, generator=torch.Generator().manual_seed(3)).half()
    path = tmp_path / "defaults.pth"
    hostile.write_zip_file(path, hostile.defaults_attack((4, 8)), {"0": ctx.numpy().tobytes()})
    with pytest.raises(OSError, match=r"sets attributes of <global torch\._utils\._rebuild_tensor_v2>"):
        load_official_state_dict(path)
    assert list(clean_cwd.iterdir()) == []
    assert_globals_intact()
    assert_benign_files_still_load(tmp_path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("payload", ["os_system", "posix_system", "exec", "eval", "popen"])
def test_attack_command_payloads_are_not_run(tmp_path, clean_cwd, caplog, legacy, payload):
    """REDUCE of os.system / exec / eval / Popen beside a genuine tensor: never called, logged, the tensor loads."""
    marker = tmp_path / "executed"
    ctx = torch.randn(4, 8, generator=torch.Generator().manual_seed(5)).half()
    tensor = hostile.half_tensor("0", 32, (4, 8), (8, 1), legacy=legacy)
    extra = {"payload": hostile.command_payloads(str(marker))[payload]}
    main = hostile.proto(2) + hostile.checkpoint_object(hostile.text("ctx") + tensor, **extra) + pickle.STOP
    path = tmp_path / "evil.pth"
    if legacy:
        path.write_bytes(hostile.legacy_file(main, {"0": ctx.numpy().tobytes()}))
    else:
        hostile.write_zip_file(path, main, {"0": ctx.numpy().tobytes()})
    with caplog.at_level(logging.INFO, logger="cocoop_hf.official_pickle"):
        tensors = load_official_state_dict(path)
    assert torch.equal(tensors["ctx"], ctx)
    assert not marker.exists() and list(clean_cwd.iterdir()) == []
    assert {"os_system": "os.system", "posix_system": "posix.system", "exec": "builtins.exec"}.get(
        payload, {"eval": "builtins.eval", "popen": "subprocess.Popen"}.get(payload)
    ) in caplog.text


def test_attack_calling_a_placeholder_is_refused(tmp_path, clean_cwd):
    """`getattr(os.system, "__call__")(...)`: the result of a global is a placeholder, and calling it is refused."""
    marker = tmp_path / "executed"
    payload = hostile.command_payloads(str(marker))["getattr_chain"]
    path = tmp_path / "chain.pth"
    hostile.write_zip_file(path, hostile.proto(2) + payload + pickle.STOP)
    with pytest.raises(OSError, match=r"calls <not loaded: builtins\.getattr>, which is not a global"):
        load_official_state_dict(path)
    assert not marker.exists() and list(clean_cwd.iterdir()) == []


MEMORY_PROBE = """
import json, resource, sys
from cocoop_hf.official_pickle import load_official_state_dict

load_official_state_dict(sys.argv[1])  # warm-up: imports and first tensor allocations are not the attack's
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
for path in sys.argv[2:]:
    try:
        load_official_state_dict(path)
        outcome = "loaded"
    except (OSError, ValueError) as error:
        outcome = f"{type(error).__name__}: {error}"
    # Peak resident memory since the baseline (kB on Linux): covers this file and every one before it.
    results[path] = [(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) * 1024, outcome]
print(json.dumps(results))
"""


def test_attack_memory_is_bounded(tmp_path):
    """
    Peak memory (ru_maxrss in a fresh process) reading files built to allocate: bytearray(6 GiB) in < 200 bytes
    (6.9 GB before), memo entry 2^26 first (C's unpickler: 1 GB table), a BINBYTES8 of 1 TiB, and 256 KiB of
    EMPTY_SET opcodes (216 bytes each). Bound: 50 MB over the baseline for all together.
    """
    files = {
        "bytearray": hostile.bytearray_attack(6 * 2**30),
        "memo": hostile.memo_attack(2**26),
        "length": hostile.declared_length_attack(2**40),
        "sets": hostile.set_flood_attack(256 * 2**10),
    }
    paths = []
    for name, data in files.items():
        paths.append(tmp_path / f"{name}.pth")
        paths[-1].write_bytes(data)
    assert len(files["bytearray"]) < 200
    benign, _ = dassl_like_checkpoint(tmp_path, legacy=False)
    command = [sys.executable, "-c", MEMORY_PROBE, str(benign), *map(str, paths)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    for path in paths:
        peak, outcome = measured[str(path)]
        assert peak < 50 * 2**20, (path.name, peak, outcome)
        assert outcome.startswith(("OSError: cannot read official checkpoint", "ValueError")), outcome
        assert str(path) in outcome
    assert "<not loaded: builtins.bytearray>" in measured[str(paths[0])][1]
    assert "memo entry 67108864" in measured[str(paths[1])][1]
    assert "would take more than" in measured[str(paths[3])][1]


def hostile_tensor_file(tmp_path, numel, size, stride, offset=0, storage_bytes=None):
    path = tmp_path / "tensor.pth"
    tensor = hostile.half_tensor("0", numel, size, stride, offset)
    data_pkl = hostile.proto(2) + hostile.checkpoint_object(hostile.text("ctx") + tensor) + pickle.STOP
    storage = bytes(2 * numel) if storage_bytes is None else storage_bytes
    hostile.write_zip_file(path, data_pkl, {"0": storage})
    return path


@pytest.mark.parametrize(
    "record, message",
    [
        (dict(numel=8, size=(4, 4), stride=(4, 1)), r"has more elements than its storage '0' \(8\)"),
        (dict(numel=16, size=(4, 4), stride=(4, 1), offset=1), r"reads outside its storage '0' of 16 elements"),
        (dict(numel=16, size=(2, 2), stride=(16, 1)), r"reads outside its storage"),
        (dict(numel=2, size=(2**40,), stride=(0,)), r"has more elements than its storage"),
        (dict(numel=16, size=(4, 4), stride=(-4, 1)), r"a stride of a tensor in storage '0' is -4"),
        (
            dict(numel=16, size=(4, 4), stride=(4, 1), storage_bytes=bytes(8)),
            r"holds 8 bytes where its tensors need 32",
        ),
        (
            dict(numel=2**40, size=(4,), stride=(1,), storage_bytes=bytes(8)),
            r"storage '0' claims 2199023255552 bytes, more than the whole file",
        ),
    ],
    ids=[
        "too-many-elements",
        "offset",
        "stride",
        "stride-0-terabytes",
        "negative-stride",
        "short-record",
        "huge-numel",
    ],
)
def test_tensor_records_are_bounds_checked(tmp_path, record, message):
    path = hostile_tensor_file(tmp_path, **record)
    with pytest.raises(OSError, match=re.escape(str(path)) + ".*" + message):
        load_official_state_dict(path)


def test_legacy_storages_are_checked(tmp_path):
    """Legacy layout: the element count before each storage must match its record, the bytes must be there."""
    tensor = hostile.half_tensor("7", 16, (4, 4), (4, 1), legacy=True)
    main = hostile.proto(2) + hostile.checkpoint_object(hostile.text("ctx") + tensor) + pickle.STOP
    path = tmp_path / "legacy.pth"
    path.write_bytes(hostile.legacy_file(main, {"7": bytes(32)}))
    assert load_official_state_dict(path)["ctx"].shape == (4, 4)
    path.write_bytes(hostile.legacy_file(main, {"7": bytes(30)}))
    with pytest.raises(OSError, match=r"storage '7' holds 15 elements where its tensors need 16"):
        load_official_state_dict(path)
    path.write_bytes(hostile.legacy_file(main, {"7": bytes(32)})[:-4])
    with pytest.raises(OSError, match=r"truncated: storage '7' ends after the end of the file"):
        load_official_state_dict(path)


def not_checkpoints(tmp_path):
    genuine, _ = dassl_like_checkpoint(tmp_path, legacy=False)
    legacy, _ = dassl_like_checkpoint(tmp_path, legacy=True)
    return {
        "empty": b"",
        "text": b"hello, this is a text file\n",
        "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(100),
        "truncated-zip": genuine.read_bytes()[:600],
        "truncated-legacy": legacy.read_bytes()[:300],
        "plain-pickle": pickle.dumps({"state_dict": {}}, protocol=2),
    }


@pytest.mark.parametrize("kind", ["empty", "text", "png", "truncated-zip", "truncated-legacy", "plain-pickle"])
def test_not_a_checkpoint_errors_name_file_and_expectation(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    path.write_bytes(not_checkpoints(tmp_path)[kind])
    with pytest.raises(OSError) as error:
        load_official_state_dict(path)
    message = str(error.value)
    assert message.startswith(f"cannot read official checkpoint {str(path)!r}: ")
    assert message.endswith("; expected a Dassl prompt_learner/model.pth.tar-N file (written by torch.save).")
    reason = message[len(f"cannot read official checkpoint {str(path)!r}: ") : message.index("; expected")]
    assert len(reason) > 15 and "[Errno" not in message and not reason.rstrip(")").isdigit(), message


# ---------------------------------------------------------------------------------------------- few-shot splits


class FakeDatum:
    """Dassl's Datum as far as pickling sees it: its fields in `_impath`, `_label`, `_domain`, `_classname`."""

    def __init__(self, impath="", label=0, domain=0, classname=""):
        self._impath, self._label, self._domain, self._classname = impath, label, domain, classname


def pickle_as_dassl(obj) -> bytes:
    """pickle.dumps(obj, protocol=5) with FakeDatum named `dassl.data.datasets.base_dataset.Datum`."""
    names = ["dassl", "dassl.data", "dassl.data.datasets", "dassl.data.datasets.base_dataset"]
    saved = {name: sys.modules.get(name) for name in names}
    module = types.ModuleType(names[-1])
    module.Datum = FakeDatum
    sys.modules.update({name: types.ModuleType(name) for name in names[:-1]})
    sys.modules[names[-1]] = module
    FakeDatum.__module__, FakeDatum.__qualname__ = names[-1], "Datum"
    try:
        return pickle.dumps(obj, protocol=5)
    finally:
        FakeDatum.__module__, FakeDatum.__qualname__ = __name__, "FakeDatum"
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def test_fewshot_split_read_as_plain_data(tmp_path):
    train = [
        FakeDatum(f"/data/oxford_pets/images/img_{i}.jpg", i % 3, 0, ["cat", "dog", "pug"][i % 3]) for i in range(6)
    ]
    val = [FakeDatum("/data/oxford_pets/images/val_0.jpg", 2, 0, "pug")]
    path = tmp_path / "shot_2-seed_1.pkl"
    path.write_bytes(pickle_as_dassl({"train": train, "val": val}))
    assert b"dassl.data.datasets.base_dataset" in path.read_bytes() and "dassl" not in sys.modules
    split = load_official_fewshot_split(path)
    assert "dassl" not in sys.modules  # nothing imported
    assert split == {
        "train": [
            {"impath": d._impath, "label": d._label, "domain": d._domain, "classname": d._classname} for d in train
        ],
        "val": [{"impath": "/data/oxford_pets/images/val_0.jpg", "label": 2, "domain": 0, "classname": "pug"}],
    }
    assert all(type(item) is dict for part in split.values() for item in part)
    imagenet = tmp_path / "imagenet.pkl"  # CoOp's ImageNet split holds only "train"
    imagenet.write_bytes(pickle_as_dassl({"train": train[:2]}))
    assert list(load_official_fewshot_split(imagenet)) == ["train"]


def test_fewshot_split_hostile_or_wrong(tmp_path, clean_cwd):
    marker = tmp_path / "executed"
    path = tmp_path / "split.pkl"
    evil = FakeDatum("/x.jpg", CallsOnLoad(os.system, f"touch {marker}"), 0, "cat")
    path.write_bytes(pickle_as_dassl({"train": [evil]}))
    with pytest.raises(OSError, match=re.escape(str(path)) + r".*train\[0\]\.label is <not loaded: posix\.system>"):
        load_official_fewshot_split(path)
    path.write_bytes(pickle.dumps({"train": [{"impath": "/x.jpg"}]}, protocol=5))
    with pytest.raises(OSError, match=r"train\[0\] is a dict of 1 items, not a Datum.*expected a Dassl few-shot"):
        load_official_fewshot_split(path)
    path.write_bytes(b"")
    with pytest.raises(OSError, match=r"the file is empty; expected a Dassl few-shot split file"):
        load_official_fewshot_split(path)
    assert not marker.exists() and list(clean_cwd.iterdir()) == []


# ---------------------------------------------------------------------------------------------- module boundaries


def imported_modules(path: Path) -> set[str]:
    """The modules a source file's import statements name; relative imports resolved inside cocoop_hf."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            package = "cocoop_hf"
            names.update([f"{package}.{node.module}"] if node.module else (f"{package}.{a.name}" for a in node.names))
    return names


# The official-file reader: the loaders and the modules they are split into (records, interpreter, torch.save files).
READER_MODULES = ("official_pickle", "pickle_records_cocoop", "pickle_reader_cocoop", "torch_save_file_cocoop")


def test_reader_imports_no_model_code():
    """The reader stands alone (stdlib, torch, transformers' logging); the model side never imports the readers."""
    package = Path(cocoop_hf.__file__).parent
    readers = {f"cocoop_hf.{name}" for name in READER_MODULES}
    reader_imports = set().union(*(imported_modules(package / f"{name}.py") for name in READER_MODULES))
    assert {"torch", "zipfile", "pickletools"} <= reader_imports  # the parser sees the imports
    assert readers - {"cocoop_hf.official_pickle"} <= reader_imports  # relative ones too
    outside = {name for name in reader_imports - readers if name.split(".")[0] not in sys.stdlib_module_names}
    assert outside == {"torch", "transformers.utils"}, outside
    assert "cocoop_hf.official_pickle" in imported_modules(package / "convert_official.py")  # relative ones too
    for name in ("modeling_cocoop", "sharing_cocoop", "processing_cocoop", "pipeline_cocoop", "configuration_cocoop"):
        imports = imported_modules(package / f"{name}.py")
        assert not (readers | {"cocoop_hf.convert_official"}) & imports, (name, imports)
