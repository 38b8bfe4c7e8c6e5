"""The pre-training scene list `pretrain_datasets` (one `SceneEntry` per scene, checked by `check_scene_entries`),
and the same list from the command line: `--scenes DIR|GLOB|FILE|@LIST [...]` -> `pretrain_datasets`.

    overrides = scene_overrides(["../shared/data/had", "more/*.mat", "extra.hdr"], args.overrides)
    cfg = load_config(PretrainConfig, args.config, overrides)

Each argument is a folder (its scene files, not its subfolders), a glob pattern (the scene files it
matches), one scene file, or `@LIST`: a text file naming one folder, glob or file per line (blank lines and
`#` comments skipped; relative paths are relative to the list's folder). Scene files are those
`data.io.load_scene` reads: .npz, .npy, .mat, ENVI headers (.hdr; the data file beside a header is read
through it), GeoTIFF, EMIT .nc and PRISMA .he5. Folders and globs skip other files; a file named on its own
must be a scene file. Within a folder or glob, files come in name order. `scene_files` gives the same
expansion to `sspq-hsi detect` (sspq_hsi/detect.py), which scores each file it names.

Scene i (in the order given) becomes `{name: <file stem>, data_path: <path>, domain_id: i}`: one domain
per scene, as configs/pretrain_had.yaml and the benchmarks do, and `num_domains` is set to the number of
scenes (Stage 2 only; the tokenizer has no domains). These come before the user's `--set` overrides, so
`--set num_domains=20` still reserves spare domains; `--set pretrain_datasets=...` beside `--scenes` is an error.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import yaml

from data.io import LAYOUTS
from utils.errors import ConfigError

SCENE_SUFFIXES = (".npz", ".npy", ".mat", ".hdr", ".tif", ".tiff", ".nc", ".he5")  # the formats data.io.load_scene reads
GLOB_CHARS = "*?["


@dataclass
class SceneEntry:
    """One item of a config's `pretrain_datasets:` list (spec 3.1)."""

    name: str  # unique label, used in logs and in the encoder checkpoint's domain table
    data_path: str  # scene file for data.io.load_scene (.npz/.npy/.mat/.hdr or 'synthetic[:SEED]')
    domain_id: int  # index into the encoder's domain embedding, one per scene
    cube_key: str | None = None  # array name of the cube when the file's is not 'cube'
    gt_key: str | None = None  # array name of the gt when it is not found by name (or inside gt_path)
    gt_path: str | None = None  # a separate gt mask file: only evidence of the cube's layout here (labels unread)
    cube_layout: str = "auto"  # auto | hwb | bhw (data.io.load_scene)


def default_scenes() -> list[SceneEntry]:
    """The stage configs' default `pretrain_datasets`: the embedded synthetic scene alone."""
    return [SceneEntry(name="synthetic", data_path="synthetic", domain_id=0)]


def check_scene_entries(entries: Sequence[SceneEntry]) -> None:
    """ConfigError on an empty list, empty or duplicate names, duplicate or negative domain ids."""
    if not entries:
        raise ConfigError("pretrain_datasets is empty: list at least one scene (name, data_path, domain_id)")
    names: set[str] = set()
    domains: dict[int, str] = {}
    for i, entry in enumerate(entries):
        where = f"pretrain_datasets[{i}]"
        if not entry.name:
            raise ConfigError(f"{where}: name is empty")
        if not entry.data_path:
            raise ConfigError(f"{where} ({entry.name}): data_path is empty")
        if entry.name in names:
            raise ConfigError(f"{where}: duplicate name '{entry.name}'")
        if entry.domain_id < 0:
            raise ConfigError(f"{where} ({entry.name}): domain_id must be >= 0, got {entry.domain_id}")
        if entry.cube_layout not in LAYOUTS:
            raise ConfigError(f"{where} ({entry.name}): cube_layout must be one of {', '.join(LAYOUTS)}, got "
                              f"'{entry.cube_layout}'")
        if entry.domain_id in domains:
            raise ConfigError(f"{where} ({entry.name}): domain_id {entry.domain_id} is already used by "
                              f"'{domains[entry.domain_id]}'")
        names.add(entry.name)
        domains[entry.domain_id] = entry.name


