"""One run per output folder, and an unwritable folder refused before any work starts.

    lock_output_dir(cfg.output_dir)      # before a stage's real work starts
    ...
    unlock_output_dir(cfg.output_dir)    # when it is done (and at exit, whatever happened)

Creates the folder and the lock file `.sspq-run.lock` in it, holding this process's pid, host and start
time; creating it is the writability check. A folder whose lock names another live process is refused
with that process's id. A lock a crashed run left behind is taken over: its pid is gone, or (Linux) the
process of that pid started at another time (pid reused). A lock written on another host cannot be
checked, so it is honoured and the message says how to remove it. The process holding a lock may take
it again (Stage 1 then Stage 2 in one process).
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import socket
from pathlib import Path
from typing import Any

from utils.errors import OutputError

LOCK_NAME = ".sspq-run.lock"


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def _me() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}


def _alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # cannot be checked from here
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    started = _start_time(pid)
    return started is None or owner.get("started") in (None, started)


def _read(path: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    valid = isinstance(owner, dict) and isinstance(owner.get("pid"), int) and owner["pid"] > 0 \
        and isinstance(owner.get("host"), str)
    return owner if valid else {}  # {}: unreadable, honoured


def unlock_output_dir(folder: str | Path) -> None:
    """Remove the folder's lock if this process holds it."""
    path = Path(folder) / LOCK_NAME
    if _read(path) == _me():
        path.unlink(missing_ok=True)


def _refuse(folder: Path, err: OSError) -> OutputError:
    name = errno.errorcode.get(err.errno or 0, "OSError")
    return OutputError(f"{folder}: cannot write to this output folder ({err.strerror or err}, {name}); nothing was "
                       f"started: choose another output folder or make it writable")


def lock_output_dir(folder: str | Path) -> Path:
    """Create `folder` if needed and take its lock; returns the lock file's path."""
    folder = Path(folder)
    path, me = folder / LOCK_NAME, _me()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _refuse(folder, err) from None
    for _ in range(3):  # a stale lock is removed and the create retried
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _read(path)
            if owner is None:  # removed meanwhile
                continue
            if owner == me:
                return path
            if owner and not _alive(owner):
                path.unlink(missing_ok=True)
                continue
            who = (f"pid {owner['pid']} on {owner['host']}" if owner else "a run whose lock file cannot be read")
            raise OutputError(f"{folder} is in use by another run ({who}); wait for it to finish or choose another "
                              f"output folder (if no run uses it, delete {path})")
        except OSError as err:
            raise _refuse(folder, err) from None
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(me))
        except OSError as err:
            path.unlink(missing_ok=True)
            raise _refuse(folder, err) from None
        atexit.register(unlock_output_dir, folder)
        return path
    raise OutputError(f"{folder}: could not take the lock {path} (another run keeps re-creating it)")
