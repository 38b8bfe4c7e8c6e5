"""Every output file is written through here: to a temporary file beside it, then renamed onto it.

    atomic_write(path, lambda tmp: torch.save(payload, tmp), size=estimated_bytes)   # streamed (checkpoints)
    write_files({folder / "anomaly_map.npy": data, folder / "metrics.json": text})   # bytes, all or none

A failed or interrupted write never touches the file it replaces and leaves no temporary file behind.
`write_files` stages every file before it renames any, so a run's outputs are replaced together or not
at all. Free space is checked before anything is written; an OSError while writing becomes one
`OutputError` naming the file, the space it needed and the space left (ENOSPC, EDQUOT, EFBIG) or the
system's reason. SIGINT during the writes is held until they are done (`utils.interrupt.held`).
Files get the mode a plain `open(path, "w")` would give, 0666 less the umask (0644 under the usual 022),
not the 0600 of `tempfile`, so the group can read a run's outputs when the umask allows it.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Mapping

from utils.errors import OutputError
from utils.interrupt import held

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _free(folder: Path) -> int:
    return shutil.disk_usage(folder).free


def _no_space(path: Path, size: int, total: int, reason: str) -> OutputError:
    needed = human_bytes(size) + (f" ({human_bytes(total)} with the files written with it)" if total > size else "")
    return OutputError(f"{path}: not written: {reason}; it needs {needed}, {human_bytes(_free(path.parent))} are "
                       f"free in {path.parent}; free some space or choose another output folder (earlier files "
                       f"are untouched)")


def _as_output_error(err: OSError, path: Path, size: int, total: int) -> OutputError:
    name = errno.errorcode.get(err.errno or 0, "OSError")
    if err.errno in _NO_SPACE:
        return _no_space(path, size, total, f"{err.strerror or 'no space left'} ({name})")
    return OutputError(f"{path}: not written: {err.strerror or err} ({name}); earlier files are untouched")


def _check_space(sizes: Mapping[Path, int]) -> None:
    """Refuse before writing when the files will not fit on their filesystems."""
    total = sum(sizes.values())
    needed: dict[int, int] = {}
    for path, size in sizes.items():
        device = os.stat(path.parent).st_dev
        needed[device] = needed.get(device, 0) + size
        if needed[device] > _free(path.parent):
            raise _no_space(path, size, total, "not enough free space")


def _file_mode() -> int:
    """0o666 less the process umask (read by setting it and putting it back: there is no getter)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _stage(path: Path, write: Callable[[str], None], size: int, total: int) -> str:
    """Write a temporary file beside `path` and fsync it; returns its name (removed on any failure)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())  # mkstemp creates 0600
    finally:
        os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    except BaseException as err:
        os.unlink(tmp)
        if isinstance(err, OSError):
            raise _as_output_error(err, path, size, total) from None
        raise
    return tmp


def _write_all(files: Mapping[Path, tuple[Callable[[str], None], int]]) -> None:
    try:
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _as_output_error(err, next(iter(files)), 0, 0) from None
    sizes = {path: size for path, (_, size) in files.items()}
    total = sum(sizes.values())
    with held():
        _check_space(sizes)
        staged: dict[Path, str] = {}
        try:
            for path, (write, size) in files.items():
                staged[path] = _stage(path, write, size, total)
            for path, tmp in list(staged.items()):
                os.replace(tmp, path)
                del staged[path]
        finally:
            for tmp in staged.values():
                os.unlink(tmp)


def atomic_write(path: str | Path, write: Callable[[str], None], size: int) -> Path:
    """Call `write(tmp_path)`, then rename onto `path`; `size` is the expected number of bytes."""
    path = Path(path)
    _write_all({path: (write, size)})
    return path


def _bytes_writer(data: bytes) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)
    return write


def write_files(files: Mapping[Path, bytes | str]) -> None:
    """Write each file's bytes (str: UTF-8), all of them or none."""
    payloads = {Path(path): data.encode() if isinstance(data, str) else data for path, data in files.items()}
    _write_all({path: (_bytes_writer(data), len(data)) for path, data in payloads.items()})