def _list_items(spec: str, option: str) -> list[str]:
    """The folders, globs and files a `@LIST` argument names, relative paths resolved against the list's folder."""
    path = Path(spec[1:])
    if not path.is_file():
        raise ConfigError(f"{option} {spec}: no such list file (@LIST names a text file of scene paths)")
    lines = [line.strip() for line in path.read_text().splitlines()]
    items = [line for line in lines if line and not line.startswith("#")]
    if not items:
        raise ConfigError(f"{option} {spec}: the list names no scene (one folder, glob or file per line)")
    return [str(path.parent / item) for item in items]  # an absolute item stays absolute


def _scene_files(spec: str, option: str) -> list[Path]:
    """The scene files one argument names (module doc); ConfigError when it names none."""
    if spec.startswith("@"):
        return [found for item in _list_items(spec, option) for found in _scene_files(item, option)]
    path = Path(spec)
    supported = ", ".join(SCENE_SUFFIXES)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES)
        if not found:
            raise ConfigError(f"{option} {spec}: the folder holds no scene file ({supported})")
        return found
    if any(char in spec for char in GLOB_CHARS):
        matches = sorted(Path(p) for p in glob.glob(spec))
        found = [p for p in matches if p.is_file() and p.suffix.lower() in SCENE_SUFFIXES]
        if not found:
            raise ConfigError(f"{option} {spec}: the pattern matches {len(matches)} path(s) but no scene file "
                              f"({supported})")
        return found
    if not path.is_file():
        raise ConfigError(f"{option} {spec}: no such file, folder or glob match")
    if path.suffix.lower() not in SCENE_SUFFIXES:
        raise ConfigError(f"{option} {spec}: '{path.suffix}' is not a scene format (supported: {supported})")
    return [path]


def scene_files(specs: list[str], option: str = "--scenes") -> list[Path]:
    """The scene files `specs` name, in the order given, each stem once (a scene's name is its stem); the errors
    name `option`, the command-line argument the specs came from."""
    if not specs:
        raise ConfigError(f"{option}: name at least one folder, glob or scene file")
    seen: dict[str, Path] = {}
    for spec in specs:
        for path in _scene_files(spec, option):
            if path.stem in seen and seen[path.stem].resolve() == path.resolve():
                raise ConfigError(f"{option}: {path} is named twice (as a file, in a folder, by a glob or a list); "
                                  f"name each scene once")
            if path.stem in seen:
                raise ConfigError(f"{option}: {seen[path.stem]} and {path} would both be the scene '{path.stem}' "
                                  f"(names are file stems and must be unique); rename or leave out one")
            seen[path.stem] = path
    return list(seen.values())


def scene_entries(specs: list[str]) -> list[dict]:
    """`pretrain_datasets` entries for the files `specs` name: name = stem, domain_id = index."""
    return [{"name": path.stem, "data_path": str(path), "domain_id": i} for i, path in enumerate(scene_files(specs))]


def scene_overrides(specs: list[str] | None, overrides: list[str], domains: bool = True) -> list[str]:
    """`overrides` with the `--scenes` list in front (pretrain_datasets, and num_domains when `domains`);
    `overrides` unchanged when no `--scenes` was given."""
    if specs is None:
        return list(overrides)
    clash = [o for o in overrides if o.split("=", 1)[0].strip() == "pretrain_datasets"]
    if clash:
        raise ConfigError("--scenes and --set pretrain_datasets=... both list the pre-training scenes; give one")
    entries = scene_entries(specs)
    flow = yaml.safe_dump(entries, default_flow_style=True, width=1 << 20).strip()
    return [f"pretrain_datasets={flow}", *([f"num_domains={len(entries)}"] if domains else []), *overrides]
