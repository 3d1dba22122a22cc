"""Checks of what a data file says (a split file, a class-name list, ImageNet's classnames.txt) before anything is read,
sized or labelled by it: each bad entry becomes one ValueError naming the file, the entry and what would be right.

Bounded work for a bounded file: a label is checked against the number of entries of the file before any structure is
sized by it (a 3 KB split file with label 10^12 must not ask for a set of 10^12 labels), and no message expands an
entry beyond a short prefix.

Official reference: CoOp `datasets/oxford_pets.py` `OxfordPets.read_split` (entries `[impath, label, classname]`,
`int(label)`), Dassl `dassl/utils/tools.py` `read_json`, CoOp `datasets/imagenet.py` `ImageNet.read_classnames`.
"""

import json
import os
from pathlib import Path

from cocoop_hf.limits_cocoop import describe_value
from cocoop_hf.processing_cocoop import class_name_key, clean_class_name


# The longest repr of a value put into a message: a hostile file must not make a message as large as itself.
_SHOWN = 80
SPLIT_ENTRY = "[relative_path, label, class_name]"


def short(value) -> str:
    """repr of `value`, cut to a short prefix (a value can be a megabyte of text or a deeply nested list)."""
    return describe_value(value, _SHOWN, typed=False)


def read_text(path, what: str) -> str:
    """
    A data file as text. UTF-8, as the official files are; a leading byte-order mark is dropped: it is an encoding
    mark (Windows editors write it), not content. The official code (plain `open()`) would keep it inside the first
    wnid or name, which then matches no folder and fails there; dropping it reads the file as its author meant, while
    keeping it would silently rename the first class here. Any other undecodable byte: ValueError naming the file,
    the line and the byte.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:  # a folder, a file without read permission: one line, not a traceback
        raise ValueError(f"{what} {path} cannot be read: {error.strerror or error}.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ValueError(
            f"{what} {path} is not UTF-8 text: byte {data[error.start]:#04x} at line {line} (byte offset "
            f"{error.start}) does not decode; save the file as UTF-8."
        ) from None


def text_lines(text: str) -> list[tuple[int, str]]:
    """(line number from 1, stripped line) of the non-blank lines, split as Python's universal newlines split a file
    (`\\n`, `\\r\\n`, `\\r`; the UCF101 lists ship with CRLF endings), as the official `open()` + `readlines()`."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(number, line.strip()) for number, line in enumerate(lines, start=1) if line.strip()]


def read_json(path, what: str):
    """A JSON file's content; ValueError naming the file for text that is not UTF-8, not JSON, or nested so deeply
    that the parser gives up (a few KB of `[` would otherwise raise a RecursionError)."""
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{what} {path} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}."
        ) from None
    except ValueError as error:  # e.g. an integer of more digits than Python converts (sys.int_info)
        raise ValueError(f"{what} {path} is not valid JSON: {str(error)[:_SHOWN]}.") from None
    except RecursionError:
        raise ValueError(
            f"{what} {path} nests its JSON lists too deeply to be a split file ({{split: [{SPLIT_ENTRY}, ...]}})."
        ) from None


def split_entries(path, content, parts, what: str) -> dict[str, list[tuple[str, int, str]]]:
    """
    The entries of the `parts` of a split file's content, each checked as (relative path, label, class name), before
    anything is built from them:
    - the content is a JSON object and each part one of its keys, holding a list;
    - an entry is a list of three: a non-empty path, a label, a non-empty class name;
    - a label is a JSON integer (not a bool, a float or a string): the published files hold integers, and the
      official `int(label)` would turn 0.9 into 0 or "1" into 1 without a word;
    - 0 <= label < the number of entries of the parts read: labels run 0..n-1 over n classes, and each class has an
      entry, so a valid file never has a larger label; checking this first bounds everything sized by labels;
    - one image is listed once per part (the same path twice would let the few-shot draw, `random.sample` over the
      entries of a class, take it twice). The same image in two parts is left to the caller (ImageNet's val is its
      test set).
    ValueError names the file, the part, the entry's index and what is wrong.
    """
    where = f"{what} {path}"
    if not isinstance(content, dict):
        raise ValueError(
            f"{where} holds {type(content).__name__} {short(content)}, not a JSON object "
            f'{{"train"|"val"|"test": [{SPLIT_ENTRY}, ...]}}.'
        )
    missing = [part for part in parts if part not in content]
    if missing:
        raise ValueError(f"{where} has no split {missing[0]!r}; it has {sorted(content)[:10]}.")
    for part in parts:
        if not isinstance(content[part], list):
            raise ValueError(
                f"{where}: split {part!r} is {type(content[part]).__name__} {short(content[part])}, not a list of "
                f"{SPLIT_ENTRY} entries."
            )
    total = sum(len(content[part]) for part in parts)
    result = {}
    for part in parts:
        entries, seen = [], {}
        for index, entry in enumerate(content[part]):
            at = f"{where}: {part}[{index}]"
            if not (isinstance(entry, list) and len(entry) == 3):
                raise ValueError(f"{at} is {short(entry)}; each entry should be {SPLIT_ENTRY}.")
            rel, label, name = entry
            if not isinstance(rel, str) or not rel.strip():
                raise ValueError(f"{at} has the path {short(rel)}; it should be a non-empty relative image path.")
            if isinstance(label, bool) or not isinstance(label, int):
                raise ValueError(
                    f"{at} has the label {short(label)} ({type(label).__name__}); a label is an integer class index "
                    "0..n-1 (written as a JSON integer, e.g. 0)."
                )
            if not 0 <= label < total:
                raise ValueError(
                    f"{at} has the label {short(label)}; labels are class indices 0..n-1 over the n classes, and "
                    f"with {total} entries in {', '.join(map(repr, parts))} no label can exceed {total - 1}."
                )
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{at} has the class name {short(name)}; it should be a non-empty string.")
            key = os.path.normpath(rel)
            if key in seen:
                raise ValueError(
                    f"{at} lists {short(rel)} again (as {part}[{seen[key]}] does): each image may be listed once per "
                    "split; a repeated entry would be drawn and weighted twice. Remove the repeat."
                )
            seen[key] = index
            entries.append((rel, label, name))
        result[part] = entries
    return result


