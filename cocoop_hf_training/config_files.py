"""
Reading a user's JSON or YAML file of options (a training config file, a grid recipe, a --targets file) as data, in
bounded work whatever the file: a size cap, limited nesting and aliases, duplicate keys refused, and one error line
that names the file and never expands a value.
"""

import json
import os

from cocoop_hf.limits_cocoop import check_file_size, describe_value


# A config file is a few dozen options (the largest shipped recipe has under 2 KB): 1 MiB is generous and bounds the
# work of reading one (the pure-Python YAML loader took over 400 s on a 100 MB value).
MAX_CONFIG_FILE_BYTES = 2**20
# How deep a config file's values may nest, and how many there may be (aliases expanded): a config file is a few
# dozen options, each a plain value or a short list (depth 2 under the file's mapping).
MAX_CONFIG_DEPTH = 16
MAX_CONFIG_VALUES = 10_000


def read_structured_file(path, what: str = "config file"):
    """
    The content of a JSON or YAML file, read as data only: YAML with the safe loader (no tags that build objects),
    libyaml's C one where installed. Bounded work whatever the file: at most MAX_CONFIG_FILE_BYTES, values nested at
    most MAX_CONFIG_DEPTH deep, YAML aliases (`*name`) may not expand the content past MAX_CONFIG_FILE_BYTES, and a key
    given twice in one mapping is refused (the last one would silently win).
    """
    if not os.path.isfile(path):
        raise ValueError(f"{what} {path} does not exist.")
    check_file_size(path, MAX_CONFIG_FILE_BYTES, what)
    with open(path, "rb") as handle:
        data = handle.read(MAX_CONFIG_FILE_BYTES + 1)  # the file may grow after the stat: read no more than allowed
    if len(data) > MAX_CONFIG_FILE_BYTES:
        raise ValueError(f"{what} {path} has more than the {MAX_CONFIG_FILE_BYTES:,} bytes such a file may have.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {error.start} is not): save it as UTF-8.") from None
    if str(path).endswith(".json"):
        try:
            content = json.loads(text, object_pairs_hook=_json_mapping(path, what))
        except json.JSONDecodeError as error:
            raise ValueError(f"{what} {path} is not valid JSON: {error}.") from None
        except RecursionError:
            raise _too_deep(path, what) from None
        except ValueError as error:  # e.g. an integer of more than 4300 digits
            if str(error).startswith(f"{what} {path}"):
                raise
            raise ValueError(f"{what} {path} is not valid JSON here: {_one_line(error)}") from None
        _check_json_size(content, path, what)
        return content
    return _read_yaml(text, path, what)


