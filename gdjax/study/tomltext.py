"""TOML text for configs: where each key is (the key-to-line map messages cite) and its writer.

`key_lines(text)` maps every dotted key of a TOML document (`optimizers[1].grid.learning_rate`) to
its line, scanning the text once (tables, arrays of tables, inline tables and dotted keys); a loaded
config keeps that map (`ExperimentConfig.lines`). `dumps(values)` writes TOML with `tomli_w` (it
replaced a hand-written writer), so that `tomllib.loads(dumps(d)) == d`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["dumps", "fmt_path", "key_lines", "line_of"]


_BARE = r"[A-Za-z0-9_-]+"


_KEY_PART = rf'(?:{_BARE}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'


_DOTTED = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"


_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_DOTTED})\s*\]\]?")


_KEYLINE_RE = re.compile(rf"^\s*({_DOTTED})\s*=")


_TOKEN_RE = re.compile(rf'"""|\'\'\'|"(?:[^"\\]|\\.)*"|\'[^\']*\'|#.*$|[{{}}\[\],]|({_DOTTED})\s*=')


def _split_dotted(text: str) -> tuple[str, ...]:
    return tuple(
        p.strip()[1:-1] if p.strip()[:1] in "\"'" else p.strip() for p in re.findall(_KEY_PART, text)
    )


def fmt_path(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def key_lines(text: str) -> dict[str, int]:
    """Maps dotted key paths (`optimizers[1].grid.learning_rate`) to the line that defines them.

    A light scan of the TOML text (headers, `key =` lines and keys inside inline tables) that only
    has to be right for text `tomllib` already accepted.
    """
    lines: dict[str, int] = {}
    arrays: dict[tuple, int] = {}  # array-of-tables path -> index of its latest element
    current: tuple = ()
    stack: list[tuple] = []  # open brackets of a value spanning lines: the path each belongs to

    def resolve(parts: tuple[str, ...]) -> tuple:
        out: tuple = ()
        for p in parts:
            out += (p,)
            if out in arrays:
                out += (arrays[out],)
        return out

    def scan_value(text: str, lineno: int, last):
        for m in _TOKEN_RE.finditer(text):
            tok = m.group(0)
            if tok.startswith("#") or tok in ('"""', "'''"):
                break
            if m.group(1):
                base = stack[-1] if stack else current
                last = base + _split_dotted(m.group(1))
                lines.setdefault(fmt_path(last), lineno)
            elif tok in "{[":
                stack.append(last if last is not None else (stack[-1] if stack else current))
            elif tok in "}]":
                if stack:
                    stack.pop()
            elif tok == ",":
                last = None
        return last

    for lineno, raw in enumerate(text.splitlines(), 1):
        if stack:
            scan_value(raw, lineno, None)
            continue
        m = _HEADER_RE.match(raw)
        if m:
            parts = _split_dotted(m.group(2))
            if m.group(1) == "[[":
                base = resolve(parts[:-1]) + (parts[-1],)
                arrays[base] = arrays.get(base, -1) + 1
                current = base + (arrays[base],)
                lines.setdefault(fmt_path(base), lineno)
            else:
                current = resolve(parts)
            lines.setdefault(fmt_path(current), lineno)
            continue
        m = _KEYLINE_RE.match(raw)
        if m:
            path = current + _split_dotted(m.group(1))
            lines.setdefault(fmt_path(path), lineno)
            scan_value(raw[m.end() :], lineno, path)
    return lines


def line_of(lines: Mapping[str, int], path: tuple) -> int | None:
    """The line of `path`, or of the nearest table above it that has one."""
    path = tuple(path)
    while path:
        line = lines.get(fmt_path(path))
        if line is not None:
            return line
        path = path[:-1]
    return None


def _without_none(value):
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


def dumps(values) -> str:
    """Writes a dict of TOML-able values (or a config: its `to_dict()`) as TOML, with `tomli_w`.

    Strings, integers, floats (incl. `inf`/`nan`), booleans, arrays, tables and arrays of tables;
    `None` (TOML has no null) leaves its key out. `tomllib.loads(dumps(d)) == d`.
    """
    import tomli_w  # the study face's dependency, loaded when a config is written

    if hasattr(values, "to_dict"):  # an ExperimentConfig
        values = values.to_dict()
    try:
        return tomli_w.dumps(_without_none(values))
    except TypeError as err:
        raise TypeError(f"cannot write to TOML: {err}") from None
