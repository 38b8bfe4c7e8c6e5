"""Bad input through the real command lines: a clear one-line error or a documented repair, never a
traceback or a silent wrong map; nothing an earlier run wrote is lost.

Every case runs a stage script with argv (tests/robustness_helpers.py: forked from a zygote that imported
the project once, so each case costs ~0.1-1 s instead of ~10 s of imports; two cases are re-run as plain
`python script.py` to show both paths print the same). One tiny tokenizer -> encoder -> detector chain,
trained once per session through the same command lines, serves every checkpoint case.

Error contract checked for every refusal: exit status 2, no traceback, exactly one `error:` line on
stderr, it is the last line, and it matches the case's pattern (which names the file and the fix).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import scipy.io
import torch

from robustness_helpers import Chain, chain, run_python, run_script, scene_arrays, write_scene
from sspq_tokenizer.config import TokenizerConfig
from sspq_tokenizer.joint_tokenizer import SSPQTokenizer
from utils.checkpoint import load_checkpoint, parent_record, save_checkpoint, sha256_file
from utils.config import from_dict, to_dict

INFER, TOKENIZE, PRETRAIN, TRAIN = ("anomaly/inference.py", "sspq_tokenizer/train_tokenizer.py",
                                    "encoder/pretrain_mtp.py", "anomaly/train_anomaly.py")


@pytest.fixture(scope="module")
def c() -> Chain:
    return chain()


def chain_hashes(c: Chain) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in (c.scene, c.tokenizer, c.encoder, c.detector)}


def assert_one_line_error(result, pattern: str) -> str:
    assert result.code == 2, f"exit {result.code}, expected 2:\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(result.error_lines) == 1 and lines[-1] == result.error_lines[0], result.stderr[-2000:]
    assert re.search(pattern, lines[-1]), f"{lines[-1]!r} does not match {pattern!r}"
    return lines[-1]


# ------------------------------------------------------------------------------------- scene files
A = scene_arrays()
CUBE, GT = A["cube"], A["gt"]


def _with(cube=None, **extra) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        return write_scene(folder / "scene.npz", cube=CUBE if cube is None else cube, **extra)
    return write


def _nan_pixels() -> np.ndarray:
    cube = CUBE.copy()
    cube[np.random.default_rng(0).random(cube.shape) < 0.05] = np.nan
    return cube


def _set(cube: np.ndarray, index, value) -> np.ndarray:
    cube = cube.copy()
    cube[index] = value
    return cube


def _mat_without_cube(folder: Path) -> Path:
    scipy.io.savemat(folder / "scene.mat", {"foo": np.zeros((3, 3)), "bar": np.arange(4.0)})
    return folder / "scene.mat"


def _truncated_npz(folder: Path) -> Path:
    data = write_scene(folder / "full.npz").read_bytes()
    (folder / "scene.npz").write_bytes(data[: len(data) // 2])
    return folder / "scene.npz"


def _envi_header_only(folder: Path) -> Path:
    (folder / "scene.hdr").write_text("ENVI\nsamples = 20\nlines = 20\nbands = 16\nheader offset = 0\n"
                                      "file type = ENVI Standard\ndata type = 4\ninterleave = bsq\nbyte order = 0\n")
    return folder / "scene.hdr"


@dataclass
class DataCase:
    id: str
    write: Callable[[Path], Path]
    code: int
    pattern: str  # error line (code 2) or a log line (code 0)
    shape: tuple[int, int] | None = None  # anomaly map shape when the run succeeds
    check: Callable[[dict], bool] | None = None  # on metrics.json


WL = np.linspace(400, 900, 16)
DATA_CASES = [
    DataCase("NaN pixels", _with(_nan_pixels()), 0, r"scoring scene \(20, 20, 16\)", (20, 20),
             lambda m: m["preprocessing"]["repaired_values"] > 0),
    DataCase("Inf pixels", _with(_set(CUBE, (3, 4), np.inf)), 0,
             r"scene\.npz: repaired 16 non-finite \(NaN/inf\) value\(s\) with their band's median", (20, 20),
             lambda m: m["preprocessing"]["repaired_values"] == 16),
    DataCase("whole NaN band", _with(_set(CUBE, (..., 3), np.nan)), 0, r"scoring scene", (20, 20),
             lambda m: m["preprocessing"]["dropped_nonfinite"] == [3]),
    DataCase("zero and constant bands", _with(_set(_set(CUBE, (..., 0), 0.0), (..., 5), 7.0)), 0, r"scoring scene",
             (20, 20), lambda m: m["preprocessing"]["dropped_constant"] == [0, 5]),
    DataCase("negative values", _with(CUBE - 2.0), 0, r"scoring scene", (20, 20), None),
    DataCase("uint16 cube", _with((CUBE * 1000).astype(np.uint16)), 0, r"scoring scene", (20, 20), None),
    DataCase("int16 cube", _with((CUBE * 1000 - 500).astype(np.int16)), 0, r"scoring scene", (20, 20), None),
    DataCase("(B, H, W) with wavelengths", _with(CUBE[:, :18].transpose(2, 0, 1), gt=GT[:, :18], wavelengths=WL), 0,
             r"reading the cube \(16, 20, 18\) as \(B, H, W\) = 20 x 18 pixels of 16 bands, from 16 wavelengths", (20, 18),
             None),
    DataCase("(B, H, W) with gt", _with(CUBE[:, :18].transpose(2, 0, 1), gt=GT[:, :18]), 0,
             r"reading the cube \(16, 20, 18\) as \(B, H, W\) .*, from the gt's shape \(20, 18\)", (20, 18), None),
    DataCase("(B, H, W) without evidence", _with(CUBE[:, :18].transpose(2, 0, 1), gt=None), 0,
             r"guessing the layout of the cube \(16, 20, 18\): \(H, W, B\) = 16 x 20 pixels of 18 bands \(no "
             r"wavelengths or gt to tell\); set cube_layout: bhw", (16, 20)),
    DataCase("scene smaller than the patch", _with(CUBE[:3, :3], gt=None), 0, r"scoring scene \(3, 3, 16\)", (3, 3)),
    DataCase("1 x N strip", _with(CUBE[:1], gt=None), 0, r"scoring scene \(1, 20, 16\)", (1, 20)),
    DataCase("N x 1 strip", _with(CUBE[:, :1], gt=None), 0, r"scoring scene \(20, 1, 16\)", (20, 1)),
    DataCase("gt with no anomaly", _with(gt=np.zeros_like(GT)), 0,
             r"scene\.npz: the gt mask has no anomaly pixels: AUC is undefined",
             (20, 20), lambda m: "undefined" in m["note"] and "fused" not in m),
    DataCase("single-band cube", _with(CUBE[..., :1]), 2,
             r"scene\.npz: the cube has 1 band\(s\); anomaly detection needs spectra \(B >= 2\)"),
    DataCase("single pixel", _with(CUBE[:1, :1], gt=None), 2,
             r"scene\.npz: only 0 usable band\(s\) of 16 .* \(a single pixel: every band is constant\)"),
    DataCase("all NaN", _with(np.full_like(CUBE, np.nan)), 2,
             r"scene\.npz: only 0 usable band\(s\) of 16 after dropping 16 mostly non-finite"),
    DataCase("gt of the wrong shape", _with(gt=GT[:19]), 2,
             r"scene\.npz: gt shape \(19, 20\) does not match the cube's \(H, W\) = \(20, 20\)"),
    DataCase("gt with values 0/2", _with(gt=GT * 2), 2,
             r"scene\.npz: gt must hold only 0 \(background\) and 1 \(anomaly\); found values 0, 2"),
    DataCase(".mat without a cube", _mat_without_cube, 2,
             r"scene\.mat: no 3-D numeric array to use as the cube; arrays found: bar, foo\. Store it as 'cube' or "
             r"pass cube_key"),
    DataCase("truncated .npz", _truncated_npz, 2, r"scene\.npz: not a readable \.npz file \(BadZipFile"),
    DataCase("missing file", lambda folder: folder / "absent.npz", 2, r"absent\.npz: scene file not found"),
    DataCase("ENVI header without data", _envi_header_only, 2,
             r"scene\.hdr: the ENVI data file is missing: no scene, scene\.img, scene\.dat"),
    DataCase("unknown format", lambda folder: Path(shutil.copy(write_scene(folder / "a.npz"), folder / "scene.jpg")), 2,
             r"scene\.jpg: unknown scene format '\.jpg' \(supported: \.npz, \.npy, \.mat, \.hdr"),
]


@pytest.mark.parametrize("case", DATA_CASES, ids=[case.id for case in DATA_CASES])
def test_bad_scene(case: DataCase, c: Chain, tmp_path):
    before = chain_hashes(c)
    scene = case.write(tmp_path)
    out = tmp_path / "out"
    result = run_script(INFER, c.inference_argv(scene, out), tmp_path / "log")
    if case.code == 2:
        assert_one_line_error(result, case.pattern)
        assert not out.exists(), "a refused run wrote outputs"
    else:
        assert result.code == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert re.search(case.pattern, result.stderr), result.stderr[-2000:]
        anomaly_map = np.load(out / "anomaly_map.npy")
        assert anomaly_map.shape == case.shape and np.isfinite(anomaly_map).all()
        heads = np.load(out / "head_maps.npz")
        assert all(heads[k].shape == case.shape and np.isfinite(heads[k]).all() for k in heads.files)
        assert (out / "anomaly_map.png").is_file()
        if case.check is not None:
            assert case.check(json.loads((out / "metrics.json").read_text()))
    assert chain_hashes(c) == before


# ------------------------------------------------------------------------------------- configs
@dataclass
class ConfigCase:
    id: str
    script: str
    yaml: str | None  # written to cfg.yaml and passed with --config; None = no --config
    extra: list[str]
    pattern: str


DUP = ("num_domains: 2\npretrain_datasets:\n  - {name: a, data_path: synthetic, domain_id: 0}\n"
       "  - {name: b, data_path: 'synthetic:1', domain_id: 0}\n")
CONFIG_CASES = [
    ConfigCase("misspelt key", TOKENIZE, "patch_sise: 8\n", [],
               r"cfg\.yaml: unknown config key 'patch_sise' \(did you mean 'patch_size'\?\)"),
    ConfigCase("misspelt nested key", TRAIN, "lora:\n  rank: 4\n", [],
               r"cfg\.yaml: unknown config key 'lora\.rank' \(did you mean 'r'\?\)"),
    ConfigCase("wrong type", TOKENIZE, "num_epochs: ten\n", [],
               r"cfg\.yaml: num_epochs: expected an integer, got 'ten'"),
    ConfigCase("mask ratio 1.5", PRETRAIN, "mask_ratio: 1.5\n", [],
               r"cfg\.yaml: mask_ratio must lie strictly between 0 and 1, got 1\.5"),
    ConfigCase("patch size 0", TOKENIZE, "patch_size: 0\n", [], r"cfg\.yaml: patch_size must be >= 1, got 0"),
    ConfigCase("duplicate domain_id", PRETRAIN, DUP, [],
               r"cfg\.yaml: pretrain_datasets\[1\] \(b\): domain_id 0 is already used by 'a'"),
    ConfigCase("not YAML", TRAIN, "seed: [1\n", [], r"cfg\.yaml: not valid YAML"),
    ConfigCase("top level a list", TRAIN, "- 1\n- 2\n", [], r"cfg\.yaml: the top level must be a mapping of keys"),
    ConfigCase("missing config", TRAIN, None, ["--config", "absent.yaml"], r"absent\.yaml: config file not found"),
    ConfigCase("override without =", INFER, None, ["--set", "lm_block"],
               r"--set lm_block: not of the form key=value"),
    ConfigCase("misspelt override", INFER, None, ["--set", "head_weight.recon=1"],
               r"--set head_weight.recon=1: unknown config key 'head_weight' \(did you mean 'head_weights'\?\)"),
    ConfigCase("misspelt override beside a file", INFER, "seed: 1\n", ["--set", "inference_strid=4"],
               r"error: --set inference_strid=4: unknown config key 'inference_strid' \(did you mean 'inference_stride'\?\)"),
    ConfigCase("out-of-range override", TRAIN, None, ["--set", "lm_block=0"], r"--set lm_block=0: lm_block: must be >= 1, got 0"),
]


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[case.id for case in CONFIG_CASES])
def test_bad_config(case: ConfigCase, tmp_path):
    argv = list(case.extra)
    if case.yaml is not None:
        (tmp_path / "cfg.yaml").write_text(case.yaml)
        argv = ["--config", tmp_path / "cfg.yaml", *argv]
    assert_one_line_error(run_script(case.script, argv, tmp_path / "log"), case.pattern)


# ------------------------------------------------------------------------------------- checkpoints
def _resave(src: Path, dst: Path, stage: str, **changes) -> Path:
    """Copy a checkpoint through save_checkpoint, replacing entries (config, parent, metrics, ...)."""
    ckpt = load_checkpoint(src, stage)
    for key in ("format_version", "stage"):
        ckpt.pop(key)
    ckpt.update(changes)
    return save_checkpoint(dst, stage, ckpt.pop("config"), ckpt.pop("state_dict"), **ckpt)


def _truncate(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _tokenizer_with_codebooks(c: Chain, dst: Path, size: int) -> Path:
    cfg = from_dict(TokenizerConfig, load_checkpoint(c.tokenizer, "tokenizer")["config"])
    cfg.K_s = cfg.K_x = size
    torch.manual_seed(0)
    model = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg())
    return save_checkpoint(dst, "tokenizer", to_dict(cfg), model.state_dict())


def _encoder_over(c: Chain, tmp: Path, size: int) -> Path:
    """The chain's encoder (vocabulary 64) re-pointed, with a valid hash, at a tokenizer of size x size codes."""
    tok = _tokenizer_with_codebooks(c, tmp / f"tok{size}.pth", size)
    return _resave(c.encoder, tmp / "enc.pth", "encoder", parent=parent_record(tok))


