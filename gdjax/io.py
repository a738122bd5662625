"""Files on disk: one atomic writer, one JSON policy, one number formatter, safe NPZ reading.

Every file gdjax writes (summaries, histories, manifests, figures, model files) goes through
`atomic_write`: the bytes go to a temporary file `.tmp-gdjax-*` in the destination's folder, are
flushed and fsynced, the file gets mode 0644 (readable by all, like a file written with `open`;
`mkstemp` would leave 0600), and `os.replace` moves it into place. A reader never sees half a file,
an error (KeyboardInterrupt included) leaves any earlier file in place and no temporary file behind;
only a kill -9 in the middle can leave a `.tmp-gdjax-*` file, which `remove_stale_temps` clears.

JSON policy. JSON has no infinity or NaN. gdjax writes a non-finite float as the string `"inf"`,
`"-inf"` or `"nan"` (never the non-standard tokens `Infinity`/`NaN`, never null), and `loads` /
`read_json` map those three strings back to floats.

NPZ reading. `read_npz` checks an archive before anything is decompressed or allocated: a zip
file, member names, the `.npy` headers' shapes and dtypes (no object arrays: `allow_pickle=False`
always), declared sizes against the zip directory's uncompressed sizes and their sum against a
decompressed-size budget (`decompressed_budget`), so a zip bomb is refused unread. Every error
is a `FileFormatError` naming the file.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import errno
import io as _io
import json
import math
import os
import stat
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from typing import Any, BinaryIO

import numpy as np

from gdjax.types import PyTree, Trace

__all__ = [
    "BLEW_UP",
    "TEMP_PREFIX",
    "FileFormatError",
    "NpzMember",
    "SummaryTable",
    "atomic_write",
    "csv_text",
    "decompressed_budget",
    "dumps",
    "format_number",
    "format_table",
    "inspect_npz",
    "leaf_names",
    "load_trace",
    "save_trace",
    "trace_arrays",
    "trace_from_arrays",
    "json_value",
    "loads",
    "memory_budget",
    "open_regular",
    "read_json",
    "read_text",
    "read_npz",
    "remove_stale_temps",
    "write_bytes",
    "write_json",
    "write_npz",
    "write_text",
]

# Statuses of a lane that blew up (`Status.DIVERGED`, `Status.NONFINITE` by name).
BLEW_UP = ("diverged", "nonfinite")
# Prefix of every temporary file gdjax writes; `remove_stale_temps` removes only these.
TEMP_PREFIX = ".tmp-gdjax-"
FILE_MODE = 0o644


class FileFormatError(ValueError):
    """A file gdjax was asked to read is not what it should be; the message names the file."""


# ------------------------------------------------------------------------------------------ writing
def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> str:
    """Calls `write(f)` on a binary temp file next to `path`, then moves it into place atomically.

    Returns:
      `path` as a string.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, "a folder is there; give a file name", path)
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix="-" + os.path.basename(path))
    except OSError as err:
        # Name the file asked for, not the temporary one beside it.
        raise type(err)(err.errno, f"cannot write {path!r}: {err.strerror}", folder) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; what gdjax writes is meant to be read
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError) and (err.filename is None or tmp in (err.filename, err.filename2)):
            # A write that failed (a full disk: EFBIG, ENOSPC) names the file asked for, not its temp.
            named = type(err)(f"cannot write {path!r}: {err.strerror or err}")
            named.errno = err.errno  # the message names the file; str() keeps it as written
            raise named from None
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    return atomic_write(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str) -> str:
    """Writes `text` as UTF-8, atomically; newlines are written as given."""
    return write_bytes(path, text.encode("utf-8"))


def json_value(value):
    """`value` with every non-finite float as "inf"/"-inf"/"nan" and NumPy scalars as Python ones."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "inf", "-inf", "nan"
    if isinstance(value, Mapping):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_value(value.tolist())
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def dumps(value, *, indent: int | None = 1) -> str:
    """JSON text under gdjax's policy (non-finite floats as strings); never `NaN`/`Infinity` tokens."""
    return json.dumps(json_value(value), indent=indent, allow_nan=False)


def _restore(value):
    if isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore(v) for v in value]
    return value


