"""The run folder: owned, locked, written atomically, resumable.

Guarantees (the README states them for users):

- **Ownership.** A folder gdjax creates gets, before anything else, a marker file `.gdjax-run`
  holding `{"format": "gdjax-run-folder", "version": 1}`. `--force` deletes and `--resume` writes
  into only a folder carrying that marker; any other non-empty folder (even one with a
  `manifest.json`) is refused with a message naming it, and nothing in it is touched.
- **Lock.** While a run writes a folder it holds an exclusive `fcntl.flock` on `<folder>/.gdjax-lock`
  (which records its pid). A second run or `--resume` on the same folder is refused. The kernel
  drops the lock when its process dies, kill -9 included, so a stale lock file is simply taken over.
- **Crash safety.** Every file is written atomically (`gdjax.io`), so after a crash each file is
  either its previous version or its new one. A folder that holds `PARTIAL` is incomplete and
  `--resume` finishes it; finished units sit in `parts/` (a damaged part is redone, with a note);
  gdjax's own temporary files (`.tmp-gdjax-*`, left by a kill -9 mid-write) are removed on resume
  and before a folder is marked complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
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
    "RunFolder",
    "is_run_folder",
    "prepare",
]

MARKER = ".gdjax-run"
MARKER_CONTENT = {"format": "gdjax-run-folder", "version": 1}
LOCK = ".gdjax-lock"
PARTIAL_MARKER = "PARTIAL"
PARTS = "parts"


class FolderInUse(ValueError):
    """Another live gdjax process holds the run folder's lock."""


def is_run_folder(path: str) -> bool:
    """Whether `path` carries gdjax's ownership marker (and so may be resumed or replaced)."""
    try:
        with open(os.path.join(path, MARKER), encoding="utf-8") as f:
            content = io.loads(f.read(4096))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(content, dict) and content.get("format") == MARKER_CONTENT["format"]


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


class RunFolder:
    """An owned run folder: paths, the lock, parts of finished units."""

    def __init__(self, path: str):
        self.path = path
        self._lock_fd: int | None = None

    def file(self, *name: str) -> str:
        return os.path.join(self.path, *name)

    # ---------------------------------------------------------------------------------- lock
    def lock(self) -> None:
        """Takes the folder's exclusive lock, or raises `FolderInUse` naming the holder."""
        path = self.file(LOCK)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
                same = os.path.samestat(os.fstat(fd), os.stat(path))
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
            os.remove(self.file(LOCK))
        os.close(self._lock_fd)
        self._lock_fd = None

    def discard(self) -> None:
        """Removes the whole folder (it must carry gdjax's marker) and releases the lock: for a run
        refused before it wrote anything, which should leave no folder behind (issue 12)."""
        if not is_run_folder(self.path):
            self.unlock()
            return
        shutil.rmtree(self.path, ignore_errors=True)
        self.unlock()

    # --------------------------------------------------------------------------------- parts
    def part_names(self, key: str) -> tuple[str, str]:
        return self.file(PARTS, f"{key}.npz"), self.file(PARTS, f"{key}.json")

    def save_part(self, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Writes a unit's arrays, then its metadata (the metadata's presence marks the part done)."""
        os.makedirs(self.file(PARTS), exist_ok=True)
        npz, meta_path = self.part_names(key)
        io.write_npz(npz, arrays)
        io.write_json(meta_path, meta)

    def load_part(self, key: str, required: list[str]) -> tuple[dict | None, dict | None, str | None]:
        """`(meta, arrays, None)` for a complete readable part; `(None, None, why)` for a damaged one;
        `(None, None, None)` when there is no complete part."""
        npz, meta_path = self.part_names(key)
        if not (os.path.isfile(npz) and os.path.isfile(meta_path)):
            return None, None, None
        try:
            meta = io.read_json(meta_path, what="part file")
            if not isinstance(meta, dict):
                raise io.FileFormatError(f"{meta_path} is not a part file (not a JSON object)")
            if not meta.get("complete"):
                return None, None, None
            arrays = io.read_npz(npz, required=required)
        except (io.FileFormatError, OSError) as err:
            return None, None, str(err)
        return meta, arrays, None

    def clean_temps(self) -> list[str]:
        """Removes gdjax's own temporary files left by a kill -9, here and in `parts/`."""
        return io.remove_stale_temps(self.path) + io.remove_stale_temps(self.file(PARTS))


def prepare(cfg, out: str, *, resume: bool, force: bool) -> tuple[RunFolder, bool]:
    """Creates (or reopens, with `resume`) the run folder and takes its lock.

    Returns:
      The locked folder and whether it is resumed.

    Raises:
      ValueError: the folder is not gdjax's (no `.gdjax-run` marker), was run with another config,
        exists without `--resume`/`--force`, or (`FolderInUse`) is locked by a live run.
    """
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a folder")
    exists = os.path.isdir(out) and bool(os.listdir(out))
    if exists and (resume or force) and not is_run_folder(out):
        verb = "resume" if resume else "clear (--force)"
        raise ValueError(
            f"refusing to {verb} {out}: it is not a gdjax run folder (no {MARKER} marker); "
            "nothing in it was touched. Choose another --out"
        )
    if exists and resume:
        folder = RunFolder(out)
        folder.lock()
        try:
            cfg_file = folder.file("config.toml")
            if not os.path.isfile(cfg_file):
                folder.clean_temps()
                if set(os.listdir(out)) <= {MARKER, LOCK}:  # killed right after creating it
                    return folder, False
                raise ValueError(f"cannot resume {out}: its config.toml is missing")
            previous = config_lib.load(cfg_file)
            diff = _config_diff(previous.to_dict(), cfg.to_dict())
            if diff:
                raise ValueError(
                    f"cannot resume {out}: it was run with a different config (differs in "
                    f"{', '.join(diff[:5])}); use the same config, or a new --out"
                )
            folder.clean_temps()
        except BaseException:
            folder.unlock()
            raise
        return folder, True
    if exists and not force:
        raise ValueError(
            f"run folder {out} already exists and is not empty: pass --resume to finish an interrupted run, "
            "--force to replace it, or another --out"
        )
    if exists and force:
        folder = RunFolder(out)
        folder.lock()  # refuses to clear a folder a live run is writing
        try:
            for name in os.listdir(out):
                if name in (LOCK, MARKER):
                    continue
                target = os.path.join(out, name)
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                else:
                    os.remove(target)
        except BaseException:
            folder.unlock()
            raise
        return folder, False
    os.makedirs(out, exist_ok=True)
    io.write_json(os.path.join(out, MARKER), MARKER_CONTENT)  # first: the folder is ours from now on
    folder = RunFolder(out)
    folder.lock()
    return folder, False
