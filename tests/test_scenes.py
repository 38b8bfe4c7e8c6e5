"""The pre-training scene list (data/scenes.py): its entries' checks, and `--scenes DIR|GLOB|FILE|@LIST [...]`
(the same expansion names the scenes of `sspq-hsi detect`)."""

import numpy as np
import pytest

from data.io import load_scene
from data.scenes import SCENE_SUFFIXES, SceneEntry, check_scene_entries, scene_entries, scene_files, scene_overrides
from encoder.config import PretrainConfig
from sspq_tokenizer.config import TokenizerConfig
from utils.config import load_config
from utils.errors import ConfigError, DataError


@pytest.fixture
def folder(tmp_path):
    """b.npz, a.npy, c.hdr (+ its data file c.img), notes.txt and a subfolder with one more scene."""
    root = tmp_path / "scenes"
    (root / "sub").mkdir(parents=True)
    for name in ("b.npz", "a.npy", "c.hdr", "c.img", "notes.txt", "sub/d.mat"):
        (root / name).write_bytes(b"")
    return root


def test_a_folder_gives_its_scene_files_in_name_order_one_domain_each(folder):
    entries = scene_entries([str(folder)])
    assert entries == [{"name": "a", "data_path": str(folder / "a.npy"), "domain_id": 0},
                       {"name": "b", "data_path": str(folder / "b.npz"), "domain_id": 1},
                       {"name": "c", "data_path": str(folder / "c.hdr"), "domain_id": 2}]  # not c.img, notes, sub/


def test_globs_and_files_keep_the_order_given(folder):
    entries = scene_entries([str(folder / "sub" / "d.mat"), str(folder / "*.np?")])
    assert [(e["name"], e["domain_id"]) for e in entries] == [("d", 0), ("a", 1), ("b", 2)]


@pytest.mark.parametrize("spec, message", [
    ("empty", r"--scenes .*empty: the folder holds no scene file \(.npz, .npy, .mat, .hdr, .tif, .tiff, .nc, .he5\)"),
    ("scenes/*.jpg", r"--scenes .*\*.jpg: the pattern matches 0 path\(s\) but no scene file"),
    ("scenes/notes.*", r"the pattern matches 1 path\(s\) but no scene file"),
    ("scenes/notes.txt", r"--scenes .*notes.txt: '.txt' is not a scene format \(supported: .npz, .npy, .mat, .hdr, .tif, .tiff, .nc, .he5\)"),
    ("missing.npz", r"--scenes .*missing.npz: no such file, folder or glob match"),
])
def test_what_names_no_scene_is_an_error_that_says_so(folder, spec, message):
    (folder.parent / "empty").mkdir()
    with pytest.raises(ConfigError, match=message):
        scene_entries([str(folder.parent / spec)])


def test_two_files_with_one_stem_are_refused(folder):
    (folder / "a.mat").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"a.mat and .*a.npy would both be the scene 'a'"):
        scene_entries([str(folder / "a.mat"), str(folder / "*.np?")])
    with pytest.raises(ConfigError, match=r"a.npy is named twice"):
        scene_entries([str(folder / "a.npy"), str(folder / "*.npy")])


def test_a_list_file_names_folders_globs_and_files_relative_to_itself(folder, tmp_path, monkeypatch):
    (folder / "campaign.txt").write_text("# flight lines\nsub/d.mat\n\n  *.np?  \n" + f"{folder / 'c.hdr'}\n")
    monkeypatch.chdir(tmp_path)  # relative lines are read against the list's folder, not the working one
    assert scene_files([f"@{folder / 'campaign.txt'}"]) == [folder / "sub" / "d.mat", folder / "a.npy",
                                                            folder / "b.npz", folder / "c.hdr"]


@pytest.mark.parametrize("text, message", [
    (None, r"detect @.*nope.txt: no such list file"),
    ("# nothing\n\n", r"detect @.*nope.txt: the list names no scene"),
    ("b.npz\nmissing.npz\n", r"detect .*missing.npz: no such file, folder or glob match"),
    ("b.npz\n*.npz\n", r"detect: .*b.npz is named twice"),
])
def test_a_bad_list_is_an_error_naming_the_option_and_the_list(folder, text, message):
    if text is not None:
        (folder / "nope.txt").write_text(text)
    with pytest.raises(ConfigError, match=message):
        scene_files([f"@{folder / 'nope.txt'}"], option="detect")


def test_the_suffixes_are_the_ones_load_scene_reads(tmp_path):
    for suffix in SCENE_SUFFIXES:  # an empty file of each: a read error, not "unknown scene format"
        (tmp_path / f"x{suffix}").write_bytes(b"")
        with pytest.raises(Exception) as err:
            load_scene(tmp_path / f"x{suffix}")
        assert "unknown scene format" not in str(err.value)
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="unknown scene format"):
        load_scene(tmp_path / "x.jpg")


def test_overrides_replace_the_configs_list_and_size_the_domain_table(tmp_path):
    for name in ("s1", "s2", "s3"):
        np.savez(tmp_path / f"{name}.npz", cube=np.zeros((4, 4, 3), np.float32))
    overrides = scene_overrides([str(tmp_path)], ["pretrain_epochs=2"])
    cfg = load_config(PretrainConfig, "configs/pretrain_had.yaml", overrides)
    assert [(e.name, e.data_path, e.domain_id) for e in cfg.pretrain_datasets] == [
        (f"s{i + 1}", str(tmp_path / f"s{i + 1}.npz"), i) for i in range(3)]
    assert cfg.num_domains == 3 and cfg.pretrain_epochs == 2
    spare = load_config(PretrainConfig, "configs/pretrain.yaml", scene_overrides([str(tmp_path)], ["num_domains=8"]))
    assert spare.num_domains == 8  # the user's --set comes after --scenes
    tok = load_config(TokenizerConfig, "configs/tokenizer.yaml", scene_overrides([str(tmp_path)], [], domains=False))
    assert [e.name for e in tok.pretrain_datasets] == ["s1", "s2", "s3"]
    assert scene_overrides(None, ["seed=1"]) == ["seed=1"]


def test_scenes_and_a_listed_pretrain_datasets_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="--scenes and --set pretrain_datasets"):
        scene_overrides([str(tmp_path)], ["pretrain_datasets=[]"])


def test_scene_entries_checks():
    good = [SceneEntry("a", "a.npz", 0), SceneEntry("b", "synthetic:1", 1, cube_key="data")]
    check_scene_entries(good)
    bad = {
        "empty": ([], "empty"),
        "dup name": ([SceneEntry("a", "x.npz", 0), SceneEntry("a", "y.npz", 1)], "duplicate name 'a'"),
        "dup domain": ([SceneEntry("a", "x.npz", 0), SceneEntry("b", "y.npz", 0)], "already used by 'a'"),
        "negative": ([SceneEntry("a", "x.npz", -1)], ">= 0"),
        "no path": ([SceneEntry("a", "", 0)], "data_path is empty"),
        "layout": ([SceneEntry("a", "x.npy", 0, cube_layout="hbw")], r"\(a\): cube_layout must be one of auto, hwb"),
    }
    for entries, message in bad.values():
        with pytest.raises(ConfigError, match=message):
            check_scene_entries(entries)
