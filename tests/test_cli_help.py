"""Every script parses before torch loads: `--help` (defaults, an example, the files written), and the Stage 3
pre-flight refusals, run in a fresh interpreter that never imports torch or transformers (`-X importtime`)."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from anomaly.cli_args import export_parser, inference_parser, pipeline_parser as anomaly_pipeline, train_parser
from benchmarks.cli_args import batch_parser, benchmark_parser, merge_parser, scale_parser
from encoder.cli_args import pipeline_parser as pretrain_pipeline, pretrain_parser
from sspq_tokenizer.cli_args import tokenizer_parser
from utils.cli import script_parser
from utils.config import config_rows

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers")
SCRIPTS = {  # script -> its parser (the one the script imports as build_parser)
    "sspq_tokenizer/train_tokenizer.py": tokenizer_parser,
    "encoder/pretrain_mtp.py": pretrain_parser,
    "anomaly/train_anomaly.py": train_parser,
    "anomaly/inference.py": inference_parser,
    "anomaly/export_detector.py": export_parser,
    "main_pretrain.py": pretrain_pipeline,
    "main_anomaly.py": anomaly_pipeline,
    "benchmarks/run_benchmark.py": benchmark_parser,
    "benchmarks/merge_results.py": merge_parser,
    "benchmarks/scale_case.py": scale_parser,
    "benchmarks/batch_case.py": batch_parser,
}


def run_traced(argv: list[str], cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`python -X importtime argv` in `cwd`: the process and the top-level names of every module it imported."""
    out = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=cwd, capture_output=True, text=True,
                         timeout=120)
    imported = {m.group(1).split(".")[0] for m in re.finditer(r"^import time:.*\|\s*(\S+)$", out.stderr, re.M)}
    assert imported, "no -X importtime lines: the test cannot see the imports"
    return out, imported


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_imports_neither_torch_nor_transformers_and_shows_example_and_outputs(script):
    out, imported = run_traced([script, "--help"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert not imported & set(HEAVY), f"{script} --help imported {sorted(imported & set(HEAVY))}"
    text = out.stdout
    assert re.search(rf"^example:\n  python {re.escape(script)} ", text, re.M), text
    assert "\nwrites:\n  " in text


def test_module_form_parses_first_too():
    out, imported = run_traced(["-m", "anomaly.inference", "--help"])
    assert out.returncode == 0 and not imported & set(HEAVY)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_shows_every_default(script):
    parser = SCRIPTS[script]()
    text = " ".join(parser.format_help().split())  # the help text, unwrapped
    shown = [a for a in parser._actions if a.default not in (None, False, []) and a.dest != "help"]
    for action in shown:
        assert f"(default: {action.default})" in text, f"{script} {action.option_strings}: default not shown"


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_lists_the_config_keys_with_their_defaults_and_help(script):
    """Every key a script's --set (or --tokenizer_set) takes, with its dataclass default and help text."""
    parser = SCRIPTS[script]()
    text = " ".join(parser.format_help().split())
    for option, ref in parser.config_keys:
        module, name = ref.split(":")
        for key, type_name, default, help_text in config_rows(getattr(importlib.import_module(module), name)):
            shown = f"{key} ({type_name})" if default == "(see below)" else f"{key} ({type_name}, default: {default})"
            assert f"{shown} {' '.join(help_text.split())}" in text, f"{script} --help: {option} {key}"
    takes_set = any(a.dest == "overrides" or "--set" in a.option_strings for a in parser._actions)
    assert bool(parser.config_keys) == takes_set, f"{script}: --set without its config keys in --help"


def test_help_formatter_skips_what_has_no_default_to_show():
    parser = script_parser("d", "python x.py", {"out/": "files"})
    parser.add_argument("--n", type=int, default=0, help="a number")
    parser.add_argument("--name", default=None, help="a name")
    parser.add_argument("--items", action="append", default=[], help="items")
    text = " ".join(parser.format_help().split())
    assert "a number (default: 0)" in text and "a name --items" in text and "items example:" in text
    assert "show tracebacks instead of one-line errors --n" in text  # --debug: a flag, no "(default: False)"


def _earlier_run(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")


def test_main_anomaly_refuses_an_output_clash_before_torch_loads(tmp_path):
    """`air1.hdr` was scored into outputs/air1; `air1.mat` would land there too: refused at once."""
    (tmp_path / "air1.mat").write_bytes(b"not read: the refusal comes first")
    _earlier_run(tmp_path / "outputs" / "air1")
    out, imported = run_traced([str(ROOT / "main_anomaly.py"), "--config", str(ROOT / "configs/anomaly.yaml"),
                                "--data_path", "air1.mat"], cwd=tmp_path)
    assert out.returncode == 2 and not imported & set(HEAVY), out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1] == (f"error: {Path('outputs') / 'air1'} already holds an earlier run's "
                                                   f"metrics.json; pass --overwrite to replace them, or choose another "
                                                   f"--out_dir")
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("argv, message", [
    (["--data_path", "scene.npz", "--detector_ckpt", "det.pth", "--out_dir", "out"], "already holds an earlier run's"),
    (["--data_path", "scene.npz"], "no detector for scene 'scene' at "
                                   f"{Path('checkpoints/anomaly/scene/anomaly_detector.pth')}: train one with"),
    (["--data_path", "missing.npz", "--detector_ckpt", "det.pth"], "missing.npz: scene file not found"),
])
def test_inference_refuses_before_torch_loads(tmp_path, argv, message):
    (tmp_path / "scene.npz").write_bytes(b"not read")
    _earlier_run(tmp_path / "out")
    out, imported = run_traced([str(ROOT / "anomaly/inference.py"), "--config", str(ROOT / "configs/anomaly.yaml"),
                                *argv], cwd=tmp_path)
    assert out.returncode == 2 and not imported & set(HEAVY), out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, last