def _detector_over_changed_encoder(c: Chain, tmp: Path) -> Path:
    encoder = Path(shutil.copy(c.encoder, tmp / "enc.pth"))
    detector = _resave(c.detector, tmp / "det.pth", "anomaly", parent=parent_record(encoder))
    _resave(c.encoder, encoder, "encoder", metrics={"edited": 1})  # the encoder file changes after Stage 3
    return detector


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _pickle_payload(tmp: Path) -> Path:
    torch.save({"format_version": 1, "stage": "anomaly", "state_dict": {}, "x": _RunsCode()}, tmp / "det.pth")
    return tmp / "det.pth"


def _tokenizer_bands_edited(c: Chain, tmp: Path) -> Path:
    config = {**load_checkpoint(c.tokenizer, "tokenizer")["config"], "num_bands": 12}
    return _resave(c.tokenizer, tmp / "tok.pth", "tokenizer", config=config)


def _detector_heads_edited(c: Chain, tmp: Path) -> Path:
    config = load_checkpoint(c.detector, "anomaly")["config"]
    config["anomaly"]["one_class"]["rep_dim"] = 5
    return _resave(c.detector, tmp / "det.pth", "anomaly", config=config)


def _infer(make):
    return lambda c, tmp: (INFER, c.inference_argv(c.scene, tmp / "out", detector=make(c, tmp)))


