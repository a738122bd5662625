"""The run folder: a boundary gdjax owns, locked, written atomically, resumable.

Guarantees (the README states them for users; `tests/test_boundary.py` holds them):

- **Ownership list.** A folder gdjax creates gets, before anything else, a marker file `.gdjax-run`:
  `{"format": "gdjax-run-folder", "version": 2, "id": <random>, "folder": {device, inode, path},
  "owned": [names]}`. The marker names the folder it was written for (its device and inode, and
  its real path) and lists every entry gdjax made there. A name is added to the list, atomically,
  *before* the file is created, so after a crash at any moment the list holds everything gdjax
  may have made (and perhaps a name not yet created). `--force` and `--resume` accept only a folder
  whose marker was written for it: a marker copied from another folder is refused. `--force`
  removes exactly the listed entries; anything else (a user's `notes.md`, `analysis/`) stays, and
  a note names it.
- **No links followed.** Inside a run folder gdjax never follows a symbolic link and opens only
  the regular files (and the `parts/` folder) it expects: the lock and marker are opened with
  `O_NOFOLLOW`, every listed entry is checked with `os.lstat` before it is used, and a link or an
  entry of the wrong type is refused with a message naming it. Writes go to a fresh temporary file
  (`O_CREAT | O_EXCL`) moved into place with `os.replace`, which replaces a link, never its target.
- **Lock.** While a run writes a folder it holds an exclusive `fcntl.flock` on `<folder>/.gdjax-lock`
  (which records its pid). A second run or `--resume` on the same folder is refused. The kernel
  drops the lock when its process dies, kill -9 included, so a stale lock file is simply taken over.
- **Data fingerprints.** The manifest records the sha256 and size of every file the config reads
  (data, cost modules); `--resume` refuses a folder whose files changed since (`data_fingerprints`).
- **Crash safety.** Every file is written atomically (`gdjax.io`), so after a crash each file is
  either its previous version or its new one. A folder that holds `PARTIAL` is incomplete and
  `--resume` finishes it; finished units sit in `parts/` (a damaged part is redone, with a note);
  gdjax's own temporary files (`.tmp-gdjax-*`, left by a kill -9 mid-write) are removed on resume
  and before a folder is marked complete.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import shutil
import socket
import stat
from collections.abc import Callable
from typing import Any

import numpy as np

from gdjax import io
from gdjax.study import config as config_lib

__all__ = [
    "LOCK",
    "MARKER",
    "PARTIAL_MARKER",
    "PARTS",
    "FolderInUse",
    "PlotStage",
    "RunFolder",
    "check",
    "data_files",
    "data_fingerprints",
    "is_run_folder",
    "prepare",
    "report_folder",
]

MARKER = ".gdjax-run"
MARKER_FORMAT = "gdjax-run-folder"
MARKER_VERSION = 2
MARKER_CONTENT = {"format": MARKER_FORMAT, "version": MARKER_VERSION}
LOCK = ".gdjax-lock"
PARTIAL_MARKER = "PARTIAL"
PARTS = "parts"
# Where plots are drawn before they are moved into place (each name listed first): crash-safe
# ownership for files a layer above this one names.
STAGING = ".gdjax-staging"
FIGURES = "figures"  # the PNGs of the report page beside report.html (gdjax.study.page)
_FOLDERS = (PARTS, STAGING, FIGURES)
# The files gdjax writes inside its folders: removing one of these folders removes only those (and
# gdjax's temporaries); anything else a user put there stays, and the folder with it.
_OWN_SUFFIXES = {PARTS: (".npz", ".json"), FIGURES: (".png",)}
# What a version-1 marker (written before the ownership list) stood for: the names gdjax wrote then.
_LEGACY_OWNED = (
    "config.toml",
    "manifest.json",
    "gradcheck.txt",
    "summary.csv",
    "summary.json",
    "histories.npz",
    PARTIAL_MARKER,
    PARTS,
)
_MAX_MARKER_BYTES = 1 << 20


class FolderInUse(ValueError):
    """Another live gdjax process holds the run folder's lock."""


# ------------------------------------------------------------------------------------------- marker
def _identity(path: str) -> dict:
    st = os.stat(path)
    return {"device": st.st_dev, "inode": st.st_ino, "path": os.path.realpath(path)}


