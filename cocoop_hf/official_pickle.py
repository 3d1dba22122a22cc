"""
Read the files of the official CoOp / CoCoOp code (KaiyangZhou/CoOp on Dassl) as plain data:

- `load_official_state_dict(path)`: a Dassl checkpoint (`output/.../prompt_learner/model.pth.tar-N`, written by
  `torch.save`, in either of its layouts) or a bare prompt-learner state dict -> its prompt-learner tensors;
- `load_official_fewshot_split(path)`: a Dassl few-shot split (`split_fewshot/shot_K-seed_S.pkl`, written by
  `pickle.dump`) -> `{"train": [{"impath", "label", "domain", "classname"}, ...], "val": [...]}`.

Why not `pickle` or `torch.load`: Dassl writes `{"state_dict", "epoch", "optimizer", "scheduler", "val_result"}`,
and `"scheduler"` is a pickled torch `CosineAnnealingLR` object, so `torch.load(weights_only=True)` refuses a real
file. Handing such an untrusted pickle to `torch.load` or to a restricted unpickler is not safe either: the BUILD
opcode sets attributes on whatever an allowed global is (a class, a function's `__defaults__`), REDUCE calls an
allowed callable with any arguments (`bytearray(6 GiB)`), and torch's legacy loader writes `.patch` files for
pickled module classes.

So this module never gives these files to `torch.load` or to Python's unpickler. It reads both `torch.save` layouts
itself (the zip archive `<name>/data.pkl` + `<name>/data/<key>`, and the legacy stream: magic number, protocol
version, system info, main pickle, storage keys, raw storages; see torch/serialization.py) and interprets each
pickle with a small opcode interpreter (`_PickleReader`, over `pickletools.genops`). Its guarantees:

- nothing is imported: a global is a name; `torch._utils._rebuild_tensor_v2`, `collections.OrderedDict`, torch
  storage types (and, for split files, Dassl's `Datum`) are recognised by name, everything else becomes an inert
  placeholder whose calls, attribute updates and items are dropped;
- nothing is called outside this module: REDUCE / NEWOBJ / BUILD are interpreted, never executed, and BUILD on
  anything but a placeholder instance, an OrderedDict stand-in or a Datum record is refused (so the recognised
  globals, constants of this module, cannot be changed by a file either);
- nothing is written: no file, no global of Python or torch changes;
- memory is bounded by the file's size: every opcode is charged against a budget of
  `_BUDGET_BASE + _BUDGET_PER_BYTE * file size`, memo indices that skip ahead are refused, so a small file cannot
  make it allocate much; tensors are built from the file's bytes (`torch.frombuffer` on a copy) after checking the
  storage record's size against the archive and the offset, sizes and strides against the storage, and at most the
  file's size in storage bytes is read.

A file that is not what a function reads raises `OSError` naming the file, why it was refused and what was expected;
a checkpoint that reads fine but holds no prompt-learner tensors raises `ValueError`.

The work is split by job: `pickle_records_cocoop.py` (the inert records, the recognised globals, the memory budget),
`pickle_reader_cocoop.py` (the opcode interpreter), `torch_save_file_cocoop.py` (both torch.save layouts, storages
and tensors); this module holds the two loaders and what they return.

These modules import neither the model nor the converter (`convert_official.py`, which builds a `CoCoOpModel` from
what `load_official_state_dict` returns), so nothing that reads these files depends on the model code; the model
does not import them either, so saved folders never ship them.
"""

from pathlib import Path

import torch
from transformers.utils import logging

from .pickle_reader_cocoop import _PickleReader
from .pickle_records_cocoop import (
    _BUDGET_BASE,
    _BUDGET_PER_BYTE,
    _COST_HASHED_ITEM,
    _COST_OBJECT,
    _SPLIT_GLOBALS,
    _DatumRecord,
    _describe,
    _Refused,
    _TensorRecord,
)
from .torch_save_file_cocoop import _TorchSaveFile


logger = logging.get_logger(__name__)

# Class-dependent buffers of the official PromptLearner (token embeddings of SOS and of "{name}.[EOS]..."): the
# model rebuilds them from its own class names, so they are not returned.
IGNORED_KEYS = ("token_prefix", "token_suffix")

EXPECTED_CHECKPOINT = "a Dassl prompt_learner/model.pth.tar-N file (written by torch.save)"
EXPECTED_SPLIT = "a Dassl few-shot split file (split_fewshot/shot_K-seed_S.pkl, written by pickle.dump)"