def _train(make):
    return lambda c, tmp: (TRAIN, ["--encoder_ckpt", make(c, tmp), "--data_path", c.scene, "--set", "device=cpu",
                                   "--set", f"output_dir={tmp / 'det'}"])


def _pretrain(make):
    return lambda c, tmp: (PRETRAIN, ["--tokenizer_ckpt", make(c, tmp), "--set", "device=cpu",
                                      "--set", f"output_dir={tmp / 'enc'}"])


CKPT_CASES = [
    ("tokenizer given as encoder", _train(lambda c, t: c.tokenizer),
     r"tok/best\.pth: this is a tokenizer checkpoint, but an encoder checkpoint is expected here; "
     r"encoder/pretrain_mtp\.py writes it"),
    ("encoder given as detector", _infer(lambda c, t: c.encoder),
     r"universal_hsi_encoder\.pth: this is an encoder checkpoint, but an anomaly checkpoint is expected here"),
    ("detector given as tokenizer", _pretrain(lambda c, t: c.detector),
     r"anomaly_detector\.pth: this is an anomaly checkpoint, but a tokenizer checkpoint is expected here"),
    ("truncated encoder (half)", _train(lambda c, t: _truncate(c.encoder, t / "enc.pth", 0.5)),
     r"enc\.pth: not a readable checkpoint \(truncated or corrupt: .*\); re-create it"),
    ("truncated detector (a third)", _infer(lambda c, t: _truncate(c.detector, t / "det.pth", 0.33)),
     r"det\.pth: not a readable checkpoint \(truncated or corrupt: .*\); re-create it"),
    ("empty checkpoint file", _infer(lambda c, t: _truncate(c.detector, t / "det.pth", 0.0)),
     r"det\.pth: not a readable checkpoint \(truncated or corrupt"),
    ("missing checkpoint", _infer(lambda c, t: t / "absent.pth"),
     r"absent\.pth: checkpoint not found; anomaly/train_anomaly\.py writes it"),
    ("not an sspq-hsi checkpoint", _infer(lambda c, t: torch.save([1, 2], t / "list.pth") or t / "list.pth"),
     r"list\.pth: not an sspq-hsi checkpoint"),
    ("pickled code in a checkpoint", _infer(lambda c, t: _pickle_payload(t)),
     r"det\.pth: refused: it holds Python objects other than tensors and plain types"),
    ("tokenizer band count vs its weights", _pretrain(_tokenizer_bands_edited),
     r"tok\.pth: weights do not match the model its config describes \(num_bands 12, K_s 8, K_x 8\): "
     r"size mismatch for .*; re-create the checkpoint"),
    ("encoder vocabulary 64 over a 16-word tokenizer", _train(lambda c, t: _encoder_over(c, t, 4)),
     r"enc\.pth: encoder vocabulary 64 \(K_s 8\) does not match the joint vocabulary 16 \(K_s 4\) of its "
     r"tokenizer .*tok4\.pth; re-run Stage 2"),
    ("encoder vocabulary 64 over a 256-word tokenizer", _train(lambda c, t: _encoder_over(c, t, 16)),
     r"enc\.pth: encoder vocabulary 64 \(K_s 8\) does not match the joint vocabulary 256"),
    ("detector weights vs its config", _infer(_detector_heads_edited),
     r"det\.pth: weights do not fit the detector its config describes: .*; retrain Stage 3"),
    ("detector over a changed encoder", _infer(_detector_over_changed_encoder),
     r"det\.pth was built from .*enc\.pth \(sha256 [0-9a-f]{12}\), but .*enc\.pth has sha256 [0-9a-f]{12}: "
     r"retrain this stage, or pass the original file"),
    ("--resume without last.pth (Stage 1)", lambda c, t: (TOKENIZE, ["--resume", "--set", f"output_dir={t}"]),
     r"--resume: no .*last\.pth to resume from; run without --resume first"),
    ("--resume without last.pth (Stage 2)", lambda c, t: (PRETRAIN, ["--resume", "--tokenizer_ckpt", c.tokenizer,
                                                                    "--set", f"output_dir={t}"]),
     r"--resume: no .*last\.pth to resume from; run without --resume first"),
]


