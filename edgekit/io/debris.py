"""Temporary files and folders that carry their owner's pid, and the sweep that removes the ones
a killed run left behind.

Every temporary name edgekit makes (an atomic write's `.model.onnx.pid123.x1y2.part`, the
quantize pass's `.quantize-pid123-…` work folder, an OpenVINO IR's `.model.pid123.part.xml`, the
SSH control folder `edgekit-ssh-pid123-…`) has a `pid<N>` token. A later run removes such an
entry only when it is stale: its owner is dead (or a zombie), or the pid now belongs to a process
that started after the entry was last written (the pid was reused). A run that is still going
keeps its files, so two runs into one folder never pull each other's work away."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

_PID = re.compile(r"pid(\d+)[.\-_]")
_TEMP = re.compile(r"\.pid\d+\.")  # an atomic write's temp name and what is derived from it


def pid_tag() -> str:
    """The token that names this process as the owner of a temporary file or folder."""
    return f"pid{os.getpid()}"


def owner_pid(name: str) -> int | None:
    """The pid recorded in a temporary name (None for names without one)."""
    match = _PID.search(name)
    return int(match.group(1)) if match else None


def is_debris_name(name: str) -> bool:
    """An output folder's temporary entries: hidden `.part` files (and what is derived from
    one), `.quantize-` and `.export-` folders."""
    return name.startswith(".") and (".part" in name or name.startswith((".quantize-", ".export-"))
                                     or _TEMP.search(name) is not None)


def _proc_stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()  # fields 3.. (the name may hold spaces)


def _process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), where /proc says so."""
    fields = _proc_stat(pid)
    if fields is None:
        return None
    try:
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    fields = _proc_stat(pid)
    return not (fields and fields[0] in ("Z", "X"))  # a killed child not yet reaped is dead


def is_stale(path: Path) -> bool:
    """Whether the temporary entry `path` belongs to no running process."""
    pid = owner_pid(path.name)
    if pid is None or pid == os.getpid():
        return False
    if not process_alive(pid):
        return True
    started = _process_start(pid)
    try:
        written = path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return started is not None and written < started - 1.0  # the pid was reused since


def sweep(folder: str | Path, *, prefix: str | None = None) -> list[str]:
    """Remove the stale temporary entries of `folder` (those named by `prefix`, else the output
    folder's `.part` files and `.quantize-` folders). Returns the names removed."""
    folder = Path(folder)
    removed: list[str] = []
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) if prefix else is_debris_name(name)):
            continue
        try:
            if uid is not None and entry.lstat().st_uid != uid:
                continue  # never another user's
        except FileNotFoundError:
            continue
        if not is_stale(entry):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(name)
    return removed