def _prompt_learner_tensors(file: _TorchSaveFile, path: Path) -> dict[str, torch.Tensor]:
    checkpoint = file.obj
    if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        state_dict = checkpoint["state_dict"]
    elif isinstance(checkpoint, dict) and "ctx" in checkpoint:
        state_dict = checkpoint  # a bare prompt-learner state dict
    else:
        found = sorted(map(_describe, checkpoint))[:20] if isinstance(checkpoint, dict) else _describe(checkpoint)
        raise ValueError(
            f"{str(path)!r} is not a CoOp/CoCoOp prompt-learner checkpoint: expected a dict with 'state_dict' "
            f"(Dassl's model.pth.tar-N) or with 'ctx', found {found}."
        )
    if not isinstance(state_dict, dict):
        raise ValueError(f"{str(path)!r}: 'state_dict' is {_describe(state_dict)}, not a dict of tensors.")
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            raise ValueError(f"{str(path)!r}: the state_dict has the key {_describe(key)}, not a tensor name.")
        if key in IGNORED_KEYS:
            continue
        if not isinstance(value, _TensorRecord):
            raise ValueError(f"{str(path)!r}: state_dict entry {key!r} is {_describe(value)}, not a tensor.")
        tensors[key] = file.tensor(value)
    return tensors


def load_official_state_dict(checkpoint_path) -> dict[str, torch.Tensor]:
    """
    Read a Dassl checkpoint (or a bare prompt-learner state dict saved with `torch.save`) as data and return its
    prompt-learner tensors, with `token_prefix`/`token_suffix` dropped. Nothing in the file is executed or
    imported (see the module docstring); objects other than the tensors are not loaded.
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"official checkpoint {str(path)!r} does not exist; expected {EXPECTED_CHECKPOINT}.")
    try:
        with _TorchSaveFile(path) as file:
            tensors = _prompt_learner_tensors(file, path)
            not_loaded = file.not_loaded
    except _Refused as error:
        raise OSError(
            f"cannot read official checkpoint {str(path)!r}: {error}; expected {EXPECTED_CHECKPOINT}."
        ) from None
    if "ctx" not in tensors:
        raise ValueError(f"{str(path)!r}: the state_dict has no 'ctx' tensor (found {sorted(tensors)}).")
    if not_loaded:
        shown = sorted(not_loaded)
        logger.info(
            "%s: not loaded (objects of the training state, never imported or called): %s%s",
            path,
            ", ".join(shown[:30]),
            f" and {len(shown) - 30} more" if len(shown) > 30 else "",
        )
    return tensors


def load_official_fewshot_split(path) -> dict[str, list[dict]]:
    """
    Read a Dassl few-shot split (`split_fewshot/shot_K-seed_S.pkl`: `{"train": [Datum, ...], "val": [...]}`,
    ImageNet's without "val") as data: `{"train": [{"impath", "label", "domain", "classname"}, ...], ...}` with
    plain str/int values. The file is read like a checkpoint (see the module docstring), never given to `pickle`:
    nothing in it is executed or imported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"few-shot split {str(path)!r} does not exist; expected {EXPECTED_SPLIT}.")
    data = path.read_bytes()
    try:
        if not data:
            raise _Refused("the file is empty")
        if data[:1] != b"\x80":
            raise _Refused(f"it starts with {data[:4]!r}, not with a pickle protocol opcode")
        reader = _PickleReader(_SPLIT_GLOBALS, _BUDGET_BASE + _BUDGET_PER_BYTE * len(data))
        split, end = reader.load(data)
        if end != len(data):
            raise _Refused(f"it has {len(data) - end} bytes after the pickle")
        if not isinstance(split, dict) or "train" not in split or not set(split) <= {"train", "val"}:
            found = sorted(map(_describe, split))[:10] if isinstance(split, dict) else _describe(split)
            raise _Refused(f"it holds {found}, not a dict with 'train' (and 'val') lists")
        result = {}
        for part, items in split.items():
            if not isinstance(items, list):
                raise _Refused(f"its {part!r} is {_describe(items)}, not a list of Datum")
            reader.charge((_COST_OBJECT["dict"] + 4 * _COST_HASHED_ITEM) * len(items))  # a new dict per entry
            result[part] = [_datum_fields(item, f"{part}[{i}]") for i, item in enumerate(items)]
    except _Refused as error:
        raise OSError(f"cannot read few-shot split {str(path)!r}: {error}; expected {EXPECTED_SPLIT}.") from None
    return result


# dassl/data/datasets/base_dataset.py: Datum keeps its fields as `_impath`, `_label`, `_domain`, `_classname`.
_DATUM_FIELDS = {"impath": str, "label": int, "domain": int, "classname": str}


def _datum_fields(item, where: str) -> dict:
    if not isinstance(item, _DatumRecord) or not isinstance(item.state, dict):
        raise _Refused(f"its {where} is {_describe(item)}, not a Datum with attributes")
    fields = {}
    for key, value in item.state.items():
        name = key[1:] if isinstance(key, str) and key.startswith("_") else key
        expected = _DATUM_FIELDS.get(name)
        if expected is None:
            raise _Refused(f"its {where} has the attribute {_describe(key)}, which a Datum has not")
        if type(value) is not expected:
            raise _Refused(f"its {where}.{name} is {_describe(value)}, not a {expected.__name__}")
        fields[name] = value
    missing = sorted(set(_DATUM_FIELDS) - set(fields))
    if missing:
        raise _Refused(f"its {where} lacks {missing}")
    return fields