def _read_marker(path: str) -> tuple[dict | None, str | None]:
    """`(marker, None)` for a marker written for the folder `path`; `(None, why)` otherwise."""
    marker_path = os.path.join(path, MARKER)
    if not os.path.lexists(marker_path):
        return None, f"no {MARKER} marker"
    try:
        content = io.read_json(marker_path, what="gdjax marker", follow=False)
    except (io.FileFormatError, OSError) as err:
        return None, f"its {MARKER} marker is unreadable ({err})"
    if not isinstance(content, dict) or content.get("format") != MARKER_FORMAT:
        return None, f"its {MARKER} file is not a gdjax marker"
    if content.get("version") == 1:  # written before the ownership list: the names gdjax wrote then
        return {**content, "owned": list(_LEGACY_OWNED), "legacy": True}, None
    owned, where = content.get("owned"), content.get("folder")
    if not (
        isinstance(owned, list)
        and all(isinstance(n, str) and _ownable(n) for n in owned)
        and isinstance(where, dict)
        and isinstance(content.get("id"), str)
    ):
        return None, f"its {MARKER} marker is damaged"
    here = _identity(path)
    same_inode = (where.get("device"), where.get("inode")) == (here["device"], here["inode"])
    if not (same_inode or where.get("path") == here["path"]):
        return None, (
            f"its {MARKER} marker was written for another folder ({where.get('path')}): copied, "
            "so gdjax does not own what is here"
        )
    return content, None


def _plain_name(name: str) -> bool:
    return bool(name) and name not in (".", "..", MARKER, LOCK) and "/" not in name and "\0" not in name


# Every name gdjax makes in a run folder: its files, its folders, the report page and the plots
# (`<plot>.png`). A marker listing any other name was not written by gdjax: trusting it would let
# `--force` remove a user's `notes.md`.
_OWNABLE = {
    "config.toml",
    "split.npz",
    "gradcheck.txt",
    "manifest.json",
    "summary.csv",
    "summary.json",
    "histories.npz",
    "report.html",
    PARTIAL_MARKER,
    *_FOLDERS,
}


def _ownable(name: str) -> bool:
    return _plain_name(name) and (name in _OWNABLE or name.endswith(".png"))


def is_run_folder(path: str) -> bool:
    """Whether `path` carries a gdjax marker written for it (and so may be resumed or replaced)."""
    try:
        return _read_marker(path)[0] is not None
    except OSError:
        return False


def _refuse(path: str, what: str) -> ValueError:
    return ValueError(
        f"refusing to use run folder {path}: {what}; gdjax never follows a link or opens an "
        "unexpected file inside a run folder. Remove it, or choose another --out"
    )


def _check_entry(folder: str, name: str) -> None:
    """Refuses an owned entry that is a symbolic link or not of its kind (`parts/` a folder, else a file)."""
    path = os.path.join(folder, name)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise _refuse(folder, f"{path} is a symbolic link")
    want_dir = name in _FOLDERS
    if want_dir and not stat.S_ISDIR(mode):
        raise _refuse(folder, f"{path} is not a folder")
    if not want_dir and not stat.S_ISREG(mode):
        raise _refuse(folder, f"{path} is not a regular file")


# --------------------------------------------------------------------------------- data fingerprints
def data_files(cfg) -> list[str]:
    """Absolute paths of the files a config reads: its CSV/NPZ data (the study's and each problem's
    own) and the `.py` files of its costs (`callable`, `params0`, `analytic`, `init`, `metrics`).
    Modules named by import path are not fingerprinted."""
    files = []
    for d in [cfg.data, *(c.data for c in cfg.costs)]:
        if d is not None and d.source in ("csv", "npz") and d.path:
            files.append(os.path.abspath(d.path))
    for c in cfg.costs:
        for ref in (c.callable, c.params0, c.analytic, c.init, *(c.metrics or ())):
            if isinstance(ref, str) and ":" in ref:
                target = ref.rpartition(":")[0]
                if target.endswith(".py") or os.sep in target:
                    files.append(os.path.abspath(target))
    return list(dict.fromkeys(files))


def _fingerprint(path: str) -> dict:
    try:
        fd = io.open_regular(path, what="data file")
    except io.FileFormatError as err:
        raise ValueError(str(err)) from None
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size}


def data_fingerprints(cfg) -> dict[str, dict]:
    """`{path: {"sha256", "size"}}` for every file of `data_files(cfg)`: part of a run's identity."""
    return {path: _fingerprint(path) for path in data_files(cfg)}


