"""
The "did you mean ...?" of a refused name, one wording for a flag on the command line (exact_option_parser) and a name
in a config file (config_flags): the closest known name of each unknown one, by difflib's similarity.
"""

import difflib


MAX_EXAMINED = 100  # unknown names looked at
MAX_NAME_LENGTH = 100  # longer than any option: nothing is close to it


def did_you_mean(unknown, known, shown: int = 5) -> str:
    """
    ` (did you mean X?)` for one unknown name with a close known one, ` (did you mean X for x, Y for y?)` for several
    (at most `shown`), '' for none.
    """
    known = list(known)
    hints = []
    # Bounded work for a pasted file of thousands of names: the first names only, none longer than a name can be.
    for name in list(dict.fromkeys(unknown))[:MAX_EXAMINED]:
        close = difflib.get_close_matches(name, known, n=1) if len(name) <= MAX_NAME_LENGTH else []
        if close:
            hints.append((name, close[0]))
        if len(hints) == shown:
            break
    if not hints:
        return ""
    if len(hints) == 1:
        return f" (did you mean {hints[0][1]}?)"
    return f" (did you mean {', '.join(f'{close} for {name}' for name, close in hints[:shown])}?)"