@pytest.mark.parametrize("description, make, pattern", CKPT_CASES, ids=[case[0] for case in CKPT_CASES])
def test_bad_checkpoint(description, make, pattern, c: Chain, tmp_path):
    before = chain_hashes(c)
    script, argv = make(c, tmp_path)
    result = run_script(script, argv, tmp_path / "log")
    assert_one_line_error(result, pattern)
    assert not (tmp_path / "out").exists() and not (tmp_path / "det" / "anomaly_detector.pth").exists()
    assert not (Path(__file__).resolve().parent.parent / "PWNED").exists()
    assert chain_hashes(c) == before


# ------------------------------------------------------------------------------------- the plain command line
def test_plain_python_prints_the_same_line_and_debug_shows_the_traceback(tmp_path):
    argv = ["--data_path", tmp_path / "absent.npz", "--set", "device=cpu"]
    zygote = run_script(INFER, argv, tmp_path / "log")
    plain = run_python(INFER, argv)
    assert assert_one_line_error(plain, r"absent\.npz: scene file not found") == zygote.error_lines[0]
    debug = run_python(INFER, [*argv, "--debug"])
    assert debug.code != 0 and "Traceback" in debug.stderr and "DataError: " in debug.stderr


# ------------------------------------------------------------------------------------- outputs are never lost
def test_inference_never_overwrites_unless_asked(c: Chain, tmp_path):
    out = tmp_path / "out"
    assert run_script(INFER, c.inference_argv(c.scene, out), tmp_path / "log1").code == 0
    first = {p.name: sha256_file(p) for p in out.iterdir()}
    again = run_script(INFER, c.inference_argv(c.scene, out), tmp_path / "log2")
    assert_one_line_error(again, rf"{re.escape(str(out))} already holds an earlier run's anomaly_map\.npy, "
                                 r"head_maps\.npz, metrics\.json, anomaly_map\.png, detections\.csv, "
                                 r"detections\.geojson; pass --overwrite")
    assert {p.name: sha256_file(p) for p in out.iterdir()} == first
    assert run_script(INFER, [*c.inference_argv(c.scene, out), "--overwrite"], tmp_path / "log3").code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(first)  # no temporary file left behind


def test_main_anomaly_is_deterministic_and_refuses_before_retraining(c: Chain, tmp_path):
    """Same seed and config -> the same anomaly map, bit for bit (CPU); a second run into the same out_dir
    stops before training replaces the first run's detector checkpoint."""
    maps = []
    for run in ("a", "b"):
        argv = [*c.anomaly_argv(tmp_path / f"det_{run}"), "--out_dir", tmp_path / f"out_{run}"]
        result = run_script("main_anomaly.py", argv, tmp_path / f"log_{run}")
        assert result.code == 0, result.stderr[-2000:]
        maps.append(np.load(tmp_path / f"out_{run}" / "anomaly_map.npy"))
    np.testing.assert_array_equal(maps[0], maps[1])
    detector = tmp_path / "det_a" / "anomaly_detector.pth"
    kept = sha256_file(detector)
    again = run_script("main_anomaly.py", [*c.anomaly_argv(tmp_path / "det_a"), "--out_dir", tmp_path / "out_a"],
                       tmp_path / "log_again")
    assert_one_line_error(again, r"out_a already holds an earlier run's .*; pass --overwrite")
    assert sha256_file(detector) == kept