def read_wnid_lines(path) -> dict[str, str]:
    """
    ImageNet's `classnames.txt`: "<wnid> <class name with spaces>" per line, as {wnid: name} in file order (CoOp
    datasets/imagenet.py `ImageNet.read_classnames`). A wnid on two lines is refused, naming both: the official reader
    keeps the last (an OrderedDict assignment), silently renaming the class and, for ImageNet-V2 (labels by line),
    shifting every later label.
    """
    names: dict[str, str] = {}
    line_of: dict[str, int] = {}
    for number, line in text_lines(read_text(path, "classnames file")):
        wnid, _, name = line.partition(" ")
        if not name:
            raise ValueError(f"{path}: line {number} {short(line)} should read '<wnid> <class name>'.")
        if wnid in names:
            raise ValueError(
                f"{path}: wnid {short(wnid)} is on line {line_of[wnid]} ({short(names[wnid])}) and again on line "
                f"{number} ({short(name)}); each wnid names one class: keep one of the lines."
            )
        names[wnid], line_of[wnid] = name, number
    return names


def name_key(name: str, backbone: str = "clip"):
    """
    What makes two class names one prompt for `backbone` (a `model_type`): on CLIP, the words CLIP's tokenizer reads
    (`class_name_key`, the rule of the library's `validate_class_names`: `cat` and `Cat` are one prompt); on another
    backbone, the name itself with the official `"_"` -> `" "` (`clean_class_name`, applied to every prompt): only
    an exact repeat is one prompt for sure. This is weaker than the backbone's tokenizer: MetaCLIP 2's is cased, but
    SigLIP's and SigLIP 2's lowercase (transformers models/siglip/tokenization_siglip.py `do_lower_case`,
    models/siglip2/tokenization_siglip2.py), so `Hen` and `hen` pass here and the model refuses them by its own
    tokenizer's ids (`build_prompt_ids`) when it builds its prompts, before training.
    """
    return class_name_key(name) if backbone == "clip" else clean_class_name(name)


def repeated_names(
    names: list[str], places: list | None = None, word: str = "positions", backbone: str = "clip"
) -> str | None:
    """
    A phrase naming the first repeated name and its two places (`places[i]` is the place of `names[i]`, e.g. a line
    number; by default the position in the list), or None when every name is distinct. Names are compared by
    `name_key` for `backbone`: on CLIP `cat` and `Cat` give identical prompts, so they are a repeat too; on another
    backbone only the same name (with `_` read as a space) is.
    """
    first = {}
    for position, name in enumerate(names):
        key = name_key(name, backbone)
        if key in first:
            at = places if places is not None else range(len(names))
            earlier = names[first[key]]
            if earlier == name:
                return f"{short(name)} is repeated ({word} {at[first[key]]} and {at[position]})"
            reading = (
                "to CLIP's tokenizer, which ignores case and spacing ('_' is a space)"
                if backbone == "clip"
                else "once '_' is read as a space (as in the official code)"
            )
            return (
                f"{short(name)} ({word[:-1]} {at[position]}) reads as the same words as {short(earlier)} "
                f"({word[:-1]} {at[first[key]]}) {reading}"
            )
        first[key] = position
    return None


def read_class_names_file(path, backbone: str = "clip") -> list[str]:
    """
    Class names in label order: a JSON list of strings (as the checkpoint converter reads) or one name per line. UTF-8
    (a leading byte-order mark dropped, see `split_checks.read_text`); a name given twice is refused, naming both
    places: two classes with one name get the same prompt and cannot be told apart (`name_key` for `backbone`).
    """
    if not os.path.isfile(path):
        raise ValueError(f"--class_names_file {path} does not exist.")
    text = read_text(path, "--class_names_file")
    lines = None
    if str(path).endswith(".json") or text.lstrip().startswith("["):
        # Read line by line, a JSON list would give names such as `[`, `"tench",` and `]`.
        try:
            names = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as error:
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            raise ValueError(
                f"--class_names_file {path} looks like JSON but does not parse ({reason}): give a JSON list of "
                "names, or a text file with one name per line."
            ) from None
        if not isinstance(names, list) or not all(isinstance(name, str) and name.strip() for name in names):
            raise ValueError(
                f"--class_names_file {path}: a JSON class-name file must hold a list of non-empty strings, got "
                f"{short(names)}."
            )
        names = [name.strip() for name in names]
    else:
        numbered = text_lines(text)
        names, lines = [name for _, name in numbered], [number for number, _ in numbered]
    if not names:
        raise ValueError(f"--class_names_file {path} holds no class names (one per line, or a JSON list, expected).")
    twice = repeated_names(names, lines, "lines", backbone) if lines else repeated_names(names, backbone=backbone)
    if twice:
        raise ValueError(
            f"--class_names_file {path}: the class name {twice}: two classes with one name get the same prompt and "
            "cannot be told apart; give each class its own name."
        )
    return names
