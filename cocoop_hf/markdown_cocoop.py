"""
Text from users (class names, dataset names, method labels, recipe values) made safe for Markdown: one function for
a table cell or inline text, one for an inline code span. Used by the model card and by every table the training
scripts write (results.md, Table 1, the transfer tables). Standard library only; part of the installed package, not
of the code saved with a model.

What would render harmfully if left raw: `|` splits a table cell, a line break (also CR, U+2028/U+2029, U+0085)
ends the table row or the paragraph, `<` opens HTML (`<!--` hides the rest of the page), `[`/`]` make links and
images, `&` starts an entity (`&#124;` shows as `|`, not as written), `` ` ``/`*`/`_`/`~` start code or emphasis, and
`\\` escapes the next character. Each is shown as written instead.
"""

import unicodedata


# ASCII punctuation that CommonMark lets a backslash escape, and that changes structure or meaning inside a cell.
_ESCAPED = frozenset("\\|<>&[]`*_~")
# Line and paragraph separators, and C0/C1 controls: shown as their Python escape (`\n`, `\x00`, `\u2028`).
_CONTROL_CATEGORIES = ("Cc", "Zl", "Zp")


def _escaped_char(char: str) -> str:
    if char in _ESCAPED:
        return "\\" + char
    if unicodedata.category(char) in _CONTROL_CATEGORIES and char != "\t":
        # "\n" as two characters: a backslash before a letter is a literal backslash in Markdown.
        return char.encode("unicode_escape").decode("ascii")
    return char


def markdown_cell(value) -> str:
    """
    `str(value)` as one Markdown table cell (or inline text) that shows exactly the characters written: the row keeps
    its column count and the table its row count whatever the value holds. Leading and trailing spaces are kept as
    written (Markdown then trims them, which changes no character a reader can see).
    """
    return "".join(_escaped_char(char) for char in str(value))


def markdown_code(value) -> str:
    """
    `str(value)` as an inline code span (a path, a template), or as escaped text where a code span cannot hold it
    (a backtick, or a line break, which a code span would turn into a space).
    """
    text = str(value)
    if not text or "`" in text or any(unicodedata.category(c) in _CONTROL_CATEGORIES for c in text):
        return markdown_cell(text)
    return f"`{text}`"