def _check_fingerprints(out: str, manifest: dict, fingerprints: dict, log) -> None:
    old = manifest.get("data_files")
    if not isinstance(old, dict):
        if fingerprints:
            log(
                f"note: {out} was written by a gdjax that kept no data fingerprints; resuming "
                "without checking that its data files are unchanged"
            )
        return
    for path, now in fingerprints.items():
        was = old.get(path)
        if isinstance(was, dict) and was != now:
            raise ValueError(
                f"cannot resume {out}: {path} changed since the run started (sha256 "
                f"{str(was.get('sha256'))[:12]}..., {was.get('size')} bytes -> {now['sha256'][:12]}..., "
                f"{now['size']} bytes), so old and new results would mix; start fresh with --force, "
                "or use a new --out"
            )


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = list(dict.fromkeys([*a, *b]))
    out = []
    for k in keys:
        path = f"{prefix}.{k}" if prefix else k
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, path)
        elif (
            isinstance(va, list)
            and isinstance(vb, list)
            and len(va) == len(vb)
            and va
            and all(isinstance(x, dict) for x in va + vb)
        ):
            for i, (x, y) in enumerate(zip(va, vb, strict=True)):
                out += _config_diff(x, y, f"{path}[{i}]")
        elif va != vb:
            out.append(path)
    return out


