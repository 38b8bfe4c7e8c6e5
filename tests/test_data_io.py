"""data.io.load_scene: every format on tiny files, the layout rule, gt files, and every documented error."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image
from spectral.io import envi

from data.io import load_scene, require_scene_file, scene_name
from data.scene import Scene
from utils.errors import DataError
from fakes import LogRecords

H, W, B = 5, 7, 6


@pytest.fixture
def cube() -> np.ndarray:
    return np.random.default_rng(0).random((H, W, B)).astype(np.float32)


@pytest.fixture
def gt() -> np.ndarray:
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[1, 2] = mask[3, 4] = 1
    return mask


def write_mat73(path, arrays: dict[str, np.ndarray]) -> None:
    """Write a MATLAB v7.3 file as MATLAB does: HDF5 with a 512-byte userblock, arrays column-major."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in arrays.items():
            f.create_dataset(name, data=np.ascontiguousarray(value.T))  # MATLAB's column-major order
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116) + b" " * 8 + b"\x00\x02" + b"IM"  # text, subsystem offset, version 0x0200, endian
    with open(path, "r+b") as f:  # the 128-byte MATLAB header lives in the userblock
        f.write(header)


def test_npz_round_trip(tmp_path, cube, gt):
    path = tmp_path / "scene.npz"
    wavelengths = np.linspace(400, 1000, B)
    np.savez(path, cube=cube, gt=gt, wavelengths=wavelengths)
    scene = load_scene(path)
    assert isinstance(scene, Scene) and scene.name == "scene"
    assert scene.cube.dtype == np.float32 and np.array_equal(scene.cube, cube)
    assert scene.gt.dtype == np.uint8 and np.array_equal(scene.gt, gt)
    assert np.allclose(scene.wavelengths, wavelengths)


def test_npz_integer_cube_bool_gt(tmp_path, gt):
    path = tmp_path / "ints.npz"
    ints = np.arange(H * W * B, dtype=np.int16).reshape(H, W, B)
    np.savez(path, cube=ints, gt=gt.astype(bool))
    scene = load_scene(path)
    assert scene.cube.dtype == np.float32 and np.array_equal(scene.cube, ints.astype(np.float32))
    assert scene.gt.dtype == np.uint8 and np.array_equal(scene.gt, gt)


def test_npz_without_gt_and_without_anomaly(tmp_path, cube):
    np.savez(tmp_path / "a.npz", cube=cube)
    assert load_scene(tmp_path / "a.npz").gt is None
    np.savez(tmp_path / "b.npz", cube=cube, gt=np.zeros((H, W), np.uint8))
    assert load_scene(tmp_path / "b.npz").gt.sum() == 0


def test_npy_stays_memmap(tmp_path, cube):
    path = tmp_path / "cube.npy"
    np.save(path, cube.astype(np.float64))
    scene = load_scene(path)
    assert isinstance(scene.cube, np.memmap)
    assert scene.cube.dtype == np.float64  # kept as stored: consumers convert chunk by chunk
    assert np.array_equal(np.asarray(scene.cube), cube.astype(np.float64))


def test_mat_v5_named_and_guessed_keys(tmp_path, cube, gt):
    path = tmp_path / "abu.mat"
    scipy.io.savemat(path, {"data": cube.astype(np.float64), "map": gt.astype(np.float64)})
    scene = load_scene(path)  # 'data' is the only 3-D array; 'map' is a known gt name
    assert np.allclose(scene.cube, cube) and np.array_equal(scene.gt, gt)
    other = tmp_path / "other.mat"
    scipy.io.savemat(other, {"img": cube, "truth": gt, "note": "x"})
    scene = load_scene(other)  # gt found as the one sparse 0/1 (H, W) array
    assert np.array_equal(scene.gt, gt)
    assert np.array_equal(load_scene(other, cube_key="img", gt_key="truth").gt, gt)


def test_mat_v73_transposed_back(tmp_path, cube, gt):
    path = tmp_path / "big.mat"
    write_mat73(path, {"hsi": cube.astype(np.float64), "groundtruth": gt.astype(np.uint8)})
    with pytest.raises(NotImplementedError):
        scipy.io.loadmat(path)  # the fixture is a real v7.3 file
    scene = load_scene(path)
    assert scene.cube.shape == (H, W, B) and np.allclose(scene.cube, cube)
    assert np.array_equal(scene.gt, gt)


