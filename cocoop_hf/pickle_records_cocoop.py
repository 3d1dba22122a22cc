"""
The records of the official-file reader (`official_pickle.py`): what a pickle's objects become when read as data.

- `_Refused`: a file is not what the reader reads (the loaders turn it into one `OSError` naming the file);
- the memory budget (`_BUDGET_*`, `_COST_*`): what each opcode is charged, bounded by the file's size;
- the inert records a pickle builds instead of objects (`_Global`, `_Inert`, `_StorageType`, `_StorageRef`,
  `_TensorRecord`, `_OrderedDict`, `_DatumRecord`), never imported, never called;
- the globals recognised by name in checkpoints and few-shot splits (`_CHECKPOINT_GLOBALS`, `_SPLIT_GLOBALS`);
- `_describe` / `_shown`: values and names from a file, short and safe to print in messages.

Imports only torch (dtypes). Not imported by the model: saved folders never ship it.
"""

import torch


# Estimated bytes of memory a pickle may make this reader hold: generous for real files (a Dassl checkpoint's
# data.pkl is a few KB; an ImageNet 16-shot split of ~2 MB is estimated at ~15 bytes per byte), small for hostile
# ones. The costs are upper bounds of CPython's sizes (sys.getsizeof) on a 64-bit machine.
_BUDGET_BASE = 16 * 2**20
_BUDGET_PER_BYTE = 32
_COST_OPCODE = 16  # a stack slot; small ints, floats, references
_COST_OBJECT = {"set": 232, "dict": 72, "list": 64, "tuple": 48, "record": 64, "str": 64}
_COST_SEQUENCE_ITEM = 16  # one slot of a list or tuple, over-allocation included
_COST_HASHED_ITEM = 112  # one entry of a dict or set (or the memo), table growth included
_COST_CHAR = 4  # a str holds up to 4 bytes per character

# torch/storage.py: the storage classes `torch.save` names, and their element types.
_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}
_MAX_EXTENT = 2**62


class _Refused(Exception):
    """The file is not what the reader reads; the message says why (the caller adds the file and what is expected)."""


def _shown(text: str, limit: int = 120) -> str:
    """A name from the file, safe to print: escaped (no control characters) and cut to `limit` characters."""
    text = ascii(text)[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."


class _Global:
    """A global the pickle names. Never imported: only its name is kept."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"<global {self.name}>"


class _Inert:
    """What a call of (or an object of) a global outside the recognised ones stands for: holds nothing."""

    __slots__ = ("origin",)

    def __init__(self, origin: _Global):
        self.origin = origin

    def __repr__(self):
        return f"<not loaded: {self.origin.name}>"


class _StorageType:
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: torch.dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"<storage type torch.{self.name}>"


class _StorageRef:
    """A storage of the file (what torch's persistent_load would build): plain data, nothing read yet."""

    __slots__ = ("dtype", "key", "numel")

    def __init__(self, dtype: torch.dtype, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel

    def __repr__(self):
        return f"<storage {self.key!r}: {self.numel} x {self.dtype}>"


class _TensorRecord:
    """The arguments of `torch._utils._rebuild_tensor_v2`, checked later against the storage's bytes."""

    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __repr__(self):
        return f"<tensor of shape {self.size}>"


class _OrderedDict(dict):
    """Stands for `collections.OrderedDict` (what `Module.state_dict()` returns), keeping `_metadata`."""

    __slots__ = ("_metadata",)


class _DatumRecord:
    """Stands for Dassl's `Datum`: the attribute dict its BUILD opcode carries."""

    __slots__ = ("state",)

    def __init__(self):
        self.state = None

    def __repr__(self):
        return "<Datum>"


# The globals read as data; each is compared by identity, never called.
_REBUILD_TENSOR = _Global("torch._utils._rebuild_tensor_v2")
_REBUILD_PARAMETER = _Global("torch._utils._rebuild_parameter")
_REBUILD_PARAMETER_WITH_STATE = _Global("torch._utils._rebuild_parameter_with_state")
_ORDERED_DICT = _Global("collections.OrderedDict")
_DATUM = _Global("dassl.data.datasets.base_dataset.Datum")
_CHECKPOINT_GLOBALS = {
    g.name: g for g in (_REBUILD_TENSOR, _REBUILD_PARAMETER, _REBUILD_PARAMETER_WITH_STATE, _ORDERED_DICT)
}
_CHECKPOINT_GLOBALS.update({f"torch.{name}": _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()})
_SPLIT_GLOBALS = {_ORDERED_DICT.name: _ORDERED_DICT, _DATUM.name: _DATUM}


def _describe(value) -> str:
    """A short description of a value read from a file, for messages (never the whole of a big value)."""
    if isinstance(value, (_Global, _Inert, _StorageType, _StorageRef, _TensorRecord, _DatumRecord)):
        return repr(value)
    if isinstance(value, (dict, list, tuple, set, frozenset)):
        kind = type(value).__name__.lstrip("_")
        return f"{'an' if kind[0] in 'aeiouAEIOU' else 'a'} {kind} of {len(value)} items"
    if isinstance(value, (str, bytes)):
        return repr(value[:60]) + ("..." if len(value) > 60 else "")
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return repr(value)
