"""utils.atomic: written files get 0666 less the umask, like a plain open(), not tempfile's 0600."""

import os
import stat

import pytest

from utils.atomic import atomic_write, write_files


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    previous = os.umask(0o022)
    yield lambda value: os.umask(value)
    os.umask(previous)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    write_files({tmp_path / "a.json": "{}\n", tmp_path / "b.npy": b"\x00"})
    atomic_write(tmp_path / "c.pth", lambda tmp: open(tmp, "wb").close(), 0)
    for name in ("a.json", "b.npy", "c.pth"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert os.umask(mask) == mask  # writing leaves the umask as it was
