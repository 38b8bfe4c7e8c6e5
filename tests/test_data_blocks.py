"""data/blocks.py: blocks of a cube read as arrays of their own; a read-only memmap's pages are given back after
each block, so a pass over a memmapped scene does not keep the file resident."""

from pathlib import Path

import numpy as np
import pytest

from data.blocks import read_block


def rss_file_mib() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["RssFile"].split()[0]) / 1024


def write_cube(path: Path, rows: int, width: int = 256, bands: int = 64) -> np.ndarray:
    cube = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width, bands))
    cube[:] = np.arange(rows, dtype=np.float32)[:, None, None]
    cube.flush()
    del cube
    return np.load(path, mmap_mode="r")


def test_blocks_equal_indexing_for_arrays_and_memmaps(tmp_path):
    cube = write_cube(tmp_path / "cube.npy", 40)
    plain = np.asarray(cube).copy()
    for index in (slice(3, 9), np.array([0, 5, 39]), 7, (..., [0, 10, 63])):
        for source in (cube, plain):
            block = read_block(source, index, np.float64)
            np.testing.assert_array_equal(block, plain[index].astype(np.float64))
            assert block.dtype == np.float64
    block = read_block(cube, slice(0, 40))
    assert block.dtype == np.float32 and not np.may_share_memory(block, cube)
    np.testing.assert_array_equal(cube[12], plain[12])  # released pages read back from the file


def test_a_copy_on_write_memmap_keeps_its_changes(tmp_path):
    write_cube(tmp_path / "cube.npy", 8)
    cube = np.load(tmp_path / "cube.npy", mmap_mode="c")
    cube[2] = -1.0  # lives only in this mapping's private pages
    assert (read_block(cube, slice(0, 4))[2] == -1.0).all()
    assert (cube[2] == -1.0).all()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads RssFile from /proc (Linux)")
def test_a_pass_over_a_memmap_does_not_keep_the_file_resident(tmp_path):
    cube = write_cube(tmp_path / "cube.npy", 1024)  # 64 MiB
    rows = 16  # 1 MiB blocks

    def rss_growth(read) -> float:
        before = rss_file_mib()
        total = sum(float(read(slice(r0, r0 + rows)).sum()) for r0 in range(0, len(cube), rows))
        assert total == 256 * 64 * float(np.arange(1024).sum())
        return rss_file_mib() - before

    assert rss_growth(lambda index: read_block(cube, index)) < 16
    assert rss_growth(lambda index: np.asarray(cube[index])) > 48  # plain reads keep the pages: the check can fail