# gdjax's own JSON nests a few levels (rows, coords, manifests); a document nested deeper is hostile
# or damaged, and Python's parser meets it with a RecursionError (issue 19).
MAX_JSON_DEPTH = 64


def _check_depth(value, limit: int) -> None:
    stack = [(value, 1)]
    while stack:  # iterative: the check itself must not recurse
        v, depth = stack.pop()
        if depth > limit:
            raise ValueError(f"JSON nested more than {limit} levels deep")
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)


def loads(text: str):
    """Reads JSON written by `dumps`: "inf"/"-inf"/"nan" strings become floats again.

    Raises:
      ValueError: not JSON, or nested more than `MAX_JSON_DEPTH` levels (never a RecursionError).
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    _check_depth(value, MAX_JSON_DEPTH)
    return _restore(value)


def write_json(path: str | os.PathLike, value) -> str:
    return write_text(path, dumps(value) + "\n")


def open_regular(path: str | os.PathLike, *, what: str = "file", follow: bool = True) -> int:
    """Opens `path` for reading and returns the descriptor, only if it is a regular file.

    A FIFO, a device or a folder is refused without blocking on it (`O_NONBLOCK`); with
    `follow=False` a symbolic link is refused too (`O_NOFOLLOW`): inside a run folder gdjax never
    follows one (issue 19).

    Raises:
      FileFormatError: missing, a link (with `follow=False`), or not a regular file; names the file.
    """
    path = os.fspath(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileFormatError(f"{what} not found: {path}") from None
    except OSError as err:
        if not follow and os.path.islink(path):
            raise FileFormatError(
                f"{path} is a symbolic link; gdjax never follows a link inside a run folder (remove it)"
            ) from None
        raise FileFormatError(f"cannot read {what} {path}: {err.strerror}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a pipe, socket or device)"
        raise FileFormatError(f"{path} is {kind}, not a {what}")
    return fd


def read_text(
    path: str | os.PathLike, *, what: str = "file", follow: bool = True, max_bytes: int | None = None
) -> str:
    """The UTF-8 text of a regular file (see `open_regular`); every failure is one line naming it."""
    path = os.fspath(path)
    fd = open_regular(path, what=what, follow=follow)
    with os.fdopen(fd, "rb") as f:
        if max_bytes is not None and os.fstat(f.fileno()).st_size > max_bytes:
            raise FileFormatError(f"{path} is larger than the {max_bytes} bytes a {what} may take")
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise FileFormatError(
            f"{path}, line {line}: not UTF-8 text (byte {err.start}), not a {what}"
        ) from None


def read_json(path: str | os.PathLike, *, what: str = "JSON file", follow: bool = True):
    """Reads a JSON file written by gdjax; a damaged file raises `FileFormatError` naming it.

    With `follow=False` (files inside a run folder) a symbolic link is refused, not followed.
    """
    path = os.fspath(path)
    text = read_text(path, what=what, follow=follow)
    try:
        return loads(text)
    except ValueError as err:
        raise FileFormatError(f"{path} is not a readable {what} (damaged or truncated): {err}") from None


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> str:
    """Writes `arrays` as an uncompressed `.npz`, atomically."""
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def remove_stale_temps(folder: str | os.PathLike) -> list[str]:
    """Removes gdjax's own temporary files (`.tmp-gdjax-*`) from `folder` (left by a kill -9)."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(folder):
            if name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, name))
                    removed.append(name)
    return removed


# --------------------------------------------------------------------------------------- formatting
def format_number(value, digits: int = 6) -> str:
    """A cell of a table: floats to `digits` significant digits, None as "-", others as `str`."""
    if value is None:
        return "-"
    if isinstance(value, float | np.floating):
        return f"{float(value):.{digits}g}"
    return str(value)