# --------------------------------------------------------------------------------------- the folder
class RunFolder:
    """An owned run folder: paths, the lock, the ownership list, parts of finished units."""

    def __init__(self, path: str):
        self.path = path
        self._lock_fd: int | None = None
        self._marker: dict | None = None

    def file(self, *name: str) -> str:
        return os.path.join(self.path, *name)

    # ---------------------------------------------------------------------------------- lock
    def lock(self) -> None:
        """Takes the folder's exclusive lock, or raises `FolderInUse` naming the holder.

        The lock file is opened with `O_NOFOLLOW`: a link planted at `.gdjax-lock` (to a file
        outside, or dangling) is refused, never written through.
        """
        path = self.file(LOCK)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        while True:
            try:
                fd = os.open(path, flags, 0o644)
            except OSError as err:
                if err.errno == errno.ELOOP or os.path.islink(path):
                    raise _refuse(self.path, f"its lock {path} is a symbolic link") from None
                raise
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise _refuse(self.path, f"its lock {path} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise FolderInUse(
                    f"run folder {self.path} is in use by another gdjax run ({holder}); wait for it to "
                    "finish, or use another --out"
                ) from None
            # The holder before us may have removed the file while we waited for it: lock the
            # file that is at the path now, not a deleted one.
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is None:
            return
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(self._lock_fd), os.lstat(self.file(LOCK))):
                os.remove(self.file(LOCK))
        os.close(self._lock_fd)
        self._lock_fd = None

    # ---------------------------------------------------------------------------- ownership
    def _load_marker(self) -> dict:
        if self._marker is None:
            marker, why = _read_marker(self.path)
            if marker is None:
                raise ValueError(f"{self.path} is not a gdjax run folder ({why})")
            self._marker = marker
        return self._marker

    def _write_marker(self, marker: dict) -> None:
        marker = {k: v for k, v in marker.items() if k != "legacy"}
        io.write_json(self.file(MARKER), marker)
        self._marker = marker

    def owned(self) -> list[str]:
        """The names gdjax made in this folder (the marker's list)."""
        return list(self._load_marker()["owned"])

    def own(self, *names: str) -> None:
        """Adds `names` to the ownership list, atomically, before they are created."""
        marker = self._load_marker()
        new = [n for n in names if n not in marker["owned"]]
        if new or marker.get("legacy"):
            self._write_marker({**marker, "owned": [*marker["owned"], *new]})

    def checked(self, name: str) -> str:
        """The path of an owned entry, after `os.lstat` shows it is absent or of its kind (no link)."""
        _check_entry(self.path, name)
        return self.file(name)

    def write_text(self, name: str, text: str) -> None:
        self.own(name)
        io.write_text(self.checked(name), text)

    def write_json(self, name: str, value) -> None:
        self.own(name)
        io.write_json(self.checked(name), value)

    def write_npz(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        self.own(name)
        io.write_npz(self.checked(name), arrays)

    def staging(self) -> str:
        """A fresh, owned, empty folder to draw files into before `adopt` moves them into place."""
        self.own(STAGING)
        _check_entry(self.path, STAGING)
        self.remove(STAGING)
        os.mkdir(self.file(STAGING))
        return self.file(STAGING)

    def adopt(self, path: str) -> str | None:
        """Moves a file drawn in `staging()` into the folder, listing its name first; returns the new
        path, or None when a file of that name that gdjax did not make is there (it is kept)."""
        name = os.path.basename(path)
        drawn_here = os.path.dirname(os.path.abspath(path)) == os.path.abspath(self.file(STAGING))
        if not (drawn_here and _plain_name(name)):
            raise ValueError(f"{path} was not drawn in {self.file(STAGING)}")
        if name not in self.owned() and os.path.lexists(self.file(name)):
            return None
        self.own(name)
        os.replace(path, self.checked(name))
        return self.file(name)

    def remove(self, name: str) -> list[str]:
        """Removes an owned entry: a file (or a link, itself: never its target) or one of gdjax's
        folders. From `parts/` and `figures/` only the files gdjax writes there go (parts, PNGs, its
        temporaries); what else is there stays, with the folder, and is returned (`parts/notes.txt`)."""
        path = self.file(name)
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(mode):
            os.remove(path)
            return []
        if name not in _OWN_SUFFIXES:
            shutil.rmtree(path)  # gdjax's staging folder; fd-based on Linux: does not follow links
            return []
        kept = []
        with os.scandir(path) as entries:
            for entry in entries:
                ours = entry.name.endswith(_OWN_SUFFIXES[name]) or entry.name.startswith(io.TEMP_PREFIX)
                if ours and entry.is_file(follow_symlinks=False):
                    os.remove(entry.path)
                else:
                    kept.append(f"{name}/{entry.name}")
        if not kept:
            os.rmdir(path)
        return sorted(kept)

    def user_entries(self) -> list[str]:
        """Entries of the folder gdjax did not make (kept by `--force`)."""
        owned = {*self.owned(), MARKER, LOCK}
        return sorted(n for n in os.listdir(self.path) if n not in owned and not n.startswith(io.TEMP_PREFIX))

    def clear(self) -> list[str]:
        """Removes every owned entry (for `--force`) and returns the user's entries left in place."""
        marker = self._load_marker()
        kept = []
        for name in marker["owned"]:
            kept += self.remove(name)
        self.clean_temps()
        # A folder of gdjax's that keeps a user's file stays listed: it is still gdjax's to clear.
        still = [n for n in _FOLDERS if any(k.startswith(n + "/") for k in kept)]
        self._write_marker({**marker, "owned": still})
        return sorted([*self.user_entries(), *kept])

    def discard(self) -> None:
        """Removes what gdjax made here (the folder too, when nothing else is left) and releases the
        lock: for a run refused before it wrote anything (issue 12). A user's files stay."""
        try:
            if _read_marker(self.path)[0] is None:
                self.unlock()
                return
            if not self.clear():  # a user's files left: the marker stays, listing nothing
                self.remove(MARKER)
        except (OSError, ValueError):
            self.unlock()
            return
        self.unlock()
        with contextlib.suppress(OSError):
            os.rmdir(self.path)  # only when empty

    # --------------------------------------------------------------------------------- parts
    def part_names(self, key: str) -> tuple[str, str]:
        return self.file(PARTS, f"{key}.npz"), self.file(PARTS, f"{key}.json")

    def _parts_folder(self) -> bool:
        """Whether `parts/` exists (as a real folder; a link or a file there is refused)."""
        _check_entry(self.path, PARTS)
        return os.path.isdir(self.file(PARTS))

    def save_part(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Writes a unit's arrays, then its metadata (the metadata's presence marks the part done)."""
        self.own(PARTS)
        if not self._parts_folder():
            os.mkdir(self.file(PARTS))
        npz, meta_path = self.part_names(key)
        io.write_npz(npz, arrays)
        io.write_json(meta_path, meta)

    def load_part(self, key: str, required: list[str]) -> tuple[dict | None, dict | None, str | None]:
        """`(meta, arrays, None)` for a complete readable part; `(None, None, why)` for a damaged one;
        `(None, None, None)` when there is no complete part."""
        if not self._parts_folder():
            return None, None, None
        npz, meta_path = self.part_names(key)
        if not (os.path.lexists(npz) and os.path.lexists(meta_path)):
            return None, None, None
        try:
            meta = io.read_json(meta_path, what="part file", follow=False)
            if not isinstance(meta, dict):
                raise io.FileFormatError(f"{meta_path} is not a part file (not a JSON object)")
            if not meta.get("complete"):
                return None, None, None
            os.close(io.open_regular(npz, what="part file", follow=False))  # a regular file, no link
            arrays = io.read_npz(npz, required=required)
        except (io.FileFormatError, OSError) as err:
            return None, None, str(err)
        return meta, arrays, None

    def clean_temps(self) -> list[str]:
        """Removes gdjax's own temporary files left by a kill -9, here and in `parts/`."""
        removed = io.remove_stale_temps(self.path)
        if self._parts_folder():
            removed += io.remove_stale_temps(self.file(PARTS))
        return removed


def _check_out_path(out: str) -> None:
    """Refuses an `--out` that cannot be a folder, in words rather than an errno."""
    if os.path.islink(out) and not os.path.exists(out):
        raise ValueError(f"--out {out} is a dangling symbolic link (to {os.readlink(out)}); give a folder")
    if os.path.islink(out):  # as for `gdjax report --out`: the folder itself, never through a link
        raise ValueError(f"--out {out} is a symbolic link: give the folder itself ({os.path.realpath(out)})")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a folder")
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--out {out} cannot be made: {parent} is a file, not a folder")


def _new_folder(out: str) -> RunFolder:
    """Makes `out` (absent or empty) gdjax's: first of all its marker, which says for which folder it
    was written."""
    os.makedirs(out, exist_ok=True)
    folder = RunFolder(out)
    folder._write_marker(
        {**MARKER_CONTENT, "id": secrets.token_hex(16), "folder": _identity(out), "owned": []}
    )
    return folder


def report_folder(out: str) -> RunFolder:
    """The folder `gdjax report --out` writes into: a new one (absent or empty), made gdjax's with a
    marker, or one gdjax made (a run folder or an earlier report). A link, a file, or a folder of
    someone else's files is refused, and nothing in it is touched."""
    if os.path.islink(out) and os.path.exists(out):
        raise ValueError(f"--out {out} is a symbolic link: give the folder itself, or a new one")
    _check_out_path(out)
    if os.path.isdir(out) and os.listdir(out):
        marker, why = _read_marker(out)
        if marker is None:
            raise ValueError(
                f"--out {out} already holds files gdjax did not make ({why}); nothing in it was touched: "
                "give a new folder"
            )
        return RunFolder(out)
    return _new_folder(out)


# ------------------------------------------------------------------------------------------ prepare
def _legacy_plots(out: str) -> list[str]:
    """The plots a folder with a version-1 marker lists in its manifest (gdjax drew them)."""
    try:
        manifest = io.read_json(os.path.join(out, "manifest.json"), follow=False)
    except (io.FileFormatError, OSError):
        return []
    plots = manifest.get("plots") if isinstance(manifest, dict) else None
    return [p for p in plots if isinstance(p, str) and _ownable(p)] if isinstance(plots, list) else []


def _ignore(message: str) -> None:
    pass


def check(
    cfg,
    out: str,
    *,
    resume: bool,
    force: bool,
    fingerprints: dict | None = None,
    log: Callable[[str], Any] = _ignore,
) -> str:
    """Every refusal `prepare` would make, made without creating, locking or changing anything, so a
    command refuses a folder before it computes anything (issue 17).

    Returns:
      "new" (the folder is absent or empty), "resume" or "force".

    Raises:
      ValueError: as `prepare`.
    """
    _check_out_path(out)
    if not (os.path.isdir(out) and os.listdir(out)):
        return "new"
    if not (resume or force):
        raise ValueError(
            f"run folder {out} already exists and is not empty: pass --resume to finish an interrupted run, "
            "--force to replace it, or another --out"
        )
    verb = "resume" if resume else "clear (--force)"
    marker, why = _read_marker(out)
    if marker is None:
        raise ValueError(
            f"refusing to {verb} {out}: it is not a gdjax run folder ({why}); nothing in it was touched. "
            "Choose another --out"
        )
    for name in (*marker["owned"], *_FOLDERS, LOCK):
        _check_entry(out, name)
    if force:
        return "force"
    cfg_file = os.path.join(out, "config.toml")
    if not os.path.lexists(cfg_file):
        return "resume"
    try:
        previous = config_lib.load(cfg_file)
    except config_lib.ConfigError as err:
        raise ValueError(f"cannot resume {out}: its config.toml is unreadable ({err})") from None
    diff = _config_diff(previous.to_dict(), cfg.to_dict())
    if diff:
        raise ValueError(
            f"cannot resume {out}: it was run with a different config (differs in "
            f"{', '.join(diff[:5])}); use the same config, or a new --out"
        )
    manifest_file = os.path.join(out, "manifest.json")
    if fingerprints is not None and os.path.lexists(manifest_file):
        manifest = io.read_json(manifest_file, what="run manifest", follow=False)
        if not isinstance(manifest, dict):
            raise io.FileFormatError(f"{manifest_file} is not a run manifest (not a JSON object)")
        _check_fingerprints(out, manifest, fingerprints, log)
    return "resume"


def prepare(
    cfg,
    out: str,
    *,
    resume: bool,
    force: bool,
    fingerprints: dict | None = None,
    log: Callable[[str], Any] = _ignore,
) -> tuple[RunFolder, bool]:
    """Creates (or reopens, with `resume`) the run folder and takes its lock.

    Returns:
      The locked folder and whether it is resumed.

    Raises:
      ValueError: the folder is not gdjax's (no marker written for it), holds a link or an
        unexpected file where gdjax keeps its own, was run with another config or other data,
        exists without `--resume`/`--force`, or (`FolderInUse`) is locked by a live run.
    """
    kind = check(cfg, out, resume=resume, force=force)  # cheap refusals first, before the lock
    if kind == "new":
        folder = _new_folder(out)
        folder.lock()
        return folder, False
    folder = RunFolder(out)
    folder.lock()  # refuses a folder a live run is writing
    try:
        # Again under the lock: what the folder holds now is what counts.
        check(cfg, out, resume=resume, force=force, fingerprints=fingerprints)
        marker = folder._load_marker()
        if marker.get("legacy"):  # a version-1 marker: from now on, the ownership list
            legacy = [*marker["owned"], *_legacy_plots(out)]
            present = [n for n in legacy if os.path.lexists(folder.file(n))]
            folder._write_marker(
                {**MARKER_CONTENT, "id": secrets.token_hex(16), "folder": _identity(out), "owned": present}
            )
        if kind == "force":
            kept = folder.clear()
            if kept:
                log(f"note: --force kept what gdjax did not make in {out}: {', '.join(kept)}")
            return folder, False
        folder.clean_temps()
        if not os.path.lexists(folder.file("config.toml")):
            if not folder.user_entries() and not any(
                os.path.lexists(folder.file(n)) for n in folder.owned()
            ):  # killed right after creating it
                return folder, False
            raise ValueError(f"cannot resume {out}: its config.toml is missing")
    except BaseException:
        folder.unlock()
        raise
    return folder, True


class PlotStage:
    """Draws files into a finished run folder, holding its lock: `with PlotStage(outcome) as stage:`
    draw into `stage.path` (an owned, empty `.gdjax-staging/`) and `stage.add(paths)`; on leaving,
    each name is listed as gdjax's before its file is moved into place (a file of that name that
    gdjax did not make is kept, with a note), the manifest lists the plots, `outcome.plots` holds
    their paths, and the lock is released (the staging folder is removed either way).

    The command draws `[outputs] plots` this way after `gdjax.study.experiment.run_experiment`
    (`gdjax.study.report`, which sits above, draws them), so a run never calls back up into the
    report. `outcome` is the run's `RunOutcome` (its `folder`, `manifest` and `plots`).
    """

    def __init__(self, outcome, log: Callable[[str], Any] | None = None):
        self.outcome, self.log = outcome, log or (lambda message: None)
        self.folder = RunFolder(outcome.folder)
        self.path = ""
        self._paths: list[str] = []

    def add(self, paths) -> None:
        self._paths.extend(paths)

    def __enter__(self) -> PlotStage:
        self.folder.lock()
        try:
            self.path = self.folder.staging()
        except BaseException:
            self.folder.unlock()
            raise
        return self

    def __exit__(self, kind, error, tb) -> None:
        try:
            if kind is None:
                drawn = []
                for path in self._paths:
                    moved = self.folder.adopt(path)
                    if moved is None:
                        self.log(
                            f"note: {self.folder.file(os.path.basename(path))} is not gdjax's, so it was "
                            "kept and that plot not written; rename it to get the plot"
                        )
                    else:
                        drawn.append(moved)
                self.outcome.manifest["plots"] = [os.path.basename(p) for p in drawn]
                self.folder.write_json("manifest.json", self.outcome.manifest)
                self.outcome.plots[:] = drawn
            self.folder.remove(STAGING)
        finally:
            self.folder.unlock()