def test_envi_with_wavelengths(tmp_path, cube):
    hdr = tmp_path / "scene.hdr"
    wavelengths = [450.0 + 10 * i for i in range(B)]
    envi.save_image(str(hdr), cube, dtype=np.float32, interleave="bsq", metadata={"wavelength": wavelengths})
    scene = load_scene(hdr)
    assert scene.cube.shape == (H, W, B) and np.array_equal(np.asarray(scene.cube), cube)
    assert np.allclose(scene.wavelengths, wavelengths)
    assert scene.gt is None


def test_envi_header_without_data(tmp_path, cube):
    hdr = tmp_path / "lonely.hdr"
    envi.save_image(str(hdr), cube, dtype=np.float32)
    (tmp_path / "lonely.img").unlink()
    with pytest.raises(DataError, match="lonely.img"):
        load_scene(hdr)


@pytest.fixture
def log_records():
    with LogRecords.attached() as records:
        yield records


def test_layout_rule_transposes_only_on_evidence(tmp_path, cube, gt, log_records):
    bhw = np.ascontiguousarray(cube.transpose(2, 0, 1))  # (B, H, W)
    np.savez(tmp_path / "wl.npz", cube=bhw, wavelengths=np.arange(B) + 400.0)
    assert np.array_equal(load_scene(tmp_path / "wl.npz").cube, cube)
    np.savez(tmp_path / "gt.npz", cube=bhw, gt=gt)
    assert np.array_equal(load_scene(tmp_path / "gt.npz").cube, cube)
    assert log_records.warnings() == []  # evidence: no guess
    np.savez(tmp_path / "none.npz", cube=bhw)
    assert load_scene(tmp_path / "none.npz").cube.shape == (B, H, W)  # no evidence: (H, W, B), a guess
    assert log_records.warnings() == [
        f"none.npz: guessing the layout of the cube {(B, H, W)}: (H, W, B) = {B} x {H} pixels of {W} bands (no "
        f"wavelengths or gt to tell); set cube_layout: bhw if it is (B, H, W), or cube_layout: hwb to confirm"]
    np.savez(tmp_path / "bad.npz", cube=cube, wavelengths=np.arange(B + 3.0))
    with pytest.raises(DataError, match="wavelengths match no axis"):
        load_scene(tmp_path / "bad.npz")


def test_explicit_layout_is_applied_without_a_warning(tmp_path, cube, log_records):
    np.save(tmp_path / "bhw.npy", np.ascontiguousarray(cube.transpose(2, 0, 1)))  # (B, H, W), no evidence
    scene = load_scene(tmp_path / "bhw.npy", cube_layout="bhw")
    assert isinstance(scene.cube, np.memmap) and np.array_equal(np.asarray(scene.cube), cube)  # a view on disk
    np.save(tmp_path / "hwb.npy", cube)
    assert np.array_equal(load_scene(tmp_path / "hwb.npy", cube_layout="hwb").cube, cube)
    assert log_records.warnings() == []


def _layout_file(tmp_path, cube, gt, kind):
    bhw = np.ascontiguousarray(cube.transpose(2, 0, 1))
    files = {
        "hwb with gt": lambda p: np.savez(p / "s.npz", cube=cube, gt=gt) or p / "s.npz",
        "bhw with wavelengths": lambda p: np.savez(p / "s.npz", cube=bhw, wavelengths=np.arange(B) + 400.0)
        or p / "s.npz",
        "envi": lambda p: envi.save_image(str(p / "s.hdr"), cube, dtype=np.float32) or p / "s.hdr",
        "wavelengths against gt": lambda p: np.savez(p / "s.npz", cube=bhw, gt=gt, wavelengths=np.arange(W) + 1.0)
        or p / "s.npz",
    }
    return files[kind](tmp_path)


LAYOUT_ERRORS = [  # (file, cube_layout, message)
    ("hwb with gt", "bhw", r"cube_layout bhw reads the cube \(5, 7, 6\) as \(B, H, W\) = 7 x 6 pixels of 5 "
                           r"bands, which contradicts the gt's shape \(5, 7\); use cube_layout hwb or auto"),
    ("bhw with wavelengths", "hwb", r"cube_layout hwb .* contradicts 6 wavelengths; use cube_layout bhw"),
    ("envi", "bhw", r"contradicts the ENVI header"),
    ("wavelengths against gt", "auto", r"the evidence on the layout of the cube \(6, 5, 7\) disagrees \(7 "
                                       r"wavelengths: hwb; the gt's shape \(5, 7\): bhw\)"),
    ("hwb with gt", "chw", r"cube_layout must be one of auto, hwb, bhw, got 'chw'"),
]