def format_table(rows: list[Mapping[str, Any]], *, align_numbers: bool = True) -> str:
    """An aligned text table of `rows` (columns in first-seen order); numeric columns right-aligned."""
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    if not cols:
        return "(empty table)"
    cells = [[v if isinstance(v := row.get(c), str) else format_number(v) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    numeric = [
        align_numbers
        and all(isinstance(row.get(c), int | float | np.number) or row.get(c) is None for row in rows)
        and not all(row.get(c) is None for row in rows)
        for c in cols
    ]

    def line(values):
        return "  ".join(
            v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)
        ).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def csv_text(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV with a header row; None as an empty cell, floats with `repr` (round-trips exactly)."""
    rows = list(rows)
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(
            {k: "" if v is None else (repr(float(v)) if isinstance(v, float) else v) for k, v in r.items()}
        )
    return buf.getvalue()


class SummaryTable(list):
    """A list of row dicts that prints as an aligned text table and writes CSV or JSON atomically."""

    @property
    def columns(self) -> list[str]:
        """Every key of the rows, in first-seen order (as `pandas.DataFrame(table).columns` lists them)."""
        cols: list[str] = []
        for row in self:
            cols.extend(k for k in row if k not in cols)
        return cols

    def __str__(self) -> str:
        return format_table(self)

    def to_csv(self, path: str | os.PathLike) -> None:
        """Writes the table as CSV (None as an empty cell), atomically (temp file + `os.replace`)."""
        write_text(path, csv_text(self))

    def to_json(self, path: str | os.PathLike) -> None:
        """Writes the rows as a JSON list, atomically; non-finite numbers become "inf"/"-inf"/"nan"."""
        write_json(path, list(self))


# ------------------------------------------------------------------------------------- NPZ reading
def memory_budget(fraction: float = 0.5) -> int:
    """`fraction` of the host's physical memory: what one file or data set may take once read."""
    try:
        return int(fraction * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return int(fraction * 8 * 1024**3)


# Where a user sets the decompressed-size budget of `.npz` files, in bytes (issue 19).
BUDGET_ENV = "GDJAX_NPZ_BUDGET"


def _available_memory() -> int:
    """Bytes of memory this process may still take: the host's `MemAvailable` (else its physical
    memory), no more than its cgroup's headroom (`memory.max - memory.current`, where a container
    sets one) nor its address-space limit (`ulimit -v`)."""
    available = memory_budget(1.0)
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:
                available = min(available, max(int(limit) - int(f.read()), 0))
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            available = min(available, soft)
    return available


def decompressed_budget() -> int:
    """The most bytes an `.npz` file's arrays may declare in all, decompressed.

    `GDJAX_NPZ_BUDGET` (bytes, e.g. `4e9`) when set, else a quarter of the memory this process may
    still take (`MemAvailable`, within a container's cgroup limit and `ulimit -v`):
    what is read is then copied, cast to float64 and moved to a device, so a file that declares
    more than that cannot be used here anyway. Deflate packs up to ~1030 bytes into one, so a ratio
    limit cannot tell a zip bomb from real data; a budget on declared sizes can (issue 19).

    Raises:
      ValueError: `GDJAX_NPZ_BUDGET` is not a positive number.
    """
    raw = os.environ.get(BUDGET_ENV)
    if raw is None or not raw.strip():
        return _available_memory() // 4
    try:
        value = float(raw)
        if not math.isfinite(value) or value <= 0:
            raise ValueError
    except ValueError:
        raise ValueError(f"{BUDGET_ENV}={raw!r} is not a positive number of bytes (e.g. 4e9)") from None
    return int(value)


def _bytes(n: float) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


class NpzMember:
    """What a member's `.npy` header declares: name, shape, dtype, sizes."""

    def __init__(self, name: str, shape: tuple[int, ...], dtype: np.dtype, file_size: int, stored: int):
        self.name, self.shape, self.dtype = name, shape, dtype
        self.file_size, self.stored = file_size, stored

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def __repr__(self) -> str:
        return f"NpzMember({self.name!r}, shape={self.shape}, dtype={self.dtype})"


_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 65536


def _npy_header(raw: bytes, path: str, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
    if raw[:6] != _NPY_MAGIC or len(raw) < 10:
        raise FileFormatError(f"{path}: member {name!r} is not a .npy array")
    major = raw[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", raw[8:10]), 10
    elif major in (2, 3):
        if len(raw) < 12:
            raise FileFormatError(f"{path}: member {name!r} has a truncated .npy header")
        (hlen,), start = struct.unpack("<I", raw[8:12]), 12
    else:
        raise FileFormatError(f"{path}: member {name!r} has an unknown .npy version {major}")
    if hlen > _MAX_HEADER or len(raw) < start + hlen:
        raise FileFormatError(f"{path}: member {name!r} has a truncated or oversized .npy header")
    try:
        header = ast.literal_eval(raw[start : start + hlen].decode("latin1"))
        shape = tuple(int(s) for s in header["shape"])
        dtype = np.dtype(header["descr"]) if isinstance(header["descr"], str) else None
        if not isinstance(header["fortran_order"], bool):
            raise ValueError
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        raise FileFormatError(f"{path}: member {name!r} has an unreadable .npy header") from None
    if dtype is None or dtype.hasobject or dtype.fields is not None or dtype.itemsize == 0:
        raise FileFormatError(
            f"{path}: member {name!r} holds objects or records ({header['descr']!r}); gdjax reads only "
            "plain numeric, boolean and string arrays (it never unpickles)"
        )
    if any(s < 0 for s in shape):
        raise FileFormatError(f"{path}: member {name!r} declares a negative shape {shape}")
    return shape, dtype, start + hlen


def inspect_npz(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict[str, NpzMember]:
    """Checks an `.npz` file without decompressing its arrays; returns what each member declares.

    Only the zip directory and each member's `.npy` header are read. Every member's declared size
    (shape times item size) must equal its uncompressed size in the zip directory, and their sum
    must fit the decompressed-size budget `max_bytes` (default `decompressed_budget()`), so a zip
    bomb is refused before a byte of it is inflated.

    Raises:
      FileFormatError: not a regular file or not a zip archive (a text file, a truncated download),
        a member that is not a plain `.npy` array, declared sizes inconsistent with the zip
        directory, or a total above `max_bytes`.
    """
    path = os.fspath(path)
    budget = decompressed_budget() if max_bytes is None else max_bytes
    fd = open_regular(path, what=".npz file")
    with os.fdopen(fd, "rb") as f:
        head = f.read(4)
    if head[:4] == _NPY_MAGIC[:4]:
        raise FileFormatError(f"{path} is a single .npy array, not an .npz archive of named arrays")
    if head[:2] != b"PK":
        raise FileFormatError(
            f"{path} is not an .npz archive (it does not start like a zip file: empty, text, or another "
            "format)"
        )
    members: dict[str, NpzMember] = {}
    try:
        with zipfile.ZipFile(path) as z:
            declared = sum(i.file_size for i in z.infolist() if not i.is_dir())
            if declared > budget:  # from the directory alone, before any member is inflated
                _over_budget(path, declared, os.path.getsize(path), budget)
            total = 0
            for info in z.infolist():
                if info.is_dir():
                    continue
                if not info.filename.endswith(".npy"):
                    raise FileFormatError(f"{path}: member {info.filename!r} is not a .npy array")
                name = info.filename[: -len(".npy")]
                if name in members:
                    raise FileFormatError(f"{path}: member {name!r} appears twice")
                with z.open(info) as m:
                    raw = m.read(_MAX_HEADER + 16)
                shape, dtype, offset = _npy_header(raw, path, name)
                member = NpzMember(name, shape, dtype, info.file_size, info.compress_size)
                if info.file_size != offset + member.nbytes:
                    raise FileFormatError(
                        f"{path}: member {name!r} declares shape {shape} {dtype} ({member.nbytes} bytes) "
                        f"but holds {info.file_size - offset} bytes (damaged file)"
                    )
                total += member.nbytes
                members[name] = member
    except FileFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as err:
        raise FileFormatError(
            f"{path} is not a readable .npz archive (damaged or truncated): {err}"
        ) from None
    except Exception as err:  # zlib.error and friends from a damaged member
        raise FileFormatError(
            f"{path} is not a readable .npz archive (damaged): {type(err).__name__}: {err}"
        ) from None
    if total > budget:
        _over_budget(path, total, os.path.getsize(path), budget)
    return members


def _over_budget(path: str, declared: int, on_disk: int, budget: int):
    bomb = "; so much from so few bytes looks like a zip bomb" if declared > 100 * on_disk else ""
    raise FileFormatError(
        f"{path} declares {_bytes(declared)} of arrays once decompressed ({_bytes(on_disk)} on disk), "
        f"more than the {budget} bytes allowed for it (the decompressed-size budget, {_bytes(budget)}); "
        f"nothing was decompressed{bomb}. If the file is genuine, set {BUDGET_ENV} to a larger "
        "number of bytes, or free memory"
    )


def _check_required(path: str, members: Mapping[str, NpzMember], required: Iterable[str]) -> None:
    """Raises `FileFormatError` naming the `required` arrays an `.npz` lacks."""
    missing = [k for k in required if k not in members]
    if missing:
        raise FileFormatError(
            f"{path} has no array named {', '.join(map(repr, missing))} "
            f"(it holds {', '.join(map(repr, members)) or 'nothing'})"
        )


def read_npz(
    path: str | os.PathLike,
    *,
    required: Iterable[str] = (),
    max_bytes: int | None = None,
) -> dict[str, np.ndarray]:
    """Reads every array of an `.npz` after `inspect_npz` has checked it; `allow_pickle=False` always.

    Args:
      required: members that must be present.
      max_bytes: the most the arrays may declare in all (default `decompressed_budget()`).

    Raises:
      FileFormatError: see `inspect_npz`; also a missing required member, or data that fails CRC.
    """
    path = os.fspath(path)
    members = inspect_npz(path, max_bytes=max_bytes)
    _check_required(path, members, required)
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as z:
            return {k: z[k] for k in members}
    except Exception as err:
        raise FileFormatError(
            f"{path} is not a readable .npz archive (damaged): {type(err).__name__}: {err}"
        ) from None


# ------------------------------------------------------------------------------------ Trace files
def leaf_names(params: PyTree) -> list[str]:
    """Names of the leaves of a params pytree (`w`, `b`; `x` for a bare array)."""
    import jax  # here: the study face's readers of results and figures run without JAX

    paths = jax.tree_util.tree_flatten_with_path(params)[0]
    return [jax.tree_util.keystr(p, simple=True, separator="/") or "x" for p, _ in paths]


_TRACE_FIELDS = ("loss_history", "grad_norm_history", "status", "steps", "stop_step")
# Optional members: absent in files written before they were saved (and in a study's parts), and for
# a Trace whose field is None.
_OPTIONAL_FIELDS = ("eval_steps", "record_steps", "batch_loss_history")
_METRIC_NAMES = "metric_names"  # the names of `trace.metrics`, in order (present iff it is not None)
_METRIC = "metrics/"
_INVALID_NAMES = "invalid_names"  # the names of `trace.invalid`, in order (present iff it is not None)
_INVALID = "invalid/"
_EVALUATED_AT = "evaluated_at"  # a 0-d string, present iff `trace.evaluated_at` is not None


def trace_arrays(trace: Trace, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """A `Trace` as flat host arrays: every field, with the pytrees flattened.

    Members: `loss_history`, `grad_norm_history`, `status`, `steps`, `stop_step`, `params/<leaf>`,
    `params_history/<leaf>`, and when present `eval_steps`, `record_steps`, `batch_loss_history`,
    `metric_names` (the metric names in order; an empty array for `metrics={}`) and
    `metrics/<name>`, `invalid_names` and `invalid/<name>` (the values a traced run checked), and
    `evaluated_at`.
    """
    import jax

    names = leaf_names(trace.params) if names is None else names
    out = {k: np.asarray(getattr(trace, k)) for k in _TRACE_FIELDS}
    for name, leaf in zip(names, jax.tree.leaves(trace.params), strict=True):
        out[f"params/{name}"] = np.asarray(leaf)
    for name, leaf in zip(names, jax.tree.leaves(trace.params_history), strict=True):
        out[f"params_history/{name}"] = np.asarray(leaf)
    for k in _OPTIONAL_FIELDS:
        if getattr(trace, k) is not None:
            out[k] = np.asarray(getattr(trace, k))
    if trace.metrics is not None:
        metric_names = [str(n) for n in trace.metrics]
        out[_METRIC_NAMES] = np.asarray(metric_names, dtype=str)
        for name in metric_names:
            out[_METRIC + name] = np.asarray(trace.metrics[name])
    if trace.invalid is not None:
        invalid_names = [str(n) for n in trace.invalid]
        out[_INVALID_NAMES] = np.asarray(invalid_names, dtype=str)
        for name in invalid_names:
            out[_INVALID + name] = np.asarray(trace.invalid[name], dtype=bool)
    if trace.evaluated_at is not None:
        out[_EVALUATED_AT] = np.asarray(str(trace.evaluated_at))
    return out


def trace_from_arrays(arrays: Mapping[str, np.ndarray], template: PyTree, *, source: str = "arrays") -> Trace:
    """The inverse of `trace_arrays`, with the params' tree structure taken from `template`.

    Members that older files lack (`eval_steps`, `record_steps`, `batch_loss_history`, the metrics)
    come back as None.

    Raises:
      FileFormatError: a required member is missing, or the shapes disagree (see `check_trace_shapes`);
        the message starts with `source`.
    """
    names = leaf_names(template)
    required = [*_TRACE_FIELDS, *(f"params/{n}" for n in names), *(f"params_history/{n}" for n in names)]
    missing = [k for k in required if k not in arrays]
    if missing:
        raise FileFormatError(f"{source} has no array named {', '.join(map(repr, missing))}")
    declared = {k: (np.shape(v), getattr(v, "dtype", None) or np.asarray(v).dtype) for k, v in arrays.items()}
    check_trace_shapes(declared, names, source)
    _check_metric_names(arrays, source)
    metrics = None
    if _METRIC_NAMES in arrays:
        metrics = {str(n): arrays[_METRIC + str(n)] for n in np.asarray(arrays[_METRIC_NAMES]).tolist()}
    elif any(k.startswith(_METRIC) for k in arrays):  # written by a study part: no name list
        metrics = {k[len(_METRIC) :]: v for k, v in arrays.items() if k.startswith(_METRIC)}
    invalid = None
    if _INVALID_NAMES in arrays:
        invalid = {str(n): arrays[_INVALID + str(n)] for n in np.asarray(arrays[_INVALID_NAMES]).tolist()}
    evaluated_at = str(np.asarray(arrays[_EVALUATED_AT])) if _EVALUATED_AT in arrays else None
    import jax

    treedef = jax.tree.structure(template)
    return Trace(
        params=jax.tree.unflatten(treedef, [arrays[f"params/{n}"] for n in names]),
        loss_history=arrays["loss_history"],
        params_history=jax.tree.unflatten(treedef, [arrays[f"params_history/{n}"] for n in names]),
        grad_norm_history=arrays["grad_norm_history"],
        steps=arrays["steps"],
        status=arrays["status"],
        stop_step=arrays["stop_step"],
        eval_steps=arrays.get("eval_steps"),
        batch_loss_history=arrays.get("batch_loss_history"),
        metrics=metrics,
        record_steps=arrays.get("record_steps"),
        evaluated_at=evaluated_at,
        invalid=invalid,
    )


def check_trace_shapes(members: Mapping[str, tuple], names: list[str], source: str) -> None:
    """Checks that the members of a saved `Trace` fit together, from their shapes and dtypes alone.

    `members` maps a member name to `(shape, dtype)` (what `inspect_npz` declares, so that a file is
    checked before its arrays are read). With `L` the lane axes (none for one run) and `E` the
    number of evaluations (`loss_history` is `L + (E,)`): `grad_norm_history`, `eval_steps` and every
    `metrics/<name>` are `L + (E,)`; `status`, `steps` and `stop_step` are `L`; `batch_loss_history`
    is `L + (num_steps,)`; `record_steps` is `L + (R,)` with `R` the records of `params_history`;
    step counts are integers; `metric_names` lists exactly the `metrics/` members.

    Raises:
      FileFormatError: the first disagreement, named with `source`.
    """

    def fail(message: str):
        raise FileFormatError(f"{source}: {message} (damaged or not a gdjax trace)")

    loss_shape = tuple(members["loss_history"][0])
    if len(loss_shape) < 1:
        fail(f"loss_history must have an evaluation axis, got shape {loss_shape}")
    lanes = loss_shape[:-1]
    expect = {"grad_norm_history": loss_shape, "eval_steps": loss_shape}
    expect.update({k: lanes for k in ("status", "steps", "stop_step")})
    expect.update({k: loss_shape for k in members if k.startswith(_METRIC)})
    expect.update({k: lanes for k in members if k.startswith(_INVALID)})
    for k, want in expect.items():
        if k in members and tuple(members[k][0]) != want:
            fail(
                f"member {k!r} has shape {tuple(members[k][0])}, but loss_history {loss_shape} "
                f"asks for {want}"
            )
    if "batch_loss_history" in members:
        shape = tuple(members["batch_loss_history"][0])
        if shape[:-1] != lanes or len(shape) != len(lanes) + 1:
            fail(f"member 'batch_loss_history' has shape {shape}, but the lanes are {lanes}")
    if "record_steps" in members:
        shape = tuple(members["record_steps"][0])
        for n in names:
            hist = tuple(members[f"params_history/{n}"][0])
            if hist[: len(lanes) + 1] != shape or len(shape) != len(lanes) + 1:
                fail(f"member 'record_steps' has shape {shape}, but params_history/{n} has shape {hist}")
    for k in ("eval_steps", "record_steps", "steps", "status", "stop_step"):
        if k in members and not np.issubdtype(np.dtype(members[k][1]), np.integer):
            fail(f"member {k!r} must hold integers, got dtype {members[k][1]}")
    for k in (_METRIC_NAMES, _INVALID_NAMES):
        if k in members:
            shape, dtype = members[k]
            if len(tuple(shape)) != 1 or np.dtype(dtype).kind != "U":
                fail(f"member {k!r} must be a 1-D array of names, got shape {tuple(shape)} {dtype}")
    for k in members:
        if k.startswith(_INVALID) and np.dtype(members[k][1]) != np.bool_:
            fail(f"member {k!r} must hold booleans, got dtype {members[k][1]}")
    if _EVALUATED_AT in members:
        shape, dtype = members[_EVALUATED_AT]
        if tuple(shape) != () or np.dtype(dtype).kind != "U":
            fail(f"member {_EVALUATED_AT!r} must be one name, got shape {tuple(shape)} {dtype}")


def _check_metric_names(arrays: Mapping[str, np.ndarray], source: str) -> None:
    """`metric_names` (and `invalid_names`) list exactly the `metrics/` (`invalid/`) members."""
    for names, prefix, what in (
        (_METRIC_NAMES, _METRIC, "metrics"),
        (_INVALID_NAMES, _INVALID, "checked values"),
    ):
        if names not in arrays:
            continue
        listed = [str(n) for n in np.asarray(arrays[names]).tolist()]
        stored = [k[len(prefix) :] for k in arrays if k.startswith(prefix)]
        if len(set(listed)) != len(listed) or set(listed) != set(stored):
            raise FileFormatError(
                f"{source}: member {names!r} lists the {what} {listed}, but the file holds "
                f"{sorted(stored)} (damaged or not a gdjax trace)"
            )


def save_trace(path: str | os.PathLike, trace: Trace) -> str:
    """Writes a `Trace` (of one run or of a sweep's lanes) as an `.npz`, atomically: every field.

    Given a `SweepResult` it writes `result.save(path)`: the stacked trace plus the lanes'
    coordinates and the result's other fields, which `SweepResult.load(path, template)` reads back
    (`load_trace` reads the trace alone from either file).
    """
    if not isinstance(trace, Trace) and hasattr(trace, "coords") and callable(getattr(trace, "save", None)):
        return trace.save(path)  # a SweepResult (this module sits below gdjax.sweep: duck-typed)
    return write_npz(path, trace_arrays(trace))


def load_trace(path: str | os.PathLike, template: PyTree) -> Trace:
    """Reads a `Trace` written by `save_trace`; `template` gives the params' tree structure.

    The file is checked before any array is read (`inspect_npz`: plain arrays, sizes, no pickles;
    `check_trace_shapes`: members that fit together). Files written before `eval_steps`,
    `record_steps`, `batch_loss_history` and the metrics were saved still load, with those fields
    None.

    Raises:
      FileFormatError: the file is damaged, lacks a field or holds members that do not fit together
        (the message names the file).
    """
    path = os.fspath(path)
    names = leaf_names(template)
    required = [*_TRACE_FIELDS, *(f"params/{n}" for n in names), *(f"params_history/{n}" for n in names)]
    members = inspect_npz(path)
    _check_required(path, members, required)
    check_trace_shapes({k: (m.shape, m.dtype) for k, m in members.items()}, names, path)
    return trace_from_arrays(read_npz(path, required=required), template, source=path)
