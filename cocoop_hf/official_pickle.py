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

This module imports neither the model nor the converter (`convert_official.py`, which builds a `CoCoOpModel` from
what `load_official_state_dict` returns), so nothing that reads these files depends on the model code.
"""

import _compat_pickle
import io
import math
import pickletools
import re
import struct
import zipfile
from pathlib import Path

import torch
from transformers.utils import logging


logger = logging.get_logger(__name__)

# Class-dependent buffers of the official PromptLearner (token embeddings of SOS and of "{name}.[EOS]..."): the
# model rebuilds them from its own class names, so they are not returned.
IGNORED_KEYS = ("token_prefix", "token_suffix")

EXPECTED_CHECKPOINT = "a Dassl prompt_learner/model.pth.tar-N file (written by torch.save)"
EXPECTED_SPLIT = "a Dassl few-shot split file (split_fewshot/shot_K-seed_S.pkl, written by pickle.dump)"

# torch/serialization.py: `_legacy_save` pickles MAGIC_NUMBER, PROTOCOL_VERSION and sys_info before the object.
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"

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
_STORAGE_KEY = re.compile(r"[0-9A-Za-z_]{1,64}")
_MAX_DIMS = 64
_MAX_EXTENT = 2**62

# Opcodes that no file read here needs and that reach further than data: out-of-band buffers, the copyreg
# extension registry, protocol-0 class instantiation (INST/OBJ) and text persistent ids.
_REFUSED_OPCODES = {"PERSID", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"}


class _Refused(Exception):
    """The file is not what this module reads; the message says why (the caller adds the file and what is expected)."""


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

_CONSTANT_OPCODES = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_PRIMITIVE_OPCODES = {
    "INT",
    "BININT",
    "BININT1",
    "BININT2",
    "LONG",
    "LONG1",
    "LONG4",
    "FLOAT",
    "BINFLOAT",
}
_TEXT_OPCODES = {
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
    "UNICODE",
    "BINUNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE8",
    "BINBYTES",
    "SHORT_BINBYTES",
    "BINBYTES8",
    "BYTEARRAY8",
}


def _check_key(key) -> None:
    """Dict keys and set items: only values whose hash is cheap and fixed (no tuples: nested ones hash for ever)."""
    if key is None or isinstance(key, (str, bytes, bool)):
        return
    if isinstance(key, int) and -_MAX_EXTENT < key < _MAX_EXTENT:
        return
    raise _Refused(f"a dict key or set item is {_describe(key)}, not a string or a small integer")


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


class _PickleReader:
    """
    Interprets pickles as data (the semantics of pickle.py's `_Unpickler`, restricted): see the module docstring.
    `globals_` maps qualified names to the objects they stand for; `persistent_load` receives BINPERSID ids.
    """

    def __init__(self, globals_: dict, budget: int, persistent_load=None):
        self.globals = globals_
        self.budget = budget
        self.initial_budget = budget
        self.persistent_load = persistent_load
        self.not_loaded = set()  # qualified names of the globals replaced by placeholders

    def charge(self, cost: int) -> None:
        self.budget -= cost
        if self.budget < 0:
            raise _Refused(
                f"reading its pickle would take more than {self.initial_budget} bytes of memory, far more than a "
                "pickle of this size written by torch.save or pickle.dump needs"
            )

    def resolve(self, module, name):
        if not isinstance(module, str) or not isinstance(name, str):
            raise _Refused(f"a global is named by {_describe(module)} and {_describe(name)}, not by strings")
        # Protocol 2 (torch.save's default) spells Python 3 names the Python 2 way (`__builtin__.set`).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qualified_name = _shown(f"{module}.{name}", limit=200)
        known = self.globals.get(qualified_name)
        if known is not None:
            return known
        if len(self.not_loaded) < 1000:
            self.not_loaded.add(qualified_name)
        return _Global(qualified_name)

    def load(self, data: bytes, start: int = 0):
        """The object of the pickle starting at `data[start]`, and the position after its STOP opcode."""
        stream = io.BytesIO(data)
        stream.seek(start)
        stack, metastack, memo = [], [], {}

        def pop_mark():
            nonlocal stack
            items = stack
            stack = metastack.pop()
            return items

        try:
            # genops reads each opcode's argument with a bounds check: a length field larger than the data left
            # is an error, never an allocation.
            for opcode, arg, position in pickletools.genops(stream):
                name = opcode.name
                self.charge(_COST_OPCODE)
                if name in _REFUSED_OPCODES:
                    raise _Refused(f"it uses the pickle opcode {name} (byte {position}), which no checkpoint needs")
                if name == "PROTO":
                    if arg > 5:
                        raise _Refused(f"it is a pickle of protocol {arg}, newer than any Python writes")
                elif name == "FRAME":
                    pass
                elif name == "STOP":
                    if metastack or len(stack) != 1:
                        raise _Refused(f"its pickle ends (byte {position}) with {len(stack)} objects on the stack")
                    return stack.pop(), stream.tell()
                elif name in _CONSTANT_OPCODES:
                    stack.append(_CONSTANT_OPCODES[name])
                elif name in _PRIMITIVE_OPCODES:
                    if isinstance(arg, int):
                        self.charge(arg.bit_length() // 8)
                    stack.append(arg)
                elif name in _TEXT_OPCODES:
                    self.charge(_COST_OBJECT["str"] + _COST_CHAR * len(arg))
                    stack.append(bytes(arg) if name == "BYTEARRAY8" else arg)
                elif name == "MARK":
                    self.charge(_COST_OBJECT["list"])
                    metastack.append(stack)
                    stack = []
                elif name == "POP":
                    if stack:
                        stack.pop()
                    else:
                        pop_mark()
                elif name == "POP_MARK":
                    pop_mark()
                elif name == "DUP":
                    stack.append(stack[-1])
                elif name in ("EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "EMPTY_TUPLE"):
                    kind = name[len("EMPTY_") :].lower()
                    self.charge(_COST_OBJECT[kind])
                    stack.append({"list": list, "dict": dict, "set": set, "tuple": tuple}[kind]())
                elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                    n = int(name[-1])
                    if len(stack) < n:
                        raise IndexError
                    self.charge(_COST_OBJECT["tuple"] + _COST_SEQUENCE_ITEM * n)
                    items = tuple(stack[-n:])
                    del stack[-n:]
                    stack.append(items)
                elif name in ("TUPLE", "LIST"):
                    items = pop_mark()
                    self.charge(_COST_OBJECT[name.lower()] + _COST_SEQUENCE_ITEM * len(items))
                    stack.append(tuple(items) if name == "TUPLE" else items)
                elif name in ("DICT", "FROZENSET"):
                    items = pop_mark()
                    self.charge(_COST_OBJECT["set"] + _COST_HASHED_ITEM * len(items))
                    stack.append(_new_dict(items) if name == "DICT" else _new_frozenset(items))
                elif name in ("APPEND", "APPENDS"):
                    items = [stack.pop()] if name == "APPEND" else pop_mark()
                    self.charge(_COST_SEQUENCE_ITEM * len(items))
                    _extend(stack[-1], items)
                elif name in ("SETITEM", "SETITEMS"):
                    if name == "SETITEM":
                        if len(stack) < 3:
                            raise IndexError
                        items = stack[-2:]
                        del stack[-2:]
                    else:
                        items = pop_mark()
                    self.charge(_COST_HASHED_ITEM * len(items))
                    _set_items(stack[-1], items)
                elif name == "ADDITEMS":
                    items = pop_mark()
                    self.charge(_COST_HASHED_ITEM * len(items))
                    _add_items(stack[-1], items)
                elif name in ("GLOBAL", "STACK_GLOBAL"):
                    if name == "GLOBAL":
                        module, _, global_name = arg.partition(" ")
                    else:
                        global_name = stack.pop()
                        module = stack.pop()
                    self.charge(_COST_OBJECT["record"])
                    stack.append(self.resolve(module, global_name))
                elif name == "REDUCE":
                    args = stack.pop()
                    function = stack.pop()
                    self.charge(_COST_OBJECT["record"])
                    stack.append(_call(function, args))
                elif name in ("NEWOBJ", "NEWOBJ_EX"):
                    if name == "NEWOBJ_EX":
                        stack.pop()  # keyword arguments: no class read here takes any, and none is called
                    args = stack.pop()
                    cls = stack.pop()
                    self.charge(_COST_OBJECT["record"])
                    stack.append(_new(cls, args))
                elif name == "BUILD":
                    state = stack.pop()
                    _build(stack[-1], state)
                elif name == "BINPERSID":
                    if self.persistent_load is None:
                        raise _Refused(f"it holds a persistent id (byte {position}), which a plain pickle has not")
                    self.charge(_COST_OBJECT["record"])
                    stack.append(self.persistent_load(stack.pop()))
                elif name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
                    index = len(memo) if name == "MEMOIZE" else arg
                    # Picklers number memo entries 0, 1, 2, ...: an index that skips ahead only serves to make
                    # an unpickler allocate a huge memo table.
                    if type(index) is not int or not 0 <= index <= len(memo):
                        raise _Refused(
                            f"its pickle stores memo entry {_describe(index)} (byte {position}) out of order"
                        )
                    self.charge(_COST_HASHED_ITEM)
                    memo[index] = stack[-1]
                elif name in ("GET", "BINGET", "LONG_BINGET"):
                    if type(arg) is not int or arg not in memo:
                        raise _Refused(f"its pickle reads memo entry {_describe(arg)} (byte {position}), never stored")
                    stack.append(memo[arg])
                else:
                    raise _Refused(f"it uses the pickle opcode {name} (byte {position}), which no checkpoint needs")
        except (ValueError, EOFError, struct.error) as error:
            raise _Refused(f"its pickle is damaged or truncated ({error})") from None
        except IndexError:
            raise _Refused("its pickle is malformed (an opcode finds too few objects on the stack)") from None
        raise _Refused("its pickle has no STOP opcode")  # not reached: genops ends with STOP or an error


def _new_dict(items: list) -> dict:
    if len(items) % 2:
        raise _Refused("its pickle builds a dict from an odd number of items")
    result = {}
    _set_items(result, items)
    return result


def _new_frozenset(items: list) -> frozenset:
    for item in items:
        _check_key(item)
    return frozenset(items)


def _extend(target, items) -> None:
    if isinstance(target, _Inert):
        return  # items of an object that is not loaded
    if type(target) is not list:
        raise _Refused(f"its pickle appends items to {_describe(target)}, not to a list")
    target.extend(items)


def _set_items(target, items) -> None:
    if isinstance(target, _Inert):
        return
    if not isinstance(target, dict) or len(items) % 2:
        raise _Refused(f"its pickle sets items of {_describe(target)}, not of a dict")
    for key, value in zip(items[::2], items[1::2], strict=True):
        _check_key(key)
        target[key] = value


def _add_items(target, items) -> None:
    if isinstance(target, _Inert):
        return
    if type(target) is not set:
        raise _Refused(f"its pickle adds items to {_describe(target)}, not to a set")
    for item in items:
        _check_key(item)
        target.add(item)


def _call(function, args):
    """REDUCE, interpreted: the recognised globals give records, any other global a placeholder; nothing runs."""
    if not isinstance(args, tuple):
        raise _Refused(f"its pickle calls {_describe(function)} with {_describe(args)}, not an argument tuple")
    if function is _REBUILD_TENSOR:
        # torch/_tensor.py `_reduce_ex_internal`: (storage, offset, size, stride, requires_grad, hooks[, metadata])
        if len(args) not in (6, 7) or not isinstance(args[0], _StorageRef):
            raise _Refused("its pickle rebuilds a tensor with arguments torch.save does not write")
        if len(args) == 7 and args[6]:
            raise _Refused(f"a tensor carries metadata {_describe(args[6])} (conjugate or negative bit)")
        return _TensorRecord(*args[:4])
    if function is _REBUILD_PARAMETER or function is _REBUILD_PARAMETER_WITH_STATE:
        if not args or not isinstance(args[0], _TensorRecord):
            raise _Refused("its pickle rebuilds a parameter from something that is not a tensor")
        return args[0]  # torch/_utils.py: a Parameter wraps the tensor, its first argument
    if function is _ORDERED_DICT:
        if args:
            raise _Refused("its pickle calls collections.OrderedDict with arguments, which pickling never writes")
        return _OrderedDict()
    if function is _DATUM:
        return _DatumRecord()
    if isinstance(function, _Global):
        return _Inert(function)  # the call is not made: its arguments are dropped
    raise _Refused(f"its pickle calls {_describe(function)}, which is not a global")


def _new(cls, args):
    """NEWOBJ, interpreted like REDUCE."""
    if not isinstance(args, tuple):
        raise _Refused(f"its pickle creates {_describe(cls)} with {_describe(args)}, not an argument tuple")
    if cls is _DATUM:
        return _DatumRecord()
    if cls is _ORDERED_DICT and not args:
        return _OrderedDict()
    if isinstance(cls, _Global) and cls not in (_REBUILD_TENSOR, _REBUILD_PARAMETER, _REBUILD_PARAMETER_WITH_STATE):
        return _Inert(cls)
    raise _Refused(f"its pickle creates an object of {_describe(cls)}, which is not a class")


def _build(target, state) -> None:
    """BUILD, interpreted: sets state only on the records that keep it; attributes of anything else are refused."""
    if isinstance(target, _Inert):
        return  # the state of an object that is not loaded
    if isinstance(target, _OrderedDict):
        # OrderedDict.__reduce__ passes vars(self) as state: `_metadata` of Module.state_dict().
        if isinstance(state, tuple) and len(state) == 2:
            state = state[0]
        if state is not None and not isinstance(state, dict):
            raise _Refused(f"its pickle sets the attributes of an OrderedDict from {_describe(state)}")
        target._metadata = (state or {}).get("_metadata")
        return
    if isinstance(target, _DatumRecord):
        if not isinstance(state, dict):
            raise _Refused(f"its pickle sets the attributes of a Datum from {_describe(state)}, not a dict")
        target.state = state
        return
    # A global (class or function), a tensor, a storage type, a plain container: what attacks on restricted
    # unpicklers do (setting Counter.dump_patches, _rebuild_tensor_v2.__defaults__).
    raise _Refused(f"its pickle sets attributes of {_describe(target)}, which no checkpoint does")


# ---------------------------------------------------------------------------------------------- torch.save layouts


def _checked_int(value, what: str, low: int = 0, high: int = _MAX_EXTENT) -> int:
    if type(value) is not int or not low <= value < high:
        raise _Refused(f"{what} is {_describe(value)}, not an integer in [{low}, {high})")
    return value


class _StorageTable:
    """persistent_load of both torch.save layouts: records storages as plain data (torch/serialization.py)."""

    def __init__(self, legacy: bool):
        self.legacy = legacy
        self.refs: dict[str, _StorageRef] = {}

    def __call__(self, saved_id):
        if not isinstance(saved_id, tuple) or not saved_id:
            raise _Refused(f"a persistent id is {_describe(saved_id)}, not a tuple")
        typename = saved_id[0].decode("ascii", "replace") if isinstance(saved_id[0], bytes) else saved_id[0]
        if self.legacy and typename == "module" and len(saved_id) == 4:
            # `_legacy_save` records the source of pickled nn.Module classes for torch's source-change check
            # (which can write .patch files); not needed to read tensors.
            origin = saved_id[1] if isinstance(saved_id[1], _Global) else _Global("<module class>")
            return _Inert(origin)
        expected = 6 if self.legacy else 5
        if typename != "storage" or len(saved_id) != expected:
            raise _Refused(f"a persistent id is {_describe(saved_id)}, not a torch storage record")
        storage_type, key, location, numel = saved_id[1:5]
        if not isinstance(storage_type, _StorageType):
            raise _Refused(f"a storage has type {_describe(storage_type)}, not a torch storage type")
        if not isinstance(key, str) or not _STORAGE_KEY.fullmatch(key):
            raise _Refused(f"a storage has key {_describe(key)}")
        if not isinstance(location, (str, bytes)):
            raise _Refused(f"storage {key!r} has location {_describe(location)}, not a device name")
        numel = _checked_int(numel, f"the element count of storage {key!r}")
        if self.legacy and saved_id[5] is not None:
            raise _Refused(f"storage {key!r} is a view of another storage (written by torch before 1.0)")
        known = self.refs.get(key)
        if known is None:
            known = self.refs[key] = _StorageRef(storage_type.dtype, key, numel)
        elif (known.dtype, known.numel) != (storage_type.dtype, numel):
            raise _Refused(f"storage {key!r} is recorded twice with different types or sizes")
        return known


class _TorchSaveFile:
    """
    A `torch.save` file (zip archive or legacy stream) read as data: `obj` is its object with `_TensorRecord`s for
    tensors, `not_loaded` the globals replaced by placeholders, `tensor(record)` builds one tensor on demand.
    """

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self.archive = None
        self.flat = {}  # storage key -> 1-D tensor over a copy of its bytes
        self.bytes_read = 0
        if self.size == 0:
            raise _Refused("the file is empty")
        self.budget = _BUDGET_BASE + _BUDGET_PER_BYTE * self.size
        with open(path, "rb") as file:
            head = file.read(4)
        if head == _ZIP_MAGIC:
            try:
                self._open_zip()
            except BaseException:
                self.close()
                raise
        elif head[:1] == b"\x80":  # a pickle's PROTO opcode: the legacy stream starts with the pickled magic number
            self._open_legacy()
        else:
            raise _Refused(
                f"it starts with {head!r}, neither a zip archive (torch.save) nor a pickle (legacy torch.save)"
            )

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()
            self.archive = None

    def _open_zip(self) -> None:
        try:
            self.archive = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
            raise _Refused(f"it starts like a zip archive but is damaged or truncated ({error})") from None
        self.records = {info.filename: info for info in self.archive.infolist()}
        pickles = [name for name in self.records if name.count("/") == 1 and name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise _Refused(
                f"it is a zip archive with {len(pickles)} <name>/data.pkl records where torch.save writes one"
            )
        self.prefix = pickles[0][: -len("data.pkl")]
        if self.prefix + "constants.pkl" in self.records:
            raise _Refused("it is a TorchScript archive (torch.jit.save), not a torch.save checkpoint")
        byteorder = self.prefix + "byteorder"
        if byteorder in self.records and self._record(byteorder) != b"little":
            raise _Refused("it was written on a big-endian machine, which is not supported")
        data = self._record(pickles[0])
        self.storages = _StorageTable(legacy=False)
        reader = _PickleReader(_CHECKPOINT_GLOBALS, self.budget, persistent_load=self.storages)
        self.obj, end = reader.load(data)
        if end != len(data):
            raise _Refused(f"its data.pkl has {len(data) - end} bytes after the pickle")
        self.not_loaded = reader.not_loaded

    def _record(self, name: str, expected_size: int | None = None) -> bytes:
        info = self.records.get(name)
        if info is None:
            raise _Refused(f"its record {name!r} is missing")
        if info.compress_type != zipfile.ZIP_STORED:
            raise _Refused(f"its record {name!r} is compressed, which torch.save never does")
        if info.file_size > self.size or info.compress_size != info.file_size:
            raise _Refused(f"its record {name!r} claims {info.file_size} bytes in a {self.size}-byte file")
        if expected_size is not None and info.file_size != expected_size:
            raise _Refused(f"its record {name!r} holds {info.file_size} bytes where its tensors need {expected_size}")
        try:
            return self.archive.read(name)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, RuntimeError) as error:  # RuntimeError: encrypted
            raise _Refused(f"its record {name!r} cannot be read ({error})") from None

    def _open_legacy(self) -> None:
        # torch/serialization.py `_legacy_save`: magic number, protocol version, sys_info, the object, the sorted
        # storage keys, then per storage its element count (8 bytes, little endian) and its bytes.
        self.data = data = self.path.read_bytes()
        header = _PickleReader({}, self.budget)
        magic, position = header.load(data, 0)
        if magic != _LEGACY_MAGIC_NUMBER:
            raise _Refused("it is a pickle, but not one torch.save wrote (no torch magic number)")
        version, position = header.load(data, position)
        if version != _LEGACY_PROTOCOL_VERSION:
            raise _Refused(f"it is a legacy torch.save file of protocol {_describe(version)}, not 1001")
        sys_info, position = header.load(data, position)
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise _Refused("it was written on a big-endian machine (or has no system info), which is not supported")
        self.storages = _StorageTable(legacy=True)
        reader = _PickleReader(_CHECKPOINT_GLOBALS, header.budget, persistent_load=self.storages)
        self.obj, position = reader.load(data, position)
        self.not_loaded = reader.not_loaded
        keys, position = _PickleReader({}, reader.budget).load(data, position)
        if not isinstance(keys, list) or any(not isinstance(key, str) for key in keys):
            raise _Refused("its list of storage keys is not a list of strings")
        if len(set(keys)) != len(keys) or set(keys) != set(self.storages.refs):
            raise _Refused("its list of storage keys does not match the storages its pickle refers to")
        self.offsets = {}
        for key in keys:
            ref = self.storages.refs[key]
            nbytes = ref.numel * ref.dtype.itemsize
            if position + 8 > len(data):
                raise _Refused(f"it is truncated: storage {key!r} is missing")
            (numel,) = struct.unpack_from("<q", data, position)
            if numel != ref.numel:
                raise _Refused(f"storage {key!r} holds {numel} elements where its tensors need {ref.numel}")
            if position + 8 + nbytes > len(data):
                raise _Refused(f"it is truncated: storage {key!r} ends after the end of the file")
            self.offsets[key] = position + 8
            position += 8 + nbytes
        if position != len(data):
            raise _Refused(f"it has {len(data) - position} bytes after its last storage")

    def _flat(self, ref: _StorageRef) -> torch.Tensor:
        """The storage as a 1-D tensor over a copy of its bytes; the storages read add up to at most the file."""
        if ref.key in self.flat:
            return self.flat[ref.key]
        nbytes = ref.numel * ref.dtype.itemsize
        if nbytes > self.size:
            raise _Refused(f"storage {ref.key!r} claims {nbytes} bytes, more than the whole file ({self.size})")
        self.bytes_read += nbytes
        if self.bytes_read > self.size:
            raise _Refused("its storages add up to more bytes than the file holds (overlapping records)")
        if self.archive is not None:
            raw = self._record(f"{self.prefix}data/{ref.key}", nbytes)
        else:
            raw = memoryview(self.data)[self.offsets[ref.key] : self.offsets[ref.key] + nbytes]
        flat = torch.frombuffer(bytearray(raw), dtype=ref.dtype) if nbytes else torch.empty(0, dtype=ref.dtype)
        if ref.dtype is torch.bool and nbytes and int(flat.view(torch.uint8).max()) > 1:
            raise _Refused(f"storage {ref.key!r} of booleans holds bytes other than 0 and 1")
        self.flat[ref.key] = flat
        return flat

    def tensor(self, record: _TensorRecord) -> torch.Tensor:
        """The tensor a record describes, a view of its storage; refuses anything outside the storage."""
        ref = record.storage
        offset = _checked_int(record.offset, f"the offset of a tensor in storage {ref.key!r}")
        if not isinstance(record.size, tuple) or not isinstance(record.stride, tuple):
            raise _Refused(f"a tensor of storage {ref.key!r} has no size and stride tuples")
        if len(record.size) != len(record.stride) or len(record.size) > _MAX_DIMS:
            raise _Refused(
                f"a tensor of storage {ref.key!r} has {len(record.size)} sizes and {len(record.stride)} strides"
            )
        size = [_checked_int(s, f"a size of a tensor in storage {ref.key!r}") for s in record.size]
        stride = [_checked_int(s, f"a stride of a tensor in storage {ref.key!r}") for s in record.stride]
        numel = math.prod(size)
        # No more elements than the storage holds (a stride-0 view of a few bytes could stand for terabytes once
        # copied), and no element outside it.
        if numel > ref.numel:
            raise _Refused(
                f"a tensor of shape {tuple(size)} has more elements than its storage {ref.key!r} ({ref.numel})"
            )
        end = offset + 1 + sum((s - 1) * st for s, st in zip(size, stride, strict=True)) if numel else offset
        if end > ref.numel:
            raise _Refused(
                f"a tensor of shape {tuple(size)}, strides {tuple(stride)} at offset {offset} reads outside its "
                f"storage {ref.key!r} of {ref.numel} elements"
            )
        return self._flat(ref).as_strided(size, stride, offset)


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
