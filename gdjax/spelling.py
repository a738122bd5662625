"""The name a user most likely meant, for "did you mean ...?" in error messages.

Pure Python (no JAX, no NumPy): the study face's drawing process, which never imports JAX, uses it
as the core does.
"""

from __future__ import annotations

import difflib

__all__ = ["closest", "nearest"]


def closest(name, options, cutoff: float = 0.6) -> str | None:
    """The option `name` most likely meant: the same name in another case ("SGD" -> "sgd"), else the
    closest spelling (`difflib`, compared case-folded too), else None."""
    options = [str(o) for o in options]
    folded = {o.casefold(): o for o in options}
    if str(name).casefold() in folded:
        return folded[str(name).casefold()]
    match = difflib.get_close_matches(str(name), options, n=1, cutoff=cutoff)
    if match:
        return match[0]
    match = difflib.get_close_matches(str(name).casefold(), list(folded), n=1, cutoff=cutoff)
    return folded[match[0]] if match else None


def nearest(name: str, options) -> str:
    """A ' (did you mean X?)' suffix naming the closest option, or ''."""
    match = closest(name, options, cutoff=0.5)
    return f" (did you mean {match!r}?)" if match else ""