@pytest.mark.parametrize("kind, layout, message", LAYOUT_ERRORS)
def test_layout_contradicting_the_evidence_is_an_error(tmp_path, cube, gt, kind, layout, message):
    path = _layout_file(tmp_path, cube, gt, kind)
    with pytest.raises(DataError, match=message) as err:
        load_scene(path, cube_layout=layout)
    assert str(err.value).startswith(str(path))


def _save_envi_mask(path, mask):
    envi.save_image(str(path), mask[..., None].astype(np.uint8), dtype=np.uint8)
    return path


GT_FILES = {  # name -> writer(path, mask (H, W) uint8 0/1) -> path
    "mask.npy": lambda p, m: np.save(p, m) or p,
    "mask.npz": lambda p, m: np.savez(p, truth=m) or p,  # the only 2-D array
    "mask.mat": lambda p, m: scipy.io.savemat(p, {"map": m.astype(np.float64)}) or p,
    "mask73.mat": lambda p, m: write_mat73(p, {"groundtruth": m}) or p,
    "mask.hdr": _save_envi_mask,
    "mask.png": lambda p, m: Image.fromarray(m * 255).save(p) or p,  # 8-bit black and white
    "mask-rgb.png": lambda p, m: Image.fromarray(np.repeat(m[..., None] * 255, 3, axis=2)).save(p) or p,
    "mask.tif": lambda p, m: Image.fromarray(m).save(p) or p,  # 0/1
    "mask-bool.png": lambda p, m: Image.fromarray(m.astype(bool)).save(p) or p,  # mode "1"
}


@pytest.mark.parametrize("name", sorted(GT_FILES))
def test_gt_path_in_every_format(tmp_path, cube, gt, name):
    np.save(tmp_path / "scene.npy", cube)
    gt_file = GT_FILES[name](tmp_path / name, gt)
    scene = load_scene(tmp_path / "scene.npy", gt_path=gt_file)
    assert scene.gt.dtype == np.uint8 and np.array_equal(scene.gt, gt)


def test_gt_path_replaces_the_files_gt_and_is_layout_evidence(tmp_path, cube, gt, log_records):
    other = np.zeros_like(gt)
    other[0, 0] = 1
    np.savez(tmp_path / "s.npz", cube=cube, gt=gt)
    np.save(tmp_path / "other.npy", other)
    assert np.array_equal(load_scene(tmp_path / "s.npz", gt_path=tmp_path / "other.npy").gt, other)
    np.save(tmp_path / "bhw.npy", np.ascontiguousarray(cube.transpose(2, 0, 1)))
    scene = load_scene(tmp_path / "bhw.npy", gt_path=tmp_path / "other.npy")
    assert np.array_equal(np.asarray(scene.cube), cube) and log_records.warnings() == []
    np.savez(tmp_path / "masks.npz", a=gt, b=other)
    assert np.array_equal(load_scene(tmp_path / "s.npz", gt_key="b", gt_path=tmp_path / "masks.npz").gt, other)


def _with_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


GT_FILE_ERRORS = {  # name -> (writer(path, mask), message)
    "absent.png": (lambda p, m: p, r"absent\.png: gt file not found \(gt_path\)"),
    "colour.png": (lambda p, m: Image.fromarray(np.stack([m * 255, m * 0, m * 0], axis=2)).save(p) or p,
                   r"colour\.png: a colour image"),
    "values.png": (lambda p, m: Image.fromarray(m * 2).save(p) or p,
                   r"values\.png: gt must hold only 0 \(background\) and 1 \(anomaly\); found values 0, 2"),
    "short.npy": (lambda p, m: np.save(p, m[:-1]) or p, r"short\.npy: gt shape \(4, 7\) does not match"),
    "cube.npy": (lambda p, m: np.save(p, np.stack([m, m], axis=2)) or p, r"cube\.npy: the gt must be a 2-D"),
    "two.hdr": (lambda p, m: envi.save_image(str(p), np.stack([m, m], axis=2), dtype=np.uint8) or p,
                r"two\.hdr: an ENVI gt must have one band, this one has 2"),
    "masks.npz": (lambda p, m: np.savez(p, a=m, b=m) or p, r"masks\.npz: several 2-D arrays could be the gt"),
    "mask.txt": (lambda p, m: _with_bytes(p, b"0 1"), r"mask\.txt: unknown gt format '\.txt'"),
    "garbage.png": (lambda p, m: _with_bytes(p, b"nonsense"), r"garbage\.png: not a readable image"),
}


