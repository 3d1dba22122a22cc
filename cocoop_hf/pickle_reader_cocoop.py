"""
The pickle opcode interpreter of the official-file reader (`official_pickle.py`): `_PickleReader` reads a pickle
as data (the semantics of pickle.py's `_Unpickler`, restricted) over `pickletools.genops`.

Globals are names (`pickle_records_cocoop.py` records), REDUCE / NEWOBJ / BUILD are interpreted by `_call`, `_new`
and `_build`, never executed; every opcode is charged against a budget; opcodes no checkpoint or split needs are
refused. See official_pickle.py's module docstring for the guarantees.
"""

import _compat_pickle
import io
import pickletools
import struct

from .pickle_records_cocoop import (
    _COST_CHAR,
    _COST_HASHED_ITEM,
    _COST_OBJECT,
    _COST_OPCODE,
    _COST_SEQUENCE_ITEM,
    _DATUM,
    _MAX_EXTENT,
    _ORDERED_DICT,
    _REBUILD_PARAMETER,
    _REBUILD_PARAMETER_WITH_STATE,
    _REBUILD_TENSOR,
    _DatumRecord,
    _describe,
    _Global,
    _Inert,
    _OrderedDict,
    _Refused,
    _shown,
    _StorageRef,
    _TensorRecord,
)


# Opcodes that no file read here needs and that reach further than data: out-of-band buffers, the copyreg
# extension registry, protocol-0 class instantiation (INST/OBJ) and text persistent ids.
_REFUSED_OPCODES = {"PERSID", "INST", "OBJ", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER", "READONLY_BUFFER"}

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


class _PickleReader:
    """
    Interprets pickles as data (the semantics of pickle.py's `_Unpickler`, restricted): see official_pickle.py's
    module docstring.
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
