"""
Both `torch.save` layouts read as data, for the official-file reader (`official_pickle.py`): `_TorchSaveFile` opens
a zip archive (`<name>/data.pkl` + `<name>/data/<key>`) or a legacy stream (magic number, protocol version, system
info, main pickle, storage keys, raw storages; see torch/serialization.py), interprets its pickle with
`_PickleReader`, records its storages with `_StorageTable` (torch's persistent_load, as plain data) and builds each
tensor on demand from a copy of the file's bytes, after checking offset, sizes and strides against the storage.
"""

import math
import re
import struct
import zipfile
from pathlib import Path

import torch

from .pickle_reader_cocoop import _PickleReader
from .pickle_records_cocoop import (
    _BUDGET_BASE,
    _BUDGET_PER_BYTE,
    _CHECKPOINT_GLOBALS,
    _MAX_EXTENT,
    _describe,
    _Global,
    _Inert,
    _Refused,
    _StorageRef,
    _StorageType,
    _TensorRecord,
)


# torch/serialization.py: `_legacy_save` pickles MAGIC_NUMBER, PROTOCOL_VERSION and sys_info before the object.
_LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_STORAGE_KEY = re.compile(r"[0-9A-Za-z_]{1,64}")
_MAX_DIMS = 64


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