@pytest.mark.parametrize("name", sorted(GT_FILE_ERRORS))
def test_gt_path_errors_name_the_gt_file(tmp_path, cube, gt, name):
    np.save(tmp_path / "scene.npy", cube)
    write, message = GT_FILE_ERRORS[name]
    with pytest.raises(DataError, match=message):
        load_scene(tmp_path / "scene.npy", gt_path=write(tmp_path / name, gt))


def test_synthetic_pseudo_path():
    scene = load_scene("synthetic:2")
    assert scene.name == "synthetic-2" and scene.cube.shape == (100, 100, 128) and scene.gt.sum() > 0
    with pytest.raises(DataError, match="integer"):
        load_scene("synthetic:abc")


@pytest.mark.parametrize("path", ["synthetic", "synthetic:0", "synthetic:2", "air1.npz", "air1.mat", "d/air1.hdr"])
def test_scene_name_without_reading_is_load_scenes_name(tmp_path, cube, gt, path):
    """The per-scene folders are found from the name before the scene is read: both must agree."""
    if not path.startswith("synthetic"):
        path = str(tmp_path / path)
        Path(path).parent.mkdir(exist_ok=True)
        write = {".npz": lambda p: np.savez_compressed(p, cube=cube, gt=gt),
                 ".mat": lambda p: scipy.io.savemat(p, {"cube": cube, "gt": gt}),
                 ".hdr": lambda p: envi.save_image(p, cube, dtype=np.float32, interleave="bsq")}[Path(path).suffix]
        write(path)
    require_scene_file(path)
    assert scene_name(path) == load_scene(path).name


def test_require_scene_file_is_load_scenes_not_found_error(tmp_path):
    with pytest.raises(DataError, match=r"nope\.npz: scene file not found$"):
        require_scene_file(tmp_path / "nope.npz")
    with pytest.raises(DataError, match=r"nope\.npz: scene file not found$"):
        load_scene(tmp_path / "nope.npz")


def _write(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


ERROR_CASES = {
    "missing file": (lambda p, c, g: p / "nope.npz", "not found"),
    "unknown extension": (lambda p, c, g: (p / "x.jpg").write_bytes(b"\xff\xd8") and p / "x.jpg", "unknown scene format"),
    "truncated npz": (lambda p, c, g: _truncate(_write(p, "t.npz", cube=c)), "t.npz: not a readable .npz"),
    "garbage npy": (lambda p, c, g: (p / "g.npy").write_bytes(b"nonsense") and p / "g.npy", "not a .npy file"),
    "2-D cube": (lambda p, c, g: _write(p, "flat.npz", cube=c[..., 0]), "must be 3-D"),
    "1-D cube": (lambda p, c, g: _write(p, "line.npz", cube=c[0, 0]), "must be 3-D"),
    "single band": (lambda p, c, g: _write(p, "one.npz", cube=c[..., :1]), "needs spectra"),
    "bad gt shape": (lambda p, c, g: _write(p, "s.npz", cube=c, gt=g[:-1]), r"gt shape \(4, 7\).*\(5, 7\)"),
    "gt values 0/2": (lambda p, c, g: _write(p, "v.npz", cube=c, gt=g * 2), "found values 0, 2"),
    "boolean cube": (lambda p, c, g: _write(p, "b.npz", cube=c > 0.5), "real numeric"),
    "mat without cube": (lambda p, c, g: scipy.io.savemat(p / "y.mat", {"Y": c[..., 0], "A": g}) or p / "y.mat",
                         "arrays found: A, Y"),
    "wrong cube_key": (lambda p, c, g: _write(p, "k.npz", cube=c), "no array named 'data'"),
}


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_name_the_file_and_the_problem(tmp_path, cube, gt, case):
    make, message = ERROR_CASES[case]
    path = make(tmp_path, cube, gt)
    with pytest.raises(DataError, match=message) as err:
        load_scene(path, cube_key="data" if case == "wrong cube_key" else None)
    assert path.name in str(err.value)


def test_corrupt_mat_v73_is_data_error(tmp_path, cube):
    path = tmp_path / "cut.mat"
    write_mat73(path, {"cube": cube})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.mat"):
        load_scene(path)
