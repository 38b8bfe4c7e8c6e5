"""The installable command: pyproject.toml names the `sspq-hsi` entry point, the packages and requirements.txt's
dependencies; `sspq-hsi` and its commands answer --help before torch loads; documented `sspq-hsi` lines use
options their command has; and a real `pip install -e .` into a fresh virtual environment gives a command that
scores a scene from another folder."""

import importlib
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from anomaly.cli_args import export_parser
from encoder.cli_args import pipeline_parser, release_parser
from sspq_hsi.detect import detect_parser
from test_cli_help import HEAVY, run_traced
from tests.test_inference import make_stage3_ckpts, scene_file

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PARSERS = {"detect": detect_parser, "pretrain": lambda: pipeline_parser(builtin_configs=True),
           "export detector": export_parser, "export release": release_parser}  # each command that parses options, by its words after `sspq-hsi`


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements(name: str) -> set[str]:
    lines = (ROOT / name).read_text().splitlines()
    return {line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()}


def test_the_entry_point_imports_and_every_listed_package_is_there():
    module, function = project()["project"]["scripts"]["sspq-hsi"].split(":")
    assert callable(getattr(importlib.import_module(module), function))
    tool = project()["tool"]["setuptools"]
    assert all((ROOT / package / "__init__.py").is_file() for package in tool["packages"])
    assert all((ROOT / f"{module}.py").is_file() for module in tool["py-modules"])
    # what the command and the stage scripts import: every top-level package but the tests' and the benchmarks'
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks"}
    assert set(tool["packages"]) == packages


def test_the_dependencies_are_the_requirements_files():
    meta = project()["project"]
    extras = meta["optional-dependencies"]
    assert set(meta["dependencies"]) | set(extras["cluster"]) == requirements("requirements.txt")
    assert set(extras["dev"]) == requirements("requirements-dev.txt")


@pytest.mark.parametrize("command", [[], ["detect"], ["pretrain"], ["export"], ["export", "detector"], ["export", "release"]],
                         ids=lambda c: " ".join(c) or "sspq-hsi")
def test_help_answers_before_torch_loads(command):
    out, imported = run_traced(["-m", "sspq_hsi", *command, "--help"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert not imported & set(HEAVY), f"sspq-hsi {' '.join(command)} --help imported {sorted(imported & set(HEAVY))}"
    if " ".join(command) in PARSERS:
        assert f"example:\n  sspq-hsi {' '.join(command)} " in out.stdout, out.stdout
    else:  # a list of commands
        assert "commands:\n" in out.stdout


def test_an_unknown_command_is_a_usage_error():
    out = subprocess.run([sys.executable, "-m", "sspq_hsi", "score"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "invalid choice: 'score'" in out.stderr


def documented_lines() -> list[tuple[str, list[str]]]:
    """(command, its words) for every `sspq-hsi ...` line of a bash block in the README and docs/."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                words = line.split("#", 1)[0].split()
                if words[:1] == ["sspq-hsi"]:
                    command = " ".join(words[1:3]) if " ".join(words[1:3]) in PARSERS else words[1]
                    found.append((command, words))
    return found


def test_documented_sspq_hsi_lines_use_options_their_command_has():
    lines = documented_lines()
    assert {command for command, _ in lines} >= {"detect", "pretrain"}, lines
    for command, words in lines:
        options = set(PARSERS[command]()._option_string_actions)
        used = {w.split("=", 1)[0] for w in words if w.startswith("--")}
        assert used <= options, f"`{' '.join(words)}`: sspq-hsi {command} has no {sorted(used - options)}"


@pytest.mark.slow
def test_pip_install_e_gives_a_command_that_scores_from_another_folder(tmp_path):
    """A fresh virtual environment whose packages come from this interpreter's site-packages (nothing downloaded),
    `pip install -e` of a copy of the tree, then `sspq-hsi detect` run from a folder that is not the tree."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT, tree, ignore=shutil.ignore_patterns(".venv", ".git", "checkpoints", "outputs", "results",
                                                              "__pycache__", ".pytest_cache", ".hypothesis"))
    env = tmp_path / "env"
    venv.create(env, with_pip=False)
    (site,) = (env / "lib").glob("python*/site-packages")
    (site / "base_packages.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")
    install = subprocess.run([env / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                              "--no-index", "-e", str(tree)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    encoder = make_stage3_ckpts(tmp_path / "ckpts") / "enc.pth"
    scene = scene_file(work / "scene.npz")
    run = subprocess.run([env / "bin" / "sspq-hsi", "detect", scene, "--encoder_ckpt", str(encoder),
                          "--set", "local_rx.inner=3", "--set", "local_rx.outer=5", "--set", "device=cpu"],
                         cwd=work, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (work / "outputs" / "scene" / "metrics.json").is_file()
    assert (work / "outputs" / "summary.csv").read_text().splitlines()[1].startswith("scene,ok,")
    assert f"{tree}" in subprocess.run([env / "bin" / "python", "-c", "import sspq_hsi; print(sspq_hsi.__file__)"],
                                       cwd=work, capture_output=True, text=True).stdout