def _one_line(error, limit: int = 300) -> str:
    """A reader's message on one line, cut to `limit` characters (it may quote the file's text)."""
    text = " ".join(str(error).replace('in "<unicode string>", ', "").split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _json_mapping(path, what: str):
    """A JSON object hook that refuses a key given twice (json.loads keeps the last one without a word)."""

    def mapping(pairs):
        content = dict(pairs)
        if len(content) < len(pairs):
            keys = [key for key, _ in pairs]
            twice = next(key for key in keys if keys.count(key) > 1)
            raise ValueError(f"{what} {path} gives the key {describe_value(twice)} twice in one object.")
        return content

    return mapping


def _check_json_size(content, path, what: str) -> None:
    """Refuse JSON values nested deeper than MAX_CONFIG_DEPTH or more than MAX_CONFIG_VALUES (no recursion)."""
    level, count = [content], 1
    for _ in range(MAX_CONFIG_DEPTH + 1):
        level = [
            child
            for value in level
            if isinstance(value, (dict, list))
            for child in (value.values() if isinstance(value, dict) else value)
        ]
        count += len(level)
        if count > MAX_CONFIG_VALUES:
            raise ValueError(
                f"{what} {path} holds more than {MAX_CONFIG_VALUES:,} values; a config file holds a few dozen options."
            )
        if not level:
            return
    raise _too_deep(path, what)


def _too_deep(path, what: str, line: int | None = None) -> ValueError:
    where = f" line {line}" if line is not None else ""
    return ValueError(
        f"{what} {path}{where}: values nest more than {MAX_CONFIG_DEPTH} deep; a config file holds options whose "
        "values are plain values or short lists."
    )


def _read_yaml(text: str, path, what: str):
    """YAML `text` as data, its events checked first (`_check_yaml_events`) so that composing it is bounded work."""
    import yaml

    # libyaml's C loader reads a 100 MB value in seconds where the pure-Python one took > 400 s; the size cap keeps
    # either bounded, so the pure-Python loader stays a fallback where libyaml is missing.
    loader = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
    try:
        _check_yaml_events(yaml.parse(text, Loader=loader), path, what)
        content = yaml.load(text, Loader=loader)
    except yaml.YAMLError as error:
        raise ValueError(f"{what} {path} is not valid YAML: {_one_line(error)}") from None
    except ValueError as error:  # e.g. an integer of more than 4300 digits
        if str(error).startswith(f"{what} {path}"):
            raise
        raise ValueError(f"{what} {path} is not valid YAML here: {_one_line(error)}") from None
    return content


def _check_yaml_events(events, path, what: str) -> None:
    """
    Refuse, from the parser's events (before any value is built), YAML whose values nest deeper than
    MAX_CONFIG_DEPTH (the C composer recurses per level: 100,000 nested brackets crashed the process), whose aliases
    refer to no finished anchor (a value holding itself), whose mapping gives a key twice, or that holds, aliases
    expanded, more than MAX_CONFIG_VALUES values or MAX_CONFIG_FILE_BYTES characters (a 340-byte "billion laughs"
    file is 387 million strings once expanded). Each anchor's size is counted once, so counting is bounded work.
    """
    anchors = {}  # anchor name -> (characters, values) of its value, aliases expanded
    frames = [{"anchor": None, "chars": 0, "values": 0, "keys": None, "items": 0}]  # open collections, innermost last
    for event in events:
        kind, line = type(event).__name__, event.start_mark.line + 1
        if kind in ("SequenceStartEvent", "MappingStartEvent"):
            if len(frames) > MAX_CONFIG_DEPTH:
                raise _too_deep(path, what, line)
            keys = set() if kind == "MappingStartEvent" else None
            frames.append({"anchor": event.anchor, "chars": 0, "values": 1, "keys": keys, "items": 0})
            continue
        if kind in ("SequenceEndEvent", "MappingEndEvent"):
            frame = frames.pop()
            anchor, chars, values = frame["anchor"], frame["chars"], frame["values"]
        elif kind == "ScalarEvent":
            anchor, chars, values = event.anchor, len(event.value), 1
        elif kind == "AliasEvent":
            if event.anchor not in anchors:
                raise ValueError(
                    f"{what} {path} line {line}: the alias *{_one_line(event.anchor, 40)} refers to no anchor "
                    "finished before it (an undefined one, or the value that holds the alias)."
                )
            anchor, (chars, values) = None, anchors[event.anchor]
        else:
            continue  # stream and document boundaries
        if anchor is not None:
            anchors[anchor] = (chars, values)
        parent = frames[-1]
        # A mapping's items alternate key, value.
        if parent["keys"] is not None and kind == "ScalarEvent" and parent["items"] % 2 == 0:
            if event.value in parent["keys"]:
                raise ValueError(
                    f"{what} {path} line {line}: the key {describe_value(event.value, typed=False)} is given twice in "
                    "one mapping (the last would silently win)."
                )
            parent["keys"].add(event.value)
        parent["items"] += 1
        parent["chars"] += chars
        parent["values"] += values
        if parent["values"] > MAX_CONFIG_VALUES or parent["chars"] > MAX_CONFIG_FILE_BYTES:
            raise ValueError(
                f"{what} {path} line {line}: holds more than {MAX_CONFIG_VALUES:,} values or "
                f"{MAX_CONFIG_FILE_BYTES:,} characters (aliases *name counted as what they stand for); a config "
                "file holds a few dozen options."
            )
